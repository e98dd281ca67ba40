"""Consumer-owned subscriptions: which service's queue receives which event types and versions.

A consumer declares what it handles in its own code (`@handler("post.created", version=1)` in an
app's events.py); the producer knows nothing about it. The declarations reach the producers
through a registry in the broker Redis, one hash:

    HSET events:subscriptions "<consumer> <type> <version>" <first registration, epoch seconds>

* Written by the consumer: `manage.py migrate` (post_migrate, the deploy step that runs before the
  new release's processes start) and every Celery worker at start-up (`worker_ready`) add the
  service's declared subscriptions (HSETNX: adding only, the first registration time is kept).
  Neither ever removes a field, so a rolling deploy (old and new replicas writing in any order)
  cannot flap a subscription on and off.
* Read by the producer's relay at every batch (one HGETALL, after it has claimed the rows), so an
  event committed after a consumer registered is routed to it without restarting anything; by the
  relay's redelivery and by pruning (which ledger keys to look at).
* Removed deliberately by an operator: `manage.py events_subscriptions remove <consumer>
  [--type T] [--purge-queue]` deletes the fields, drops that consumer's backlog from the ack ledger
  (so the producers' outbox rows can be pruned) and, with --purge-queue, its queued messages.
  Nothing expires on its own: a registered consumer that is down keeps receiving (its queue and
  ledger entries wait for it), however long.

An event committed while no consumer is registered for its type goes to nobody (it is marked sent;
the outbox keeps it for EVENTS_OUTBOX_RETENTION_HOURS, so it can be re-published by hand).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger("shared.events")

REGISTRY_KEY = "events:subscriptions"


@dataclass(frozen=True, order=True)
class Subscription:
    consumer: str
    type: str
    version: int

    @property
    def field(self) -> str:
        return f"{self.consumer} {self.type} {self.version}"

    @classmethod
    def parse(cls, field: str | bytes) -> Subscription | None:
        text = field.decode() if isinstance(field, bytes) else field
        parts = text.split(" ")
        if len(parts) != 3 or not parts[2].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]))


class Routes:
    """A snapshot of the registry: who receives (type, version)."""

    def __init__(self, subscriptions: Iterable[Subscription]):
        self.subscriptions = sorted(set(subscriptions))
        self._by_event: dict[tuple[str, int], list[str]] = {}
        for sub in self.subscriptions:
            self._by_event.setdefault((sub.type, sub.version), []).append(sub.consumer)

    def consumers(self, type_: str, version: int) -> list[str]:
        return self._by_event.get((type_, version), [])

    def subscribes(self, consumer: str, type_: str, version: int) -> bool:
        return consumer in self._by_event.get((type_, version), ())

    def consumers_of_types(self, types: Iterable[str]) -> list[str]:
        wanted = set(types)
        return sorted({sub.consumer for sub in self.subscriptions if sub.type in wanted})


def declared() -> list[tuple[str, int]]:
    """The (type, version) pairs this process's handlers declare (its apps' events.py, imported at startup)."""
    from shared.events.inbox import registered

    return sorted(registered())


def read(client) -> Routes:
    fields = client.hgetall(REGISTRY_KEY)
    return Routes(sub for sub in map(Subscription.parse, fields) if sub is not None)


def register(client, consumer: str, pairs: Iterable[tuple[str, int]] | None = None) -> list[Subscription]:
    """Add the consumer's subscriptions (never removes one); returns those that were new."""
    subs = sorted({Subscription(consumer, type_, version) for type_, version in (declared() if pairs is None else pairs)})
    if not subs:
        return []
    stamp = f"{time.time():.3f}"
    pipe = client.pipeline(transaction=False)
    for sub in subs:
        pipe.hsetnx(REGISTRY_KEY, sub.field, stamp)
    added = [sub for sub, new in zip(subs, pipe.execute(), strict=True) if new]
    if added:
        logger.info(
            "event subscriptions registered",
            extra={"consumer": consumer, "subscriptions": [f"{s.type} v{s.version}" for s in added]},
        )
    return added


def stale(routes: Routes, consumer: str, pairs: Iterable[tuple[str, int]] | None = None) -> list[Subscription]:
    """Subscriptions the registry holds for `consumer` that its code no longer declares."""
    current = {(t, v) for t, v in (declared() if pairs is None else pairs)}
    return [sub for sub in routes.subscriptions if sub.consumer == consumer and (sub.type, sub.version) not in current]


def register_service(broker_url: str, consumer: str) -> None:
    """What a worker start and `migrate` do: add this service's declared subscriptions and warn about
    registered ones its code no longer handles (they stay until an operator removes them)."""
    from shared.events import ledger

    client = ledger.client(broker_url)
    register(client, consumer)
    leftover = stale(read(client), consumer)
    if leftover:
        logger.warning(
            "registered event subscriptions this release does not handle: remove them with "
            "`manage.py events_subscriptions remove` once no replica needs them",
            extra={"consumer": consumer, "subscriptions": [f"{s.type} v{s.version}" for s in leftover]},
        )


@dataclass
class Removal:
    subscriptions: list[Subscription]
    ledger_entries: int
    queued_messages: int


def remove(client, consumer: str, *, types: Iterable[str] = (), purge_queue: bool = False) -> Removal:
    """An operator removes a consumer (every subscription, or only those of `types`): the relays stop
    routing to it at their next batch, its pending entries leave the ack ledger (its backlog is
    dropped: the outbox rows can be pruned), and with `purge_queue` its queue is emptied too
    (every message, event or not: only for a consumer that is gone for good)."""
    from shared.events import ledger
    from shared.events.backlog import queue_keys

    only = set(types)
    routes = read(client)
    gone = [sub for sub in routes.subscriptions if sub.consumer == consumer and (not only or sub.type in only)]
    if gone:
        client.hdel(REGISTRY_KEY, *[sub.field for sub in gone])
    dropped = 0
    if not only:  # with types, the relays drop those pending ids at their next redelivery check
        for key in client.scan_iter(match=ledger.pending_key(consumer, "*"), count=500):
            dropped += client.zcard(key)
            client.delete(key)
    queued = 0
    if purge_queue:
        keys = queue_keys(consumer)
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        queued = int(sum(pipe.execute()))
        client.delete(*keys)
    logger.warning(
        "event consumer removed",
        extra={
            "consumer": consumer,
            "subscriptions": [f"{s.type} v{s.version}" for s in gone],
            "ledger_entries_dropped": dropped,
            "queued_messages_dropped": queued,
        },
    )
    return Removal(subscriptions=gone, ledger_entries=dropped, queued_messages=queued)
