"""The acknowledgement ledger: which published events a consumer has not finished yet.

kombu's Redis transport takes a message off the queue (BRPOP) and records it as unacknowledged in
a second round trip; a worker SIGKILLed (or a Redis stopped) between the two loses the message for
good (celery/kombu#305). The ledger closes that gap end to end, independently of the transport:

* the relay, before it publishes an event to a consumer's queue, records it in the broker Redis:
  `ZADD events:pending:<consumer>:<producer> <publish time> <event id>` (one pipeline per batch);
* the consumer removes the id once the event is settled: its handler transaction committed (inbox
  row written), the inbox said it was a duplicate, or it was dead-lettered (`ZREM`, after commit);
  a handler scheduling a retry moves the score to the retry's due time (the event is still alive);
* the relay periodically re-publishes, from its own outbox, every id still pending after a grace
  period (`EVENTS_REDELIVER_AFTER_SECONDS`, default visibility timeout + hard time limit + 60 s),
  bumping its score; the consumer's inbox makes a redelivery of something that was in fact handled
  harmless;
* sooner, an id pending for `EVENTS_LOST_AFTER_SECONDS` (20 s) whose message is nowhere in the
  broker — not in the consumer's queue, not among the transport's unacknowledged messages — was
  lost in transit and is re-published at once (`in_transit`), without waiting out the grace
  period sized for messages a dead worker held;
* pruning keeps an outbox row while any consumer still has it pending.

The key carries the producer so that each relay scans only the ids its own outbox can re-publish.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time

import redis

from shared import redis_clients

logger = logging.getLogger("shared.events")


def pending_key(consumer: str, producer: str) -> str:
    return f"events:pending:{consumer}:{producer}"


def client(url: str, *, bulk: bool = False) -> redis.Redis:
    """The broker Redis (shared.redis_clients: short timeouts, fork-safe): a worker must not sit out
    its task time limit on a Redis that is down; a failed update only costs a harmless redelivery
    later. `bulk` for the pipelines of a whole batch (relay, pruning)."""
    return redis_clients.client(url, bulk=bulk)


def settle(url: str, *, consumer: str, producer: str, event_id: str) -> bool:
    """The consumer is done with the event (applied, duplicate or dead-lettered). False if Redis
    could not be told: then the relay redelivers it after the grace period and the inbox drops it."""
    try:
        client(url).zrem(pending_key(consumer, producer), event_id)
        return True
    except redis.RedisError as exc:
        logger.warning(
            "ack ledger update failed; the event will be redelivered and deduplicated",
            extra={"event_id": event_id, "error": str(exc)},
        )
        return False


def postpone(url: str, *, consumer: str, producer: str, event_id: str, until: float) -> None:
    """A retry is scheduled for `until`: the grace period counts from then (only if still pending)."""
    try:
        client(url).zadd(pending_key(consumer, producer), {event_id: until}, xx=True)
    except redis.RedisError as exc:
        logger.warning("ack ledger postpone failed", extra={"event_id": event_id, "error": str(exc)})


def now() -> float:
    return time.time()


_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _ids_in(payload: bytes | str) -> set[str]:
    """Every UUID in a kombu message (its headers, argsrepr included, and its base64 body)."""
    raw = payload.encode() if isinstance(payload, str) else payload
    found = {m.decode() for m in _UUID.findall(raw)}
    try:
        body = json.loads(raw).get("body")
        if isinstance(body, str):
            found |= {m.decode() for m in _UUID.findall(base64.b64decode(body))}
    except (ValueError, AttributeError, TypeError):
        pass
    return found


def in_transit(client, queue: str, *, unacked_key: str = "unacked", limit: int = 1000) -> set[str] | None:
    """The event ids of every message on its way to `queue`'s consumer: waiting in the queue (each
    kombu priority list) or delivered and not yet acknowledged (kombu's `unacked` hash, which also
    holds a dead worker's messages until the visibility timeout brings them back, and retries due
    later). An id pending in the ledger and in neither place was lost in transit (celery/kombu#305).
    One MULTI, so a message moving from the queue to the unacked hash is seen in one of them.
    None when more than `limit` messages would have to be read (the caller then cannot tell)."""
    from shared.events.backlog import queue_keys

    keys = queue_keys(queue)
    pipe = client.pipeline(transaction=True)
    for key in keys:
        pipe.llen(key)
    pipe.hlen(unacked_key)
    sizes = pipe.execute()
    if sum(sizes) > limit:
        return None
    pipe = client.pipeline(transaction=True)
    for key in keys:
        pipe.lrange(key, 0, -1)
    pipe.hvals(unacked_key)
    *lists, unacked = pipe.execute()
    found: set[str] = set()
    for messages in lists:
        for message in messages:
            found |= _ids_in(message)
    for value in unacked:
        try:
            message, exchange, routing_key = json.loads(value)
        except (ValueError, TypeError):
            continue
        if queue in (exchange, routing_key):
            found |= _ids_in(json.dumps(message))
    return found
