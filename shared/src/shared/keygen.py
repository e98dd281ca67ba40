"""Ed25519 signing keys for access tokens: `python -m shared.keygen path/to/key.pem`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def generate_key_file(path: Path) -> bool:
    """Write a new Ed25519 PKCS#8 key unless one is there (atomic: safe with workers racing).
    Returns True when it wrote one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    return True


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("jwt-signing-key.pem")
    print(f"{'wrote' if generate_key_file(target) else 'kept existing'} {target}")
