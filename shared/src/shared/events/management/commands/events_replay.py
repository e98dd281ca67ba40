import re
import uuid
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

_AGE = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> timedelta:
    """'90', '90s', '15m', '2h', '7d' → timedelta."""
    found = _AGE.match(text.strip())
    if not found:
        raise CommandError(f"bad age {text!r}: a number with an optional unit s, m, h or d (e.g. 90s, 15m, 2h, 7d)")
    return timedelta(seconds=float(found.group(1)) * _UNITS[found.group(2)])


class Command(BaseCommand):
    help = (
        "Replay dead letters of this service: apply each selected event again through the inbox (so an "
        "event that was in fact applied is not applied twice), delete the dead letter when it went "
        "through, keep it with the new error when it failed again."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--id",
            action="append",
            default=[],
            dest="ids",
            metavar="ID",
            help="a dead letter's id, or the event id (uuid) it holds; repeatable",
        )
        parser.add_argument(
            "--type",
            action="append",
            default=[],
            dest="types",
            metavar="TYPE",
            help="only dead letters of this event type; repeatable",
        )
        parser.add_argument("--older-than", metavar="AGE", help="only dead letters recorded longer ago (90s, 15m, 2h, 7d)")
        parser.add_argument("--newer-than", metavar="AGE", help="only dead letters recorded more recently")
        parser.add_argument("--all", action="store_true", help="every dead letter (needed when no other filter is given)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
        parser.add_argument("--limit", type=int, default=1000, help="at most this many per run (default 1000)")

    def selected(self, options):
        from django.db.models import Q
        from django.utils import timezone

        from shared.events.models import DeadLetter

        if not (options["ids"] or options["types"] or options["older_than"] or options["newer_than"] or options["all"]):
            raise CommandError("nothing selected: give --id, --type, --older-than/--newer-than, or --all")
        if options["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        query = DeadLetter.objects.all()
        if options["ids"]:
            by_id = Q(pk__in=[])
            for raw in options["ids"]:
                value = raw.strip()
                if value.isdigit():
                    by_id |= Q(pk=int(value))
                else:
                    try:
                        by_id |= Q(event_id=uuid.UUID(value))
                    except ValueError:
                        raise CommandError(f"bad --id {raw!r}: a dead letter id (integer) or an event id (uuid)") from None
            query = query.filter(by_id)
        if options["types"]:
            query = query.filter(type__in=options["types"])
        now = timezone.now()
        if options["older_than"]:
            query = query.filter(created_at__lt=now - parse_age(options["older_than"]))
        if options["newer_than"]:
            query = query.filter(created_at__gte=now - parse_age(options["newer_than"]))
        return list(query.order_by("created_at", "pk").values_list("pk", flat=True)[: options["limit"]])

    def handle(self, *args, **options):
        ids = self.selected(options)
        counts = {"applied": 0, "duplicate": 0, "failed": 0, "skipped": 0, "would replay": 0}
        for pk in ids:
            outcome, detail = self.replay(pk, dry_run=options["dry_run"])
            counts[outcome] += 1
            self.stdout.write(f"{outcome:<12} {detail}")
        summary = ", ".join(f"{name} {n}" for name, n in counts.items() if n) or "nothing matched"
        self.stdout.write(f"{len(ids)} dead letter(s): {summary}")
        if counts["failed"]:
            raise CommandError(f"{counts['failed']} dead letter(s) failed again (kept, with the new error)")

    def replay(self, pk: int, *, dry_run: bool) -> tuple[str, str]:
        from django.db import transaction

        from shared.events.inbox import dispatch
        from shared.events.models import DeadLetter
        from shared.requestid import reset_request_id, set_request_id

        with transaction.atomic():
            # a concurrent replay of the same row skips it instead of applying it alongside
            row = DeadLetter.objects.select_for_update(skip_locked=True).filter(pk=pk).first()
            if row is None:
                return "skipped", f"#{pk} (gone, or being replayed by someone else)"
            label = f"#{row.pk} {row.type} {row.event_id or '-'} (dead since {row.created_at:%Y-%m-%d %H:%M:%S}Z)"
            if row.task != "events.handle" or not isinstance(row.payload, dict):
                return "skipped", f"{label}: task {row.task} is not an event delivery; nothing to replay"
            if dry_run:
                return "would replay", label
            token = set_request_id(str(row.payload.get("request_id") or "") or f"replay-{row.pk}")
            try:
                try:
                    with transaction.atomic():  # the handlers' writes and the inbox row, or nothing
                        applied = dispatch(row.payload)
                except Exception as exc:
                    row.error = f"{type(exc).__name__}: {exc}"[:5000]
                    row.attempts += 1
                    row.save(update_fields=["error", "attempts"])
                    return "failed", f"{label}: {row.error[:300]}"
            finally:
                reset_request_id(token)
            row.delete()  # in the same transaction as the inbox row: replayed exactly once
            return ("applied" if applied else "duplicate"), label
