"""Password hashing with Argon2id (R-50).

Hashing and verifying cost about 0.15 s of one core each (RFC 9106's low-memory profile), so
the server does them in the CPU pool (`hash_password_async`, `verify_password_async`), never on
the event loop; the plain functions are for the CLI and the seed."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from security.cpu import run_cpu

_HASHER = PasswordHasher()  # stateless; parameters are RFC 9106's low-memory profile
# A valid hash of a random password, verified against when the user does not exist, so that
# unknown and known usernames take the same time.
_DUMMY_HASH = _HASHER.hash("not-a-real-password-0f3c9a")

MIN_PASSWORD_LENGTH = 10


class WeakPasswordError(ValueError):
    pass


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise WeakPasswordError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Verifies against the dummy hash when there is no user (the same cost either way)."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and bool(password_hash)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def hash_password_async(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:  # refused before it costs a core
        raise WeakPasswordError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    return await run_cpu(hash_password, password)


async def verify_password_async(password_hash: str | None, password: str) -> bool:
    return await run_cpu(verify_password, password_hash, password)
