"""Login and registration throttles: per client IP and per account name tried, in Redis."""

import hashlib

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle


class _SettingsRateThrottle(SimpleRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_RATES[self.scope]


class LoginIpThrottle(_SettingsRateThrottle):
    scope = "login_ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginAccountThrottle(_SettingsRateThrottle):
    """Slows password guessing against one account however many IPs the guesses come from."""

    scope = "login_account"

    def get_cache_key(self, request, view):
        data = request.data if isinstance(request.data, dict) else {}
        login = data.get("username") or data.get("email") or data.get("login")
        if not isinstance(login, str) or not login:
            return None
        # hashed: the name tried is arbitrary client text (spaces, control characters, 254+ bytes), not a cache key
        ident = hashlib.sha256(login.strip().lower()[:254].encode()).hexdigest()
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AccountDeleteThrottle(_SettingsRateThrottle):
    """Password re-entry to delete an account: as strict as logging in to it (same rate as
    login_account), keyed by the authenticated account, so a stolen access token cannot be used
    to guess the password quickly."""

    scope = "login_account"

    def get_cache_key(self, request, view):
        if request.method != "DELETE" or not getattr(request.user, "id", None):
            return None
        return self.cache_format % {"scope": "account_delete", "ident": request.user.id}


class RegisterIpThrottle(LoginIpThrottle):
    scope = "register_ip"
