from django.contrib.auth.hashers import Argon2PasswordHasher


class FastArgon2PasswordHasher(Argon2PasswordHasher):
    """Argon2id with test-sized cost: the same code path and hash format, ~100× cheaper.
    Production cost parameters are Django's defaults (see users_service/settings.py)."""

    time_cost = 1
    memory_cost = 1024
    parallelism = 1
