"""Login and registration throttles: per client IP and per account, in Redis."""

import hashlib

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from accounts import selectors
from shared.client_ip import client_ip


class _SettingsRateThrottle(SimpleRateThrottle):
    def get_rate(self):
        return settings.THROTTLE_RATES[self.scope]

    def get_ident(self, request):
        # the address the gateway resolved (X-Client-IP, believed only from a gateway peer), never
        # X-Forwarded-For: shared/client_ip.py
        return client_ip(request)


class LoginIpThrottle(_SettingsRateThrottle):
    scope = "login_ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LoginAccountThrottle(_SettingsRateThrottle):
    """Slows password guessing against one account however many IPs the guesses come from. Keyed
    by the account the name resolves to, so its username and its email (any case) share one
    bucket; a name that matches no account is keyed by the name itself (as strictly limited, so
    the limit says nothing about whether an account exists)."""

    scope = "login_account"

    def get_cache_key(self, request, view):
        data = request.data if isinstance(request.data, dict) else {}
        login = data.get("username") or data.get("email") or data.get("login")
        if not isinstance(login, str) or not login.strip():
            return None
        name = login.strip()[:254]
        user_id = selectors.user_id_by_login(login=name)
        # an unknown name is hashed: it is arbitrary client text (spaces, control characters), not a cache key
        ident = f"user-{user_id}" if user_id is not None else "name-" + hashlib.sha256(name.lower().encode()).hexdigest()
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
