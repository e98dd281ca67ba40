"""The users service's Ed25519 signing keys (JWT_SIGNING_KEYS) and the JWKS built from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from shared.keygen import generate_key_file
from shared.tokens import StaticKeys, public_jwk


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


@lru_cache(maxsize=1)
def signing_keys() -> tuple[SigningKey, ...]:
    keys = []
    for item in settings.JWT_SIGNING_KEYS.split(","):
        kid, _, filename = item.strip().partition("=")
        path = Path(filename)
        if not path.exists() and kid == "dev":
            generate_key_file(path)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"signing key {kid} is not Ed25519")
        keys.append(SigningKey(kid=kid, private_key=key))
    return tuple(keys)


def active_key() -> SigningKey:
    return signing_keys()[0]


def jwks() -> dict:
    return {"keys": [public_jwk(k.private_key.public_key(), k.kid) for k in signing_keys()]}


def local_key_source() -> StaticKeys:
    return StaticKeys({k.kid: k.private_key.public_key() for k in signing_keys()})
