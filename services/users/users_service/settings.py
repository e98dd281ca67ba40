from pathlib import Path

from shared.django_settings import service_settings
from shared.env import dev_mode, env_int, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
globals().update(service_settings("users", base_dir=BASE_DIR, apps=["shared.events", "accounts", "follows"]))

# Argon2id first: new and rehashed passwords use it; PBKDF2 only verifies legacy hashes.
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
]
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator",
        "OPTIONS": {"user_attributes": ["username", "email", "display_name"]},
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 8}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Signing keys: "kid=/path/to/ed25519.pem,kid2=/path2.pem"; the first signs, all verify and are
# published in the JWKS, so a key can be rotated in before it signs and kept until tokens expire.
_DEV_KEYS = f"dev={BASE_DIR.parent.parent / '.run' / 'keys' / 'users-dev.pem'}" if dev_mode() else None
JWT_SIGNING_KEYS = env_str("JWT_SIGNING_KEYS", _DEV_KEYS)
JWT_KEY_SOURCE = "accounts.keys.local_key_source"
ACCESS_TOKEN_TTL = env_int("ACCESS_TOKEN_TTL", 15 * 60)
REFRESH_TOKEN_TTL = env_int("REFRESH_TOKEN_TTL", 30 * 24 * 3600)

# Login is throttled per IP and per account (the name tried), atomically in Redis.
THROTTLE_RATES = {
    "login_ip": env_str("THROTTLE_LOGIN_IP", "30/min"),
    "login_account": env_str("THROTTLE_LOGIN_ACCOUNT", "10/min"),
    "register_ip": env_str("THROTTLE_REGISTER_IP", "20/min"),
}
PROFILE_CACHE_SECONDS = env_int("PROFILE_CACHE_SECONDS", 300)
