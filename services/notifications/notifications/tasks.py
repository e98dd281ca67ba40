from celery import shared_task

from notifications.partitions import partitions_drop_expired, partitions_ensure


@shared_task(name="notifications.partitions_maintain")
def partitions_maintain() -> dict:
    return {"created": partitions_ensure(), "dropped": partitions_drop_expired()}
