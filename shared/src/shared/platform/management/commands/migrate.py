"""Django's `migrate`, with `--wait SECONDS`: a database it cannot reach yet (a name the container
network's DNS does not resolve yet, a server still starting, a refused connection) is tried again
with backoff, each attempt reported on stderr, until then; the deployments' migration one-shots
pass it (docker-compose.yml, deploy/k8s/migrations). Without it (the default, 0) the first
failure is final, as Django's own command."""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser
from django.core.management.commands import migrate
from django.db import connections
from django.db.utils import OperationalError

from shared.db_bootstrap import retry_unreachable


def wait_for_database(alias: str, seconds: float, stderr: Any) -> None:
    """Connect `alias`, retrying an OperationalError with backoff for up to `seconds`, then raise it."""
    retry_unreachable(
        connections[alias].ensure_connection,
        seconds,
        errors=OperationalError,
        report=lambda reason, delay: stderr.write(
            f"migrate: database not reachable yet ({reason}); trying again in {delay:.2g} s"
        ),
    )


class Command(migrate.Command):
    help = migrate.Command.help + " --wait SECONDS keeps trying an unreachable database until then."

    def add_arguments(self, parser: CommandParser) -> None:
        super().add_arguments(parser)
        parser.add_argument(
            "--wait", type=float, default=0.0, help="seconds to keep trying a database that cannot be reached yet"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["wait"] > 0:
            wait_for_database(options["database"], options["wait"], self.stderr)
        super().handle(*args, **options)
