"""The users service's own code run as an event producer in a process of its own, for the system
tests of the event backbone (tests/test_events_reliability.py).

    cd services/users && DJANGO_SETTINGS_MODULE=users_service.settings DATABASE_URL=… \
        python ../../tests/users_producer.py --out result.json make-users TAG COUNT

Each command writes its result as JSON to --out (the process's stdout carries the service's logs);
the test asserts on it. The environment is the users service's (settings, database, broker).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

USERS_DIR = Path(__file__).resolve().parent.parent / "services" / "users"


def make_users(tag: str, count: int) -> list[int]:
    from accounts.models import User

    users = User.objects.bulk_create(
        [User(username=f"r{tag}_{i}", email=f"r{tag}_{i}@example.com", password="!") for i in range(count)]
    )
    return [u.id for u in users]


def follow(followee_id: int, follower_ids: list[int], *, request_id: str = "", die: bool = False) -> None:
    """Each follower follows the followee through follows.services (the outbox row in the same
    transaction). `die`: SIGKILL this process right after the last commit."""
    from accounts.models import User
    from follows.services import follow_create

    from shared.requestid import set_request_id

    if request_id:
        set_request_id(request_id)
    name = User.objects.get(id=followee_id).username
    for follower in follower_ids:
        follow_create(follower_id=follower, followee_username=name)
    if die:
        os.kill(os.getpid(), signal.SIGKILL)  # committed; the process dies before anything else


def republish(follower_id: int) -> int:
    """Publish the user.followed envelope of `follower_id` again, as a relay that crashed before
    marking the row sent would. Returns how many rows the batch relayed."""
    from django.db import transaction
    from users_service.celery import app

    from shared.events.models import OutboxEvent
    from shared.events.relay import Relay

    row = OutboxEvent.objects.get(type="user.followed", data__follower_id=str(follower_id))
    with transaction.atomic():  # uncommitted: the running relay cannot take the row first
        OutboxEvent.objects.filter(seq=row.seq).update(sent_at=None)
        return Relay(app).relay_batch()


def followed_events(followee_id: int) -> dict[str, str]:
    """{follower id: event id} of the user.followed rows in the outbox for `followee_id`."""
    from shared.events.models import OutboxEvent

    rows = OutboxEvent.objects.filter(type="user.followed", data__followee_id=str(followee_id))
    return {row.data["follower_id"]: str(row.event_id) for row in rows}


def prune_aged(event_ids: list[str], age_days: int) -> list[str]:
    """Make the rows sent `age_days` ago, run the pruner, and return which of them are left."""
    from django.utils import timezone

    from shared.events.models import OutboxEvent
    from shared.events.prune import prune_events

    OutboxEvent.objects.filter(event_id__in=event_ids).update(sent_at=timezone.now() - timedelta(days=age_days))
    prune_events()
    left = OutboxEvent.objects.filter(event_id__in=event_ids).values_list("event_id", flat=True)
    return sorted(str(x) for x in left)


def send_poison(event_id: str) -> None:
    """A well-formed user.followed envelope whose handler always fails (the id overflows bigint),
    sent straight to notifications' queue."""
    from users_service.celery import app

    envelope = {
        "id": event_id,
        "type": "user.followed",
        "version": 1,
        "occurred_at": "2025-01-01T00:00:00Z",
        "producer": "users",
        "data": {"follower_id": "99999999999999999999", "followee_id": "1"},
        "request_id": "req-poison",
    }
    app.send_task("events.handle", queue="notifications", args=[envelope])


def redeliver(lost_after: str | None) -> Any:
    """One redelivery check of the users relay, as its loop runs it (Relay.redeliver); `lost_after`
    overrides EVENTS_LOST_AFTER_SECONDS. Returns what the check reports."""
    if lost_after is not None:
        os.environ["EVENTS_LOST_AFTER_SECONDS"] = lost_after
    from users_service.celery import app

    from shared.events.relay import Relay

    return Relay(app).redeliver()


def run(args: argparse.Namespace) -> Any:
    if args.command == "make-users":
        return make_users(args.tag, args.count)
    if args.command == "follow":
        return follow(args.followee, args.followers, request_id=args.request_id, die=args.die)
    if args.command == "republish":
        return republish(args.follower)
    if args.command == "followed-events":
        return followed_events(args.followee)
    if args.command == "prune-aged":
        return prune_aged(args.event_ids, args.age_days)
    if args.command == "send-poison":
        return send_poison(args.event_id)
    if args.command == "redeliver":
        return redeliver(args.lost_after)
    raise SystemExit(f"unknown command {args.command}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", type=Path, help="write the command's result here as JSON")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("make-users")
    c.add_argument("tag")
    c.add_argument("count", type=int)
    c = sub.add_parser("follow")
    c.add_argument("followee", type=int)
    c.add_argument("followers", type=int, nargs="+")
    c.add_argument("--request-id", default="")
    c.add_argument("--die", action="store_true", help="SIGKILL itself right after the commit")
    c = sub.add_parser("republish")
    c.add_argument("follower", type=int)
    c = sub.add_parser("followed-events")
    c.add_argument("followee", type=int)
    c = sub.add_parser("prune-aged")
    c.add_argument("event_ids", nargs="+")
    c.add_argument("--age-days", type=int, default=30)
    c = sub.add_parser("send-poison")
    c.add_argument("event_id")
    c = sub.add_parser("redeliver")
    c.add_argument("--lost-after", help="EVENTS_LOST_AFTER_SECONDS for this check")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    sys.path.insert(0, str(USERS_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "users_service.settings")
    import django

    django.setup()
    result = run(args)
    if args.out is not None:
        args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
