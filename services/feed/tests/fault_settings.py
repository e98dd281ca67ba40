"""feed's own settings plus one test-only middleware (tests.faults): used by the real feed
processes the idempotency fault tests start, never by the service itself."""

from feed_service.settings import *  # noqa: F403
from feed_service.settings import MIDDLEWARE

MIDDLEWARE = ["tests.faults.KillAfterCommitMiddleware", *MIDDLEWARE]
