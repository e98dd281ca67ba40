"""users honours every consumer's pact: each committed file in contracts/pacts/ (written by the
consumer's own contract tests) is replayed by the Pact verifier over real HTTP against the real
users service (gunicorn on the test database), so a change here that breaks feed or notifications
fails this suite even though their code did not change.

Provider states are set up through users' real services (registration, follows) and torn down
after each interaction. Requests carry a valid service credential minted for the consumer named in
the pact (the verifier replaces the pact's example Authorization header), except the interactions
given "the caller's service credential is not accepted": those are replayed with the credential as
the pact has it, an example whose signature users cannot verify, and must be refused.

Besides the working tree's pacts, the pacts of the consumer versions recorded as deployed
(contracts/environments.json; each read from its release tag) are verified too: a change to users
that breaks a feed release still running in production fails here. What was verified is recorded
for users' current version in contracts/verifications.json (contracts/broker.py; PACT_UPDATE=1
writes it, otherwise the committed record must already say so), which can-i-deploy reads."""

import json
import logging
import os
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import broker
import pytest
from accounts import services as account_services
from accounts.models import User
from django.db import connection, connections
from follows import services as follow_services
from pact import Verifier

from shared.testing import service_token

ROOT = Path(__file__).resolve().parents[4]
PACT_DIR = ROOT / "contracts" / "pacts"
PACTS = sorted(PACT_DIR.glob("*-users.json"))
# (label, pact text, sha256): the working tree's pacts and those of the deployed consumer versions
CONTRACTS = [
    (f"{c.consumer}-current", (ROOT / c.path).read_text(), c.sha256)
    for c in broker.contracts_in_tree(ROOT)
    if c.provider == "users" and c.path.startswith("contracts/pacts/")  # HTTP; events: test_event_producer.py
]
CONTRACTS += [
    (f"{c.consumer}-{version}-{environment}", text, c.sha256)
    for environment, version, c, text in broker.deployed_contracts_for("users", ROOT)
    if c.path.startswith("contracts/pacts/")
]
VERIFIED: dict[str, set[str]] = {}  # consumer -> sha256 of each pact verified in this run
PASSWORD = "correct horse battery staple"
REFUSED = "the caller's service credential is not accepted"
log = logging.getLogger(__name__)


class ProviderStates:
    """The states consumers name in their pacts (contracts/README.md lists them). Each setup makes
    the state through users' services; teardown removes the users it made."""

    def __init__(self):
        self.created: list[int] = []

    def change(self, state: str, action: str, parameters: dict) -> None:
        handler = {
            "users exist": self.users_exist,
            "no users have these ids": self.no_users_with_ids,
            "a user has followers": self.user_has_followers,
            REFUSED: self.credential_not_accepted,
        }[state]
        handler(action, parameters)

    def _register(self, user_id: int, username: str) -> User:
        """A registered user with this id (the id sequence is moved so that registration assigns it)."""
        with connection.cursor() as cursor:
            cursor.execute("SELECT setval(pg_get_serial_sequence(%s, 'id'), %s, false)", [User._meta.db_table, user_id])
        user, _ = account_services.user_register(username=username, email=f"{username}@example.com", password=PASSWORD)
        assert user.id == user_id, (user.id, user_id)
        self.created.append(user.id)
        return user

    def _forget_created(self) -> None:
        User.objects.filter(id__in=self.created).delete()  # their follows and refresh tokens cascade
        self.created.clear()

    def users_exist(self, action: str, parameters: dict) -> None:
        if action == "setup":
            for user in parameters["users"]:
                self._register(user["id"], user["username"])
        else:
            self._forget_created()

    def no_users_with_ids(self, action: str, parameters: dict) -> None:
        if action == "setup":
            User.objects.filter(id__in=parameters["ids"]).delete()

    def user_has_followers(self, action: str, parameters: dict) -> None:
        if action == "setup":
            followee = self._register(parameters["user_id"], f"user{parameters['user_id']}")
            for follower_id in parameters["follower_ids"]:
                self._register(follower_id, f"user{follower_id}")
                assert follow_services.follow_create(follower_id=follower_id, followee_username=followee.username)
        else:
            self._forget_created()

    def credential_not_accepted(self, action: str, parameters: dict) -> None:
        """Nothing to make: these interactions are replayed with the pact's own (unverifiable) credential."""


class _StateChangeRequest(BaseHTTPRequestHandler):
    """The verifier's provider-state callback: POST {"state", "action", "params"} before and after each interaction."""

    server: "_StateServer"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        try:
            self.server.states.change(body["state"], body.get("action", "setup"), body.get("params") or {})
            self.send_response(200)
        except Exception as exc:  # the verifier reports the interaction as failed; the log says why
            log.exception("provider state %r (%s) failed", body.get("state"), body.get("action"))
            self.server.errors.append(f"{body.get('state')!r} {body.get('action')}: {exc!r}")
            self.send_response(500)
        finally:
            connections.close_all()  # this thread's database connection
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _StateServer(HTTPServer):
    def __init__(self, states: ProviderStates):
        super().__init__(("127.0.0.1", 0), _StateChangeRequest)
        self.states = states
        self.errors: list[str] = []


@contextmanager
def state_server(states: ProviderStates):
    """An HTTP endpoint for the verifier's state changes (pact-python's built-in one leaves its socket open)."""
    server = _StateServer(states)
    thread = threading.Thread(target=server.serve_forever, name="pact-provider-states", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _split(pact: dict, directory: Path) -> tuple[Path | None, Path | None]:
    """(interactions replayed with a valid credential, those replayed with the pact's), as pact files."""
    refused = [i for i in pact["interactions"] if any(s["name"] == REFUSED for s in i.get("providerStates", []))]
    accepted = [i for i in pact["interactions"] if i not in refused]
    paths = []
    for name, interactions in (("accepted", accepted), ("refused", refused)):
        path = directory / f"{name}.json"
        path.write_text(json.dumps({**pact, "interactions": interactions}))
        paths.append(path if interactions else None)
    return paths[0], paths[1]


def _verify(users_url: str, source: Path, states: ProviderStates, token: str | None) -> None:
    with state_server(states) as server:
        verifier = (
            Verifier("users", host="127.0.0.1")
            .add_transport(url=users_url)
            .add_source(source)
            .state_handler(f"http://127.0.0.1:{server.server_port}/_pact/state", teardown=True, body=True)
            .set_coloured_output(enabled=False)
        )
        if token is not None:
            verifier.add_custom_header("Authorization", f"Bearer {token}")
        try:
            verifier.verify()
        except RuntimeError:
            pytest.fail(f"users does not honour the pact (state errors: {server.errors}):\n{verifier.output(strip_ansi=True)}")
    assert not server.errors, server.errors
    assert verifier.results["result"] is True, verifier.results


def test_pacts_are_committed():
    assert PACTS, f"no pact files in {PACT_DIR}"
    for path in PACTS:
        pact = json.loads(path.read_text())
        assert pact["provider"]["name"] == "users", path
        assert path.name == f"{pact['consumer']['name']}-users.json", path
        assert pact["interactions"], path


@pytest.mark.django_db(transaction=True)  # the states are committed, so the users process sees them
@pytest.mark.parametrize(("label", "text", "sha"), CONTRACTS, ids=[c[0] for c in CONTRACTS])
def test_users_honours_consumer_pact(label, text, sha, users_url, tmp_path):
    pact = json.loads(text)
    accepted, refused = _split(pact, tmp_path)
    states = ProviderStates()
    if accepted:
        token = service_token(pact["consumer"]["name"], "users")
        _verify(users_url, accepted, states, token)
    if refused:
        _verify(users_url, refused, states, None)
    assert not states.created, "a provider state was not torn down"
    VERIFIED.setdefault(pact["consumer"]["name"], set()).add(sha)


def test_verification_results_are_recorded():
    """The broker's record (contracts/verifications.json) says that users' current version honours
    every pact verified above; PACT_UPDATE=1 adds what is missing."""
    expected: dict[str, set[str]] = {}
    for _label, text, sha in CONTRACTS:
        expected.setdefault(json.loads(text)["consumer"]["name"], set()).add(sha)
    assert expected == VERIFIED, "run the verifications in the same session (-k contract): only verified pacts are recorded"
    if os.environ.get("PACT_UPDATE") == "1":
        broker.record_verified("users", VERIFIED, ROOT)
    broker.assert_recorded("users", VERIFIED, ROOT)
