from pathlib import Path

from shared.django_settings import service_settings
from shared.env import env_float, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(service_settings("notifications", base_dir=BASE_DIR, apps=["shared.events", "notifications", "devices"]))

# users' internal API, for actor profiles (batch call, cached in Redis, refreshed by user.updated)
USERS_URL = env_str("USERS_URL", "http://127.0.0.1:8100")
ACTOR_CACHE_SECONDS = env_int("ACTOR_CACHE_SECONDS", 3600)
UNREAD_CACHE_SECONDS = env_int("UNREAD_CACHE_SECONDS", 300)

# notifications are partitioned by month: partitions exist this many months ahead, and
# partitions wholly older than the retention are dropped (0 keeps everything)
NOTIFICATION_PARTITIONS_AHEAD = env_int("NOTIFICATION_PARTITIONS_AHEAD", 3)
NOTIFICATION_RETENTION_MONTHS = env_int("NOTIFICATION_RETENTION_MONTHS", 12)

# push delivery: "log" (dev) or "webhook" (HTTP POST, HMAC-SHA256 signed)
PUSH_PROVIDER = env_str("PUSH_PROVIDER", "log")
PUSH_WEBHOOK_URL = env_str("PUSH_WEBHOOK_URL", "http://127.0.0.1:9/")
PUSH_WEBHOOK_SECRET = env_str("PUSH_WEBHOOK_SECRET", "dev-push-secret")
PUSH_WEBHOOK_TIMEOUT = env_float("PUSH_WEBHOOK_TIMEOUT", 3.0)
PUSH_COALESCE_SECONDS = env_float("PUSH_COALESCE_SECONDS", 2.0)
PUSH_MAX_ATTEMPTS = env_int("PUSH_MAX_ATTEMPTS", 6)
PUSH_RETRY_BACKOFF = env_float("PUSH_RETRY_BACKOFF", 2.0)
# anti-spam (docs/decisions.md#notification-spam-collapse-in-the-database-cap-in-redis):
# repeats within the window collapse; pushes per recipient per hour are capped
NOTIFY_GROUP_WINDOW = env_int("NOTIFY_GROUP_WINDOW", 3600)
PUSH_MAX_PER_HOUR = env_int("PUSH_MAX_PER_HOUR", 30)
