"""Pseudonymization keys: where they come from, how they are used, how they are named.

A key is secret bytes (>= 32) read from a file or from an environment variable - never from a
command-line value, which would land in shell history and process listings. It is never written to
an output, a log or MLflow; it is named only by its fingerprint (a one-way hash of the key).

Every use is domain-separated: ``hmac_hex(key, "uid", value)`` and ``hmac_hex(key, "subject", value)``
never collide, so a pseudonym from one context cannot be replayed in another.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from medgen.errors import KeyRequiredError

ENV_KEY = "MEDGEN_KEY"  # the key itself (hex, or base64 with a "b64:" prefix)
ENV_KEY_FILE = "MEDGEN_KEY_FILE"  # a path to a key file
MIN_KEY_BYTES = 32


@dataclass(frozen=True)
class Key:
    secret: bytes
    source: str  # "file" | "env" | "created" - never the value

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(b"medgen-key-fingerprint\x00" + self.secret).hexdigest()[:16]

    def __repr__(self) -> str:  # never show the secret
        return f"Key(fingerprint={self.fingerprint}, source={self.source})"

    __str__ = __repr__

    def digest(self, domain: str, value: str | bytes) -> bytes:
        data = value.encode("utf-8") if isinstance(value, str) else value
        return hmac.new(self.secret, domain.encode() + b"\x00" + data, hashlib.sha256).digest()

    def hex(self, domain: str, value: str | bytes, n: int = 64) -> str:
        return self.digest(domain, value).hex()[:n]


def _decode(text: str) -> bytes:
    text = text.strip()
    if text.startswith("b64:"):
        raw = base64.b64decode(text[4:])
    else:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = text.encode("utf-8")
    return raw


def _checked(raw: bytes, where: str) -> bytes:
    if len(raw) < MIN_KEY_BYTES:
        raise KeyRequiredError(where, f"key is shorter than {MIN_KEY_BYTES} bytes")
    return raw


def create_key_file(path: str | Path) -> Key:
    """Create a new random key file (mode 0600) and return the key. Refuses to overwrite."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = secrets.token_bytes(32)
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(raw.hex() + "\n")
    return Key(raw, "created")


def load_key(key_file: str | Path | None = None, *, create: bool = False) -> Key:
    """Resolve the key: explicit file, then $MEDGEN_KEY_FILE, then $MEDGEN_KEY.

    With ``create=True`` and an explicit ``key_file`` that does not exist yet, a new key is made
    there. Otherwise a missing key raises :class:`KeyRequiredError`.
    """
    if key_file is not None:
        p = Path(key_file)
        if p.exists():
            return Key(_checked(_decode(p.read_text()), p.name), "file")
        if create:
            return create_key_file(p)
        raise KeyRequiredError(p.name, "key file does not exist (use --create-key to make one)")
    env_file = os.environ.get(ENV_KEY_FILE)
    if env_file:
        p = Path(env_file)
        if not p.exists():
            raise KeyRequiredError(ENV_KEY_FILE, "points at a file that does not exist")
        return Key(_checked(_decode(p.read_text()), ENV_KEY_FILE), "file")
    env_val = os.environ.get(ENV_KEY)
    if env_val:
        return Key(_checked(_decode(env_val), ENV_KEY), "env")
    raise KeyRequiredError(
        None, f"no pseudonymization key: pass --key-file, or set ${ENV_KEY_FILE} or ${ENV_KEY}"
    )
