"""Service credentials: the key set file, its reload, and verification bound to `iss` and `aud`."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.auth import ServiceCredential, verify_service_token
from shared.service_keys import KeySet, SigningKey, dev_key_path, keyset_document, load_private_key, write_dev_keys, write_keyset
from shared.tokens import InvalidToken


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def keys(**services: list[SigningKey]) -> dict:
    return keyset_document({name: [(k.kid, k.private_key.public_key()) for k in ks] for name, ks in services.items()})


def new_key(kid: str) -> SigningKey:
    return SigningKey(kid, Ed25519PrivateKey.generate())


def token(caller: str, key: SigningKey, target: str = "users") -> str:
    return ServiceCredential(caller=caller, target=target, key=key)()


def test_write_dev_keys_makes_one_key_per_service_and_the_key_set(tmp_path):
    path = write_dev_keys(tmp_path, ["users", "feed"])
    feed = SigningKey("feed-dev", load_private_key(dev_key_path(tmp_path, "feed")))
    keyset = KeySet(path)
    assert verify_service_token(token("feed", feed), audience="users", keys=keyset)["iss"] == "feed"
    assert write_dev_keys(tmp_path, ["users", "feed"]) == path  # kept, not replaced
    assert (
        load_private_key(dev_key_path(tmp_path, "feed")).public_key().public_bytes_raw()
        == feed.private_key.public_key().public_bytes_raw()
    )


def test_a_key_speaks_only_for_the_service_it_is_listed_under(tmp_path):
    feed, notifications = new_key("feed-1"), new_key("notifications-1")
    write_keyset(tmp_path / "k.json", keys(feed=[feed], notifications=[notifications]))
    keyset = KeySet(tmp_path / "k.json")
    assert verify_service_token(token("notifications", notifications), audience="users", keys=keyset)
    for forged in (token("feed", notifications), token("feed", SigningKey("feed-1", notifications.private_key))):
        with pytest.raises(InvalidToken):
            verify_service_token(forged, audience="users", keys=keyset)


@pytest.mark.parametrize("case", ["audience", "expired", "typ", "alg", "no_kid"])
def test_invalid_credentials_are_refused(tmp_path, case):
    feed = new_key("feed-1")
    write_keyset(tmp_path / "k.json", keys(feed=[feed]))
    now = int(time.time())
    claims = {"iss": "feed", "aud": "users", "iat": now, "exp": now + 60}
    if case == "audience":
        bad = token("feed", feed, target="notifications")
    elif case == "expired":
        bad = jwt.encode(
            {**claims, "iat": now - 600, "exp": now - 300},
            feed.private_key,
            algorithm="EdDSA",
            headers={"typ": "svc+jwt", "kid": "feed-1"},
        )
    elif case == "typ":
        bad = jwt.encode(claims, feed.private_key, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": "feed-1"})
    elif case == "alg":
        bad = jwt.encode(
            claims, "a-secret-at-least-32-bytes-long-0123456789", algorithm="HS256", headers={"typ": "svc+jwt", "kid": "feed-1"}
        )
    else:
        bad = jwt.encode(claims, feed.private_key, algorithm="EdDSA", headers={"typ": "svc+jwt"})
    with pytest.raises(InvalidToken):
        verify_service_token(bad, audience="users", keys=KeySet(tmp_path / "k.json"))


def test_the_key_set_is_reread_when_it_changes(tmp_path):
    old, new = new_key("feed-1"), new_key("feed-2")
    path = tmp_path / "k.json"
    write_keyset(path, keys(feed=[old]))
    clock = Clock()
    keyset = KeySet(path, reload_seconds=10, clock=clock)
    assert keyset.get("feed", "feed-1") is not None and keyset.get("feed", "feed-2") is None
    write_keyset(path, keys(feed=[old, new]))
    clock.now = 1.0  # an unknown kid looks again (at most once a second)
    assert keyset.get("feed", "feed-2") is not None
    write_keyset(path, keys(feed=[new]))
    clock.now = 2.0
    assert keyset.get("feed", "feed-1") is not None  # known kid: kept until the periodic check
    clock.now = 12.0
    assert keyset.get("feed", "feed-1") is None and keyset.get("feed", "feed-2") is not None


def test_a_broken_update_keeps_the_last_good_keys(tmp_path):
    feed = new_key("feed-1")
    path = tmp_path / "k.json"
    write_keyset(path, keys(feed=[feed]))
    clock = Clock()
    keyset = KeySet(path, reload_seconds=1, clock=clock)
    assert keyset.get("feed", "feed-1") is not None
    path.write_text("{ half written")
    clock.now = 5.0
    assert keyset.get("feed", "feed-1") is not None
