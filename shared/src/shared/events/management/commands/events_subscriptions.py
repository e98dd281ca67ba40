import json

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "The event subscription registry (docs/events.md#subscriptions): list it, register this service's "
        "declared subscriptions, or remove a consumer (and drop its backlog)."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action")
        listing = sub.add_parser("list", help="every registered subscription (the default)")
        listing.add_argument("--json", action="store_true")
        sub.add_parser("register", help="add this service's declared subscriptions (migrate and workers do it)")
        remove = sub.add_parser("remove", help="remove a consumer's subscriptions and drop its backlog")
        remove.add_argument("consumer")
        remove.add_argument(
            "--type",
            action="append",
            default=[],
            dest="types",
            help="only this event type (repeatable); default: every subscription of the consumer",
        )
        remove.add_argument(
            "--purge-queue",
            action="store_true",
            help="also delete every message waiting in the consumer's queue (a consumer gone for good)",
        )

    def handle(self, *args, **options):
        from django.conf import settings

        from shared.events import ledger, subscriptions
        from shared.events.celery_config import celery_config

        service = settings.SERVICE_NAME
        url = celery_config(service)["broker_url"]
        action = options.get("action") or "list"
        try:
            client = ledger.client(url)
            if action == "register":
                added = subscriptions.register(client, service)
                self.stdout.write(
                    f"{service}: {len(added)} new subscription(s) " + ", ".join(f"{s.type} v{s.version}" for s in added)
                )
                return
            if action == "remove":
                removal = subscriptions.remove(
                    client, options["consumer"], types=options["types"], purge_queue=options["purge_queue"]
                )
                self.stdout.write(
                    f"removed {len(removal.subscriptions)} subscription(s) of {options['consumer']}; "
                    f"dropped {removal.ledger_entries} pending ledger entries and "
                    f"{removal.queued_messages} queued messages"
                )
                return
            routes = subscriptions.read(client)
        except Exception as exc:
            raise CommandError(f"broker Redis not reachable: {type(exc).__name__}: {exc}") from None
        rows = [{"consumer": s.consumer, "type": s.type, "version": s.version} for s in routes.subscriptions]
        if options.get("json"):
            self.stdout.write(json.dumps(rows))
            return
        for row in rows:
            self.stdout.write(f"{row['consumer']:<16} {row['type']:<18} v{row['version']}")
