"""Encryption of personal data at rest (R-52): AES-256-GCM, and a keyed index for look-ups."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_VERSION = b"v1"


class DecryptionError(ValueError):
    """The ciphertext was altered or was written with another key."""


class FieldCipher:
    """Encrypts short text fields. The output is `v1.<base64(nonce + ciphertext)>`.

    The associated data binds a ciphertext to its column (e.g. "customer.id_number"), so a value
    copied into another column does not decrypt.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("field encryption key must be 32 bytes")
        self._aead = AESGCM(key)
        self._index_key = hmac.new(key, b"blind-index", hashlib.sha256).digest()

    def encrypt(self, plaintext: str, purpose: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead.encrypt(nonce, plaintext.encode("utf-8"), purpose.encode())
        return _VERSION.decode() + "." + base64.urlsafe_b64encode(nonce + sealed).decode()

    def decrypt(self, token: str, purpose: str) -> str:
        version, _, payload = token.partition(".")
        if version.encode() != _VERSION:
            raise DecryptionError("unknown ciphertext version")
        raw = base64.urlsafe_b64decode(payload)
        try:
            return self._aead.decrypt(raw[:12], raw[12:], purpose.encode()).decode("utf-8")
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not authenticate") from exc

    def encrypt_bytes(self, data: bytes, purpose: str) -> bytes:
        """Files (identity evidence, R-52): nonce + ciphertext, bound to `purpose`."""
        nonce = os.urandom(12)
        return _VERSION + nonce + self._aead.encrypt(nonce, data, purpose.encode())

    def decrypt_bytes(self, blob: bytes, purpose: str) -> bytes:
        if not blob.startswith(_VERSION):
            raise DecryptionError("unknown ciphertext version")
        raw = blob[len(_VERSION):]
        try:
            return self._aead.decrypt(raw[:12], raw[12:], purpose.encode())
        except InvalidTag as exc:
            raise DecryptionError("ciphertext does not authenticate") from exc

    def index(self, value: str) -> str:
        """A keyed hash for equality look-ups without storing the value."""
        return hmac.new(self._index_key, value.encode("utf-8"), hashlib.sha256).hexdigest()
