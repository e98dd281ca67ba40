"""Consumer-driven contracts for events (Pact V4 asynchronous messages): the helpers both sides use.

A consumer's test suite declares, per producer, the events it consumes and the fields of each that
its handlers rely on (`expect`), writes them as contracts/messages/<consumer>-<producer>.json
(`message_pact` + pact_files.assert_committed), and feeds every message of that pact to its real
handlers (inbox + handlers, as its worker does). The producer's suite verifies every
contracts/messages/*-<producer>.json against the envelopes its real code builds (`verify_producer`):
the service function that makes the change, its payload builder, the outbox row and the relay's
envelope. Interactions are named "<type> v<version>"; the producer maps each name to a scenario.

Imported by the services' tests (their conftest or the module puts this folder on sys.path); needs
pact-python, and pytest with pytest-django for `ConsumerContract`, the consumers' tests.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from pact import Pact, Verifier, match
from pact_files import MESSAGE_DIR, assert_committed

os.environ.setdefault("PACT_DO_NOT_TRACK", "true")  # the FFI reports usage unless told not to

ID = r"^[0-9]{1,19}$"  # ids are decimal strings (docs/events.md)
JSON = "application/json"
NAME = re.compile(r"^(?P<type>[a-z_]+\.[a-z_]+) v(?P<version>[0-9]+)$")
NAMESPACE = uuid.UUID("6f1d3c1e-9b7a-4c55-8f0e-2f6f3b8e6a10")


def id_(example: int | str) -> object:
    """An id field: any decimal string (the example is only an example)."""
    return match.regex(str(example), regex=ID)


def ids(*examples: int | str) -> object:
    """A list of ids, each a decimal string (the producer's verification uses a non-empty example)."""
    return match.each_like(id_(examples[0] if examples else 1))


def text(example: str) -> object:
    return match.str(example)


def interaction_name(type_: str, version: int) -> str:
    return f"{type_} v{version}"


def parse_name(name: str) -> tuple[str, int]:
    found = NAME.match(name)
    if not found:
        raise KeyError(f"not an event interaction name: {name!r} (expected '<type> v<version>')")
    return found["type"], int(found["version"])


def message_pact(consumer: str, producer: str) -> Pact:
    return Pact(consumer, producer).with_specification("V4")


def expect(pact: Pact, type_: str, version: int, data: dict) -> None:
    """The consumer relies on an event of `type_`/`version` whose data has (at least) these fields.
    The envelope's keys are what shared.events.envelope_from requires; extra fields anywhere are
    allowed (a consumer ignores what it does not know)."""
    name = interaction_name(type_, version)
    example_id = str(uuid.uuid5(NAMESPACE, f"{pact.consumer}:{pact.provider}:{name}"))  # stable pact files
    (
        pact.upon_receiving(name, "Async").with_body(
            {
                "id": match.uuid(example_id),
                "type": type_,
                "version": match.int(version, min=version, max=version),
                "occurred_at": match.regex(
                    "2026-01-01T12:00:00.123456Z", regex=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|\+00:00)$"
                ),
                "producer": pact.provider,
                "data": data,
            },
            content_type=JSON,
        )
    )


def examples(pact: Pact) -> dict[str, dict]:
    """The example message of every interaction, by name (what the consumer's handlers are fed)."""
    found: dict[str, dict] = {}
    names = [message.description for message in pact.interactions("Async")]
    bodies: list[dict] = []
    pact.verify(lambda body, _metadata: bodies.append(json.loads(body)), "Async")
    for name, body in zip(names, bodies, strict=True):
        found[name] = body
    return found


def with_unknown_fields(body: dict) -> dict:
    """The example as a later, compatible producer might send it: a new id, fields added to the
    envelope and to `data` (additive changes within a version, docs/events.md#evolving-an-event)."""
    extended = json.loads(json.dumps(body))
    extended["id"] = str(uuid.uuid4())
    extended["trace"] = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    extended["data"]["added_later"] = {"any": ["shape"], "n": 1}
    return extended


def oldest_versions(pairs) -> dict[str, int]:
    """{type: the lowest version declared} from (type, version) pairs."""
    oldest: dict[str, int] = {}
    for type_, version in pairs:
        oldest[type_] = min(version, oldest.get(type_, version))
    return oldest


def sources(producer: str) -> list[Path]:
    """Every committed message pact whose provider is `producer`."""
    found = []
    for path in sorted(MESSAGE_DIR.glob("*.json")):
        if json.loads(path.read_text())["provider"]["name"] == producer:
            found.append(path)
    return found


def deployed_sources(producer: str) -> list[tuple[str, str]]:
    """(label, pact text) of the message pact of each consumer recorded as deployed
    (contracts/environments.json), as committed at that consumer's release: the producer must keep
    meeting it besides the working tree's (broker.deployed_contracts_for, as users' HTTP
    verification does)."""
    import broker

    return [
        (f"{c.consumer}-{version}-{environment}", text)
        for environment, version, c, text in broker.deployed_contracts_for(producer)
        if c.path.startswith("contracts/messages/")
    ]


def verify_producer(
    producer: str,
    scenarios: dict[tuple[str, int], Callable[[], dict]],
    *,
    deployed: list[tuple[str, str]] | None = None,
) -> list[str]:
    """Replay every consumer's message pact, the working tree's and the deployed consumers' at their
    release (`deployed`, default `deployed_sources(producer)`), against envelopes made by
    `scenarios[(type, version)]()` (the producer's real code). Envelopes are built up front, in the
    caller's thread and database transaction; the verifier's message server only hands them out.
    Returns the interaction names verified; raises AssertionError with the verifier's report if any
    message does not match."""
    texts = [path.read_text() for path in sources(producer)]
    texts += [text for _, text in (deployed_sources(producer) if deployed is None else deployed)]
    if not texts:
        return []
    wanted = sorted({m["description"] for text in texts for m in json.loads(text)["interactions"]})
    messages: dict[str, dict] = {}
    for name in wanted:
        key = parse_name(name)
        if key not in scenarios:
            raise AssertionError(f"a consumer expects {name!r} from {producer}, which has no scenario producing it")
        messages[name] = {"contents": json.dumps(scenarios[key]()).encode(), "metadata": None, "content_type": JSON}
    verifier = Verifier(producer).message_handler(messages)
    with tempfile.TemporaryDirectory(prefix="message-pacts-") as folder:
        for index, text in enumerate(texts):
            path = Path(folder) / f"{index}.json"
            path.write_text(text)
            verifier.add_source(path)
        try:
            verifier.verify()
        except Exception as exc:  # the FFI's error says only that it failed; its output says what
            raise AssertionError(
                f"{producer} does not meet its consumers' message contracts:\n{verifier.output(strip_ansi=True)}"
            ) from exc
        finally:
            # pact-python 4.2 shuts its message server down without closing the listening socket
            server = getattr(verifier._message_producer, "_server", None)
            if server is not None:
                server.server_close()
    return wanted


def consumers_table() -> str:
    """docs/events.md's "who consumes what" table, from the committed message pacts: per event and
    consumer, the `data` fields its contract lists (a test keeps the document identical)."""
    from shared.events.catalogue import VERSIONS

    fields: dict[tuple[str, str], list[str]] = {}
    consumers: set[str] = set()
    for path in sorted(MESSAGE_DIR.glob("*.json")):
        pact = json.loads(path.read_text())
        consumer = pact["consumer"]["name"]
        consumers.add(consumer)
        for interaction in pact["interactions"]:
            fields[(interaction["description"], consumer)] = sorted(interaction["contents"]["content"]["data"])
    names = sorted(consumers)
    lines = ["| event | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for spec in VERSIONS.values():
        name = interaction_name(spec.type, spec.version)
        cells = [", ".join(f"`{f}`" for f in fields.get((name, c), [])) for c in names]
        lines.append(f"| `{spec.type}` v{spec.version} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def record_producer_verification(producer: str) -> None:
    """After `verify_producer` passed: the broker's record (contracts/verifications.json) must say that
    the producer's current version verified each consumer's message pact, the working tree's and the
    deployed consumers' (as for HTTP pacts: contracts/broker.py; PACT_UPDATE=1 adds what is missing),
    so can-i-deploy covers events too."""
    import broker

    verified: dict[str, set[str]] = {}
    for text in [path.read_text() for path in sources(producer)] + [text for _, text in deployed_sources(producer)]:
        data = json.loads(text)
        verified.setdefault(data["consumer"]["name"], set()).add(broker.contract_sha(data))
    if os.environ.get("PACT_UPDATE") == "1":
        broker.record_verified(producer, verified)
    broker.assert_recorded(producer, verified)


class ConsumerContract:
    """A consumer's side of its message contracts, as pytest tests. The consumer's suite subclasses it
    (`class TestEventContracts(ConsumerContract)`) with CONSUMER and EXPECTATIONS, per producer the
    (type, version, the fields its handlers read) it relies on; the tests keep the committed pact
    files exactly that, feed every message to the real handlers (inbox + handlers, as the worker runs
    them), and check that the contracts cover every subscription, that unknown fields are ignored and
    that the oldest declared version of each event is handled (docs/events.md#evolving-an-event)."""

    CONSUMER: str
    EXPECTATIONS: dict[str, list[tuple[str, int, dict]]]

    def build(self, producer: str) -> Pact:
        pact = message_pact(self.CONSUMER, producer)
        for type_, version, data in self.EXPECTATIONS[producer]:
            expect(pact, type_, version, data)
        return pact

    @pytest.fixture
    def handle(self, django_capture_on_commit_callbacks):
        """The worker's path for one message body: inbox + handlers in one transaction, commit hooks run."""
        from django.utils import timezone

        from shared.events.inbox import dispatch

        def run(body) -> bool:
            envelope = json.loads(body) if isinstance(body, str | bytes) else body
            # the contract takes any UTC time; the example's fixed date is outside the tables' partitions
            envelope["occurred_at"] = timezone.now().isoformat()
            with django_capture_on_commit_callbacks(execute=True):
                applied = dispatch(envelope)
            assert applied, f"{envelope['type']} was not applied"
            return applied

        return run

    def test_committed_message_pacts_are_current(self):
        for producer in sorted(self.EXPECTATIONS):
            assert_committed(self.build(producer), MESSAGE_DIR)

    def test_the_handlers_accept_every_message_of_the_contract(self, handle):
        from shared.events.models import InboxEvent

        for producer in sorted(self.EXPECTATIONS):
            before = InboxEvent.objects.count()
            self.build(producer).verify(lambda body, _metadata: handle(body), "Async")
            assert InboxEvent.objects.count() - before == len(self.EXPECTATIONS[producer]), producer

    def test_every_subscription_has_a_contract(self):
        """What the handlers declare (the subscriptions the service registers) is what the contracts cover."""
        from shared.events.inbox import registered

        covered = {(type_, version) for items in self.EXPECTATIONS.values() for type_, version, _ in items}
        assert covered == registered()

    def test_unknown_fields_are_ignored(self, handle):
        """A producer may add fields within a version, in the envelope and in `data`: the handlers take
        what they know and apply the event."""
        for producer in self.EXPECTATIONS:
            for body in examples(self.build(producer)).values():
                handle(with_unknown_fields(body))

    def test_the_oldest_declared_version_of_each_event_is_handled(self, handle):
        from shared.events.inbox import registered

        bodies = {name: body for producer in self.EXPECTATIONS for name, body in examples(self.build(producer)).items()}
        for type_, version in sorted(oldest_versions(registered()).items()):
            body = bodies[f"{type_} v{version}"]
            assert body["version"] == version
            handle(body)
