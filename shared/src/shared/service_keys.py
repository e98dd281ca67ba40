"""Per-service Ed25519 keys for service-to-service credentials (shared.auth).

Each service holds its own private key(s) and every service holds the public key set:

* `SERVICE_SIGNING_KEYS` = "kid=/path/key.pem[,kid2=/path/key2.pem]": this service's private
  keys (PKCS#8 PEM, `python -m shared.keygen`). The first signs; the others are listed so a
  rotation can be staged, as for JWT_SIGNING_KEYS.
* `SERVICE_PUBLIC_KEYS` = path to the key set, a JSON object naming each service's JWKS:
  `{"feed": {"keys": [<Ed25519 JWK with kid>, ...]}, "users": {...}, ...}`. A token's key is looked
  up under its `iss`, so a key only ever speaks for the service it is listed under. The file is
  re-read when it changes (checked at most every SERVICE_KEYS_RELOAD_SECONDS, and on an unknown
  kid), so a mounted ConfigMap update takes effect without a restart.

Dev and tests: `write_dev_keys(directory)` (`python -m shared.service_keys DIR`) writes one key
per service (`service-<name>.pem`, kid `<name>-dev`) and the key set (`service-keys.json`) built
from them; `make run` and `make test` do this in their run directory. For a deployment:
`python -m shared.service_keys --kid-suffix k1 DIR`, then keep each PEM where only its service can
read it; `--jwk KID key.pem` prints a key's public JWK to add to the key set when rotating.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from jwt.algorithms import OKPAlgorithm

from shared.env import dev_mode, env_float
from shared.keygen import generate_key_file
from shared.tokens import public_jwk

DEV_SERVICES = ("users", "feed", "notifications")
KEYSET_FILE = "service-keys.json"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey


def dev_key_path(directory: Path, service: str) -> Path:
    return Path(directory) / f"service-{service}.pem"


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImproperlyConfigured(f"{path} is not an Ed25519 private key")
    return key


def parse_signing_keys(spec: str) -> tuple[SigningKey, ...]:
    keys = []
    for item in spec.split(","):
        kid, _, filename = item.strip().partition("=")
        if not kid or not filename:
            raise ImproperlyConfigured('SERVICE_SIGNING_KEYS is "kid=/path/key.pem[,kid2=/path2.pem]"')
        keys.append(SigningKey(kid=kid, private_key=load_private_key(Path(filename))))
    return tuple(keys)


@lru_cache(maxsize=1)
def signing_keys() -> tuple[SigningKey, ...]:
    """This service's keys (SERVICE_SIGNING_KEYS); the first signs."""
    spec = getattr(settings, "SERVICE_SIGNING_KEYS", "")
    if not spec:
        raise ImproperlyConfigured("SERVICE_SIGNING_KEYS is not set: this service cannot call another")
    _dev_keys_for(spec.split(",")[0].partition("=")[2])
    return parse_signing_keys(spec)


def _dev_keys_for(filename: str) -> None:
    """Dev mode only: the default key directory is filled on first use (as users' JWT dev key)."""
    path = Path(filename.strip())
    if dev_mode() and path.parent.name == "keys" and path.parent.parent.name == ".run" and not path.exists():
        write_dev_keys(path.parent)


def keyset_document(public_keys: dict[str, list[tuple[str, Any]]]) -> dict:
    """{service: [(kid, Ed25519 public key), ...]} → the key set file's JSON."""
    return {service: {"keys": [public_jwk(key, kid) for kid, key in keys]} for service, keys in public_keys.items()}


def write_keyset(path: Path, document: dict) -> None:
    """Replace the key set file atomically (readers see the old or the new file, never half)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def write_dev_keys(directory: Path, services: tuple[str, ...] | list[str] = DEV_SERVICES, *, kid_suffix: str = "dev") -> Path:
    """One key per service (kept if present; kid `<service>-<kid_suffix>`) and the key set of their
    public keys; returns the key set's path."""
    directory = Path(directory)
    for service in services:
        generate_key_file(dev_key_path(directory, service))
    document = keyset_document(
        {
            service: [(f"{service}-{kid_suffix}", load_private_key(dev_key_path(directory, service)).public_key())]
            for service in services
        }
    )
    path = directory / KEYSET_FILE
    write_keyset(path, document)
    return path


class KeySet:
    """The public key set file, re-read when it changes."""

    def __init__(self, path: Path, *, reload_seconds: float = 10.0, clock=time.monotonic):
        self.path = Path(path)
        self.reload_seconds = reload_seconds
        self._clock = clock
        self._keys: dict[tuple[str, str], Any] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def _load_if_changed(self) -> None:
        self._checked_at = self._clock()
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return
        document = json.loads(self.path.read_text())
        keys = {}
        for service, jwks in document.items():
            for jwk in jwks.get("keys", []):
                if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519" and jwk.get("kid"):
                    keys[(service, jwk["kid"])] = OKPAlgorithm.from_jwk(jwk)
        self._keys, self._stamp = keys, stamp

    def get(self, service: str, kid: str):
        """The public key `kid` of `service`, or None."""
        with self._lock:
            since = None if self._checked_at is None else self._clock() - self._checked_at
            unknown = (service, kid) not in self._keys  # an unknown kid looks again, at most once a second
            if since is None or since >= self.reload_seconds or (unknown and since >= min(1.0, self.reload_seconds)):
                try:
                    self._load_if_changed()
                except (OSError, ValueError, AttributeError):
                    if self._stamp is None:
                        raise ImproperlyConfigured(f"service key set {self.path} cannot be read") from None
                    # keep the keys we had: a half-mounted update must not refuse every call
            return self._keys.get((service, kid))


@lru_cache(maxsize=1)
def public_keys() -> KeySet:
    """The key set every service verifies callers with (SERVICE_PUBLIC_KEYS)."""
    path = getattr(settings, "SERVICE_PUBLIC_KEYS", "")
    if not path:
        raise ImproperlyConfigured("SERVICE_PUBLIC_KEYS is not set: this service cannot verify callers")
    _dev_keys_for(path)
    return KeySet(Path(path), reload_seconds=env_float("SERVICE_KEYS_RELOAD_SECONDS", 10.0))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--jwk":  # the public JWK of a private key, for the key set
        print(json.dumps(public_jwk(load_private_key(Path(sys.argv[3])).public_key(), sys.argv[2])))
    elif len(sys.argv) >= 2 and not sys.argv[1].startswith("-"):
        print(f"wrote {write_dev_keys(Path(sys.argv[1]), sys.argv[2:] or DEV_SERVICES)}")
    elif len(sys.argv) >= 4 and sys.argv[1] == "--kid-suffix":
        print(f"wrote {write_dev_keys(Path(sys.argv[3]), sys.argv[4:] or DEV_SERVICES, kid_suffix=sys.argv[2])}")
    else:
        sys.exit("usage: python -m shared.service_keys [--kid-suffix S] DIR [service ...] | --jwk KID key.pem")
