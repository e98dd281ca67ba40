from celery import shared_task

from devices import services


@shared_task(name="devices.push_flush", bind=True, max_retries=None)
def push_flush(self, user_id: int) -> int:
    try:
        return services.push_flush(user_id=user_id)
    except services.PushRetry as retry:
        raise self.retry(countdown=retry.delay) from None


@shared_task(name="devices.push_sweep")
def push_sweep() -> int:
    """Safety net: flush users whose pending deliveries were never (or unsuccessfully) scheduled."""
    users = services.push_due_users()
    for user_id in users:
        push_flush.apply_async(args=(user_id,))
    return len(users)
