"""HMAC-SHA256 request signing between the bank app's backend and us, in both directions:
the bank signs its server-to-server calls, we sign the status webhooks we send it.

The signed string is `timestamp \\n nonce \\n METHOD \\n path?query \\n` followed by the raw body.
A receiver checks the signature, that the timestamp is within the tolerance, and that the nonce
has not been seen before (kept in Redis for longer than the tolerance): a captured request
replayed later is refused. `verify_request` is the reference a bank can port.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

HEADER_CLIENT = "X-Shuanglu-Client"
HEADER_TIMESTAMP = "X-Shuanglu-Timestamp"
HEADER_NONCE = "X-Shuanglu-Nonce"
HEADER_SIGNATURE = "X-Shuanglu-Signature"
PREFIX = "sha256="


class SignatureError(Exception):
    """The request is not signed correctly; `code` says how (for the problem document)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


def signature(secret: str, timestamp: str, nonce: str, method: str, path: str,
              body: bytes) -> str:
    message = f"{timestamp}\n{nonce}\n{method.upper()}\n{path}\n".encode() + body
    return PREFIX + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(client_id: str, secret: str, method: str, path: str, body: bytes,
                   now: int) -> dict[str, str]:
    timestamp = str(now)
    nonce = secrets.token_hex(16)
    return {
        HEADER_CLIENT: client_id, HEADER_TIMESTAMP: timestamp, HEADER_NONCE: nonce,
        HEADER_SIGNATURE: signature(secret, timestamp, nonce, method, path, body),
    }


@dataclass(frozen=True)
class NonceStore:
    """Remembers nonces in Redis; `claim` is true only the first time a nonce is seen."""

    redis: Redis
    namespace: str
    ttl_seconds: int

    async def claim(self, client_id: str, nonce: str) -> bool:
        key = f"{self.namespace}:{client_id}:{nonce}"
        return bool(await self.redis.set(key, 1, nx=True, ex=self.ttl_seconds))


async def verify_request(
    headers: Mapping[str, str], method: str, path: str, body: bytes, secret: str,
    nonces: NonceStore, tolerance_seconds: int, now: int,
) -> str:
    """Checks one signed request and returns its client id; raises `SignatureError`."""
    client_id = headers.get(HEADER_CLIENT, "")
    timestamp = headers.get(HEADER_TIMESTAMP, "")
    nonce = headers.get(HEADER_NONCE, "")
    given = headers.get(HEADER_SIGNATURE, "")
    if not (client_id and timestamp and nonce and given):
        raise SignatureError("signature_missing")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_seconds:
        raise SignatureError("timestamp_out_of_window")
    if not 16 <= len(nonce) <= 64 or not nonce.isalnum():
        raise SignatureError("nonce_invalid")
    expected = signature(secret, timestamp, nonce, method, path, body)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise SignatureError("signature_invalid")
    # Only a correctly signed request spends its nonce, so forgeries cannot burn real ones.
    if not await nonces.claim(client_id, nonce):
        raise SignatureError("nonce_replayed")
    return client_id


def sign_link(key: bytes, *parts: str) -> str:
    """A URL-safe signature for the bank deep link's parameters."""
    digest = hmac.new(key, "|".join(parts).encode(), hashlib.sha256).hexdigest()
    return digest[:48]


def link_signature_ok(key: bytes, given: str, *parts: str) -> bool:
    return hmac.compare_digest(sign_link(key, *parts), given)
