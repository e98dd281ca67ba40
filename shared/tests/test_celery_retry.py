"""A task retry that cannot be published (the broker is away) must not drop the message."""

from __future__ import annotations

import socket

import pytest
from celery.exceptions import Reject


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


@pytest.mark.parametrize("base", ["celery", "reliable"])
def test_a_retry_the_broker_cannot_take_requeues_the_message(monkeypatch, base):
    from celery import Celery

    from shared.events.celery_app import ReliableTask, celery_config

    monkeypatch.setenv("CELERY_BROKER_URL", f"redis://127.0.0.1:{_closed_port()}/0")
    app = Celery("retry-test", task_cls=ReliableTask if base == "reliable" else "celery.app.task:Task")
    app.conf.update(celery_config("retry-test"))

    @app.task(name="retry_test.page", bind=True, max_retries=10)
    def page(self):
        raise self.retry(exc=RuntimeError("Redis away"), countdown=1)

    page.push_request(id="task-1", retries=0, delivery_info={"routing_key": "retry-test"}, called_directly=False)
    try:
        with pytest.raises(Reject) as rejected:
            page.run()
    finally:
        page.pop_request()
    # Celery's own Task drops the message (requeue=False): the page would be lost
    assert rejected.value.requeue is (base == "reliable")
