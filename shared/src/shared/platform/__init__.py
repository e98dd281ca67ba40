"""The platform app every service installs (added by shared.django_settings): tables the shared
library needs in each service's own schema. Today: `idempotency_key` (shared.idempotency)."""
