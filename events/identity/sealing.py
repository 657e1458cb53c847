"""Sealing: private keys that the log records (a mesh's CA, token signing keys) are stored
encrypted with the control plane's secret key, never in the clear.

The secret key (a key-encryption key, 32 random bytes) lives outside the log: in a file of
the data dir (mode 0600, created by `meshlog up` at first start) or wherever the operator keeps
it (`--secret-key-file`, `MESHLOG_SECRET_KEY_FILE`). Whoever reads the log (a backup, a
stream mirror, a gateway) sees only sealed blobs; whoever holds the secret key and the log can
open them, so a replay or a new replica gets the very same keys (no CA is ever made twice).

A sealed blob is AES-256-GCM, with the purpose of the secret (`ca:<mesh>/<backend>`, ...) as
associated data, so a blob copied under another subject does not open:

    v1.<key id>.<base64url(nonce || ciphertext)>

The key id (the first 8 bytes of SHA-256 of the key, in hex) says which secret key sealed a
blob, so that opening with another key fails with a message naming both.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.errors import PermanentError
from events.identity.private_files import write_private

__all__ = ["SECRET_KEY_ENV", "SealedSecretError", "SecretKey"]

SECRET_KEY_ENV = "MESHLOG_SECRET_KEY_FILE"
_VERSION = "v1"
_NONCE = 12
_KEY_BYTES = 32


class SealedSecretError(PermanentError):
    """A sealed secret that cannot be opened: another secret key, another purpose, or damage.
    Never carries the secret itself."""


class SecretKey:
    """The key-encryption key of a control plane."""

    __slots__ = ("_aead", "key_id")

    def __init__(self, key: bytes) -> None:
        if len(key) != _KEY_BYTES:
            raise ValueError(f"a secret key is {_KEY_BYTES} bytes, got {len(key)}")
        self._aead = AESGCM(key)
        self.key_id = hashlib.sha256(key).hexdigest()[:16]

    def __repr__(self) -> str:  # never the key
        return f"SecretKey(key_id={self.key_id!r})"

    @classmethod
    def generate(cls) -> SecretKey:
        return cls(os.urandom(_KEY_BYTES))

    @classmethod
    def load(cls, path: Path) -> SecretKey:
        """The key in `path` (base64 text, as `create` writes it)."""
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise SealedSecretError(f"cannot read the secret key file {path}: "
                                    f"{exc.strerror or exc}") from exc
        try:
            key = base64.b64decode(text, validate=True)
        except ValueError as exc:
            raise SealedSecretError(f"the secret key file {path} is not base64") from exc
        if len(key) != _KEY_BYTES:
            raise SealedSecretError(
                f"the secret key file {path} holds {len(key)} bytes, not {_KEY_BYTES}")
        return cls(key)

    @classmethod
    def load_or_create(cls, path: Path) -> SecretKey:
        """The key in `path`, created (mode 0600) if the file does not exist. Two processes
        starting at once end with one key, and neither reads a half-written file: the key is
        written to a file of its own, then linked to `path`, which fails if another won."""
        if not path.exists():
            write_private(path, base64.b64encode(os.urandom(_KEY_BYTES)) + b"\n",
                          replace=False)
        return cls.load(path)

    def seal(self, secret: bytes, *, purpose: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self._aead.encrypt(nonce, secret, purpose.encode())
        body = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{_VERSION}.{self.key_id}.{body}"

    def open(self, sealed: str, *, purpose: str) -> bytes:
        try:
            version, key_id, body = sealed.split(".")
        except ValueError:
            raise SealedSecretError(f"the sealed {purpose} is not v1.<key id>.<data>") from None
        if version != _VERSION:
            raise SealedSecretError(f"the sealed {purpose} has version {version!r}, not v1")
        if key_id != self.key_id:
            raise SealedSecretError(
                f"the {purpose} was sealed with secret key {key_id}; this control plane has "
                f"{self.key_id} (pass the data dir's secret.key with --secret-key-file)")
        try:
            raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
            return self._aead.decrypt(raw[:_NONCE], raw[_NONCE:], purpose.encode())
        except (ValueError, InvalidTag):
            raise SealedSecretError(
                f"the sealed {purpose} does not open with secret key {self.key_id} "
                "(damaged, or sealed for another purpose)") from None
