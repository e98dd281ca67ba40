from datetime import date

import pytest
from notifications.partitions import partition_name, partitions, partitions_drop_expired, partitions_ensure

pytestmark = pytest.mark.django_db


def test_migrate_created_this_month_and_the_months_ahead(settings):
    today = date.today()
    expected = []
    for offset in range(settings.NOTIFICATION_PARTITIONS_AHEAD + 1):
        months = today.year * 12 + today.month - 1 + offset
        expected.append(partition_name(date(months // 12, months % 12 + 1, 1)))
    assert set(expected) <= set(partitions())


def test_ensure_is_idempotent_and_drop_respects_retention():
    created = partitions_ensure(today=date(2019, 11, 15), ahead=2)
    assert created == ["notification_y2019m11", "notification_y2019m12", "notification_y2020m01"]
    assert partitions_ensure(today=date(2019, 11, 15), ahead=2) == []
    # retention 0 keeps everything; 12 months drops the months that ended before 2019-12-03
    assert partitions_drop_expired(today=date(2020, 12, 3), retention_months=0) == []
    assert partitions_drop_expired(today=date(2020, 12, 3), retention_months=12) == ["notification_y2019m11"]
    assert "notification_y2019m12" in partitions() and "notification_y2019m11" not in partitions()
