"""The users service's Ed25519 signing keys (JWT_SIGNING_KEYS) and the JWKS built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from shared.tokens import StaticKeys, public_jwk


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def generate_key_file(path: Path) -> None:
    """Write a new Ed25519 key unless one is there (atomic: safe with several workers racing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


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
