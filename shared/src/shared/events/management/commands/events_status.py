import json
import time

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "How far behind this service's event path is: outbox backlog and last relay, events published to "
        "it and not yet handled (per producer), its Celery queue, dead letters."
    )

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", help="one JSON object instead of the table")

    def handle(self, *args, **options):
        from dataclasses import asdict

        from django.conf import settings

        from shared.events import backlog, ledger
        from shared.events.celery_config import celery_config

        service = settings.SERVICE_NAME
        outbox = backlog.outbox_state(service)
        dead = backlog.dead_letter_counts()
        try:
            client = ledger.client(celery_config(service)["broker_url"])
            pending = backlog.pending_states(client, service)
            queue = backlog.queue_state(client, service)
        except Exception as exc:
            raise CommandError(f"broker Redis not reachable: {type(exc).__name__}: {exc}") from None
        now = time.time()
        if options["json"]:
            self.stdout.write(
                json.dumps(
                    {
                        "service": service,
                        "outbox": asdict(outbox),
                        "consumer": [asdict(p) for p in pending],
                        "queue": asdict(queue),
                        "dead_letters": dead,
                    },
                    sort_keys=True,
                )
            )
            return
        last = f"{now - outbox.last_sent_at:.1f} s ago" if outbox.last_sent_at is not None else "never"
        self.stdout.write(f"service {service}")
        self.stdout.write(
            f"outbox    unsent {outbox.unsent}, oldest unsent {outbox.oldest_unsent_age:.1f} s, last relayed {last}"
        )
        for state in pending:
            self.stdout.write(
                f"from {state.producer:<14} pending {state.pending}, "
                f"oldest {state.oldest_pending_age:.1f} s (published, not yet handled)"
            )
        tasks = ", ".join(f"{name} {n}" for name, n in sorted(queue.tasks.items())) or "-"
        self.stdout.write(f"queue {queue.queue:<13} {queue.length} waiting (of the first {queue.scanned}: {tasks})")
        by_type = ", ".join(f"{t} {n}" for t, n in sorted(dead.items())) or "-"
        self.stdout.write(f"dead letters    {sum(dead.values())} ({by_type})")
