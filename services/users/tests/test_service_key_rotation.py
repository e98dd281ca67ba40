"""Service keys rotate without a refused call: a real users process (gunicorn) verifies feed's
credentials with a key set file that changes under it, as a mounted ConfigMap would. Steps: publish
the new key next to the old, switch feed to sign with it, withdraw the old key. Every call feed makes
along the way (with whichever key it signs with at that moment) is answered 200."""

import json
import os
import shutil
import time
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from shared.service_keys import SigningKey, keyset_document, write_keyset
from shared.testing import ServiceProcess, dev_signing_key, service_token

pytestmark = pytest.mark.django_db(transaction=True)  # the users process must see alice

USERS_DIR = Path(__file__).resolve().parents[1]


def _keyset(path: Path, feed_keys: list[SigningKey]) -> None:
    document = json.loads(Path(settings.SERVICE_PUBLIC_KEYS).read_text())
    document.update(keyset_document({"feed": [(k.kid, k.private_key.public_key()) for k in feed_keys]}))
    write_keyset(path, document)


def test_rotation_keeps_calls_working(make_user, tmp_path):
    from shared.auth import ServiceCredential

    alice, _ = make_user("alice")
    old, new = dev_signing_key("feed"), SigningKey("feed-2", Ed25519PrivateKey.generate())
    keyset = tmp_path / "service-keys.json"
    shutil.copy(settings.SERVICE_PUBLIC_KEYS, keyset)
    users = ServiceProcess(
        USERS_DIR,
        "users",
        {
            **os.environ,
            "GUNICORN_WORKERS": "2",
            "GUNICORN_THREADS": "2",
            "SERVICE_PUBLIC_KEYS": str(keyset),
            "SERVICE_KEYS_RELOAD_SECONDS": "0.2",
        },
    )
    url = f"{users.url}/internal/v1/users?ids={alice.id}"

    def call(key: SigningKey) -> int:
        token = ServiceCredential(caller="feed", target="users", key=key)()
        return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    def until(condition, *, signing: SigningKey, what: str) -> None:
        """Poll `condition` with a deadline; meanwhile every call feed makes with `signing` succeeds."""
        deadline = time.monotonic() + 30
        while not condition():
            assert call(signing) == 200, f"a call signed with {signing.kid} was refused while waiting for {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    def settled(condition):
        """True once `condition` has held on every call for 1 s, five reload intervals: by then each of
        the two gunicorn workers has re-read the key set (one worker accepting is not enough)."""
        since: list[float] = []

        def check() -> bool:
            if not condition():
                since.clear()
                return False
            since[:] = since or [time.monotonic()]
            return time.monotonic() - since[0] >= 1.0

        return check

    try:
        assert call(old) == 200 and call(new) == 401
        _keyset(keyset, [old, new])  # 1. publish the new key; feed still signs with the old one
        until(settled(lambda: call(new) == 200), signing=old, what="the new key to be accepted")
        # 2. feed signs with the new key (its SERVICE_SIGNING_KEYS reordered, rolling restart)
        assert call(new) == 200
        _keyset(keyset, [new])  # 3. withdraw the old key
        until(settled(lambda: call(old) == 401), signing=new, what="the old key to be withdrawn")
        assert call(new) == 200
        assert (
            httpx.get(url, headers={"Authorization": f"Bearer {service_token('notifications', 'users')}"}, timeout=10).status_code
            == 200
        )  # other services' keys untouched
    finally:
        users.stop()
