import signal

from django.core.management.base import BaseCommand
from django.utils.module_loading import import_string


class Command(BaseCommand):
    help = "Relay committed outbox events to their consumers' Celery queues (run one or more replicas)."

    def add_arguments(self, parser):
        parser.add_argument("--once", action="store_true", help="relay what is pending, then exit")
        parser.add_argument("--batch-size", type=int, default=200)
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="seconds between polls when no NOTIFY arrives (default: EVENTS_RELAY_POLL_SECONDS or 30)",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            default=None,
            help="serve Prometheus /metrics on this port (default: METRICS_PORT; 0: none)",
        )

    def handle(self, *args, **options):
        import logging

        from django.conf import settings

        from shared import tracing
        from shared.env import env_float
        from shared.events.exposition import remove_owned_dir, start_metrics_server
        from shared.events.relay import Relay

        tracing.setup(settings.SERVICE_NAME, celery=True)  # the relay's publishes join each event's trace

        try:
            start_metrics_server(options["metrics_port"])
        except OSError as exc:  # port taken: relay anyway (its events matter more than its metrics), as workers do
            logging.getLogger("shared.events").error("metrics server not started", extra={"error": str(exc)})
        app = import_string(f"{settings.SERVICE_NAME}_service.celery.app")
        poll = options["poll_interval"]
        if poll is None:
            poll = env_float("EVENTS_RELAY_POLL_SECONDS", 30.0)
        relay = Relay(app, batch_size=options["batch_size"], poll_interval=poll)
        signal.signal(signal.SIGTERM, relay.stop)
        signal.signal(signal.SIGINT, relay.stop)
        try:
            relay.run(once=options["once"])
        finally:
            remove_owned_dir()
