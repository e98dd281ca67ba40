"""Monthly partitions of the notification table: created ahead of time, dropped after retention."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

from django.conf import settings
from django.db import connection, transaction

logger = logging.getLogger(__name__)
TABLE = "notification"


def _month_start(d: date, offset: int = 0) -> date:
    months = d.year * 12 + d.month - 1 + offset
    return date(months // 12, months % 12 + 1, 1)


def partition_name(month: date) -> str:
    return f"{TABLE}_y{month.year:04d}m{month.month:02d}"


def partitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = %s "
            "AND p.relnamespace = c.relnamespace AND pg_table_is_visible(p.oid) ORDER BY c.relname",
            [TABLE],
        )
        return [row[0] for row in cursor.fetchall()]


@transaction.atomic
def partitions_ensure(*, today: date | None = None, ahead: int | None = None) -> list[str]:
    """Create the partitions from this month to `ahead` months on (idempotent); returns new ones."""
    today = today or datetime.now(UTC).date()
    ahead = settings.NOTIFICATION_PARTITIONS_AHEAD if ahead is None else ahead
    existing = set(partitions())
    created = []
    with connection.cursor() as cursor:
        for offset in range(ahead + 1):
            start, end = _month_start(today, offset), _month_start(today, offset + 1)
            name = partition_name(start)
            if name in existing:
                continue
            cursor.execute(
                f'CREATE TABLE "{name}" PARTITION OF "{TABLE}" '
                f"FOR VALUES FROM ('{start.isoformat()}T00:00:00+00:00') TO ('{end.isoformat()}T00:00:00+00:00')"
            )
            created.append(name)
    if created:
        logger.info("notification partitions created", extra={"partitions": created})
    return created


@transaction.atomic
def partitions_drop_expired(*, today: date | None = None, retention_months: int | None = None) -> list[str]:
    """Drop partitions whose whole month is older than the retention (0: keep everything)."""
    retention = settings.NOTIFICATION_RETENTION_MONTHS if retention_months is None else retention_months
    if retention <= 0:
        return []
    today = today or datetime.now(UTC).date()
    oldest_kept = partition_name(_month_start(today, -retention))
    dropped = [name for name in partitions() if name < oldest_kept]
    with connection.cursor() as cursor:
        for name in dropped:
            cursor.execute(f'ALTER TABLE "{TABLE}" DETACH PARTITION "{name}"')
            cursor.execute(f'DROP TABLE "{name}"')
    if dropped:
        logger.info("notification partitions dropped", extra={"partitions": dropped})
    return dropped
