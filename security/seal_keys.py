"""Per-institution seal keys (R-31): the keyring that signs each sealed manifest with the key of
the session's institution.

Custody. The private key is stored in the database encrypted with the app's field cipher
(AES-256-GCM, `FieldCipher.encrypt_bytes`), bound to its key id as associated data, rather than
in a key folder with mode 0600. Reasons: the sealer runs wherever the worker runs (the server or
`python -m app worker`, possibly on several hosts), and the database is the one store they all
share; creating the first key of an institution and rotating it are then one transaction with
the institution's row locked, so there is never more than one active key; a database backup
carries the keys only in encrypted form, and the field key (already the secret that protects
personal data, kept outside the database) is needed to use them. The price: whoever holds the
field key and the database can sign. Production should keep the private half in a KMS or HSM;
`SealKeyring` / `SealSigner` are the seam for that (a keyring whose signer calls the KMS, with
`SealKey.custody` naming it and `private_key_enc` holding the KMS key reference).

Every creation and rotation is written to the audit log in the same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tortoise.backends.base.client import BaseDBAsyncClient

from models.org import Institution
from models.seal_keys import SealKey, SealKeyStatus
from security import audit
from security.audit import Actor
from security.crypto import FieldCipher
from security.seal_manifest import ALGORITHM, key_id_of, public_key_b64

CUSTODY_DATABASE = "db-aesgcm"


def _purpose(key_id: str) -> str:
    return f"seal_key.private:{key_id}"


class SealSigner(Protocol):
    """Signs manifests with one institution key; never reveals the private half."""

    @property
    def key_id(self) -> str: ...
    @property
    def public_key(self) -> str: ...
    @property
    def institution_code(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class SealKeyring(Protocol):
    """Where institution keys live (the database here; a KMS/HSM in production)."""

    async def signer_for(self, conn: BaseDBAsyncClient, institution_id: int,
                         actor: Actor) -> SealSigner: ...

    async def rotate(self, conn: BaseDBAsyncClient, institution_id: int,
                     actor: Actor) -> SealKey: ...


@dataclass(frozen=True)
class _LocalSigner:
    key_id: str
    public_key: str
    institution_code: str
    _private: Ed25519PrivateKey

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def __repr__(self) -> str:  # never print the key
        return f"SealSigner({self.institution_code}, {self.key_id})"


class DatabaseKeyring:
    """Keys in the `seal_key` table, private halves encrypted with the field cipher."""

    def __init__(self, cipher: FieldCipher,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._cipher = cipher
        self._clock = clock

    async def _locked_institution(self, conn: BaseDBAsyncClient,
                                  institution_id: int) -> Institution:
        # The institution's row lock serialises key creation, rotation and signing on
        # PostgreSQL (SQLite serialises writers anyway): one active key, never a retired one.
        return await Institution.select_for_update().using_db(conn).get(id=institution_id)

    async def _create(self, conn: BaseDBAsyncClient, institution: Institution, actor: Actor,
                      action: str, details: dict[str, Any]) -> SealKey:
        private = Ed25519PrivateKey.generate()
        public = public_key_b64(private)
        key_id = key_id_of(public)
        raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        encrypted = self._cipher.encrypt_bytes(raw, _purpose(key_id)).hex()
        key = await SealKey.create(
            institution_id=institution.id, key_id=key_id, algorithm=ALGORITHM,
            public_key=public, custody=CUSTODY_DATABASE, private_key_enc=encrypted,
            status=SealKeyStatus.ACTIVE, created_at=self._clock(),
            created_by=actor.label or actor.kind, using_db=conn,
        )
        await audit.record(conn, actor, action, object_type="institution",
                           object_id=institution.code,
                           details={"key_id": key_id, "public_key": public, **details})
        return key

    def _signer(self, key: SealKey, institution: Institution) -> _LocalSigner:
        if key.custody != CUSTODY_DATABASE:
            raise RuntimeError(f"seal key {key.key_id} is held by {key.custody}, "
                               "which this keyring cannot use")
        raw = self._cipher.decrypt_bytes(bytes.fromhex(key.private_key_enc),
                                         _purpose(key.key_id))
        return _LocalSigner(key.key_id, key.public_key, institution.code,
                            Ed25519PrivateKey.from_private_bytes(raw))

    async def signer_for(self, conn: BaseDBAsyncClient, institution_id: int,
                         actor: Actor) -> SealSigner:
        """The institution's active key; created on first use (and audited)."""
        institution = await self._locked_institution(conn, institution_id)
        key = await SealKey.filter(institution_id=institution_id,
                                   status=SealKeyStatus.ACTIVE).using_db(conn).first()
        if key is None:
            key = await self._create(conn, institution, actor, "seal_key.create",
                                     {"reason": "first use"})
        return self._signer(key, institution)

    async def rotate(self, conn: BaseDBAsyncClient, institution_id: int,
                     actor: Actor) -> SealKey:
        """Retires the active key (kept for verification) and creates a new active one."""
        institution = await self._locked_institution(conn, institution_id)
        retired = []
        for old in await SealKey.filter(institution_id=institution_id,
                                        status=SealKeyStatus.ACTIVE).using_db(conn):
            old.status = SealKeyStatus.RETIRED
            old.retired_at = self._clock()
            await old.save(using_db=conn, update_fields=["status", "retired_at"])
            retired.append(old.key_id)
        return await self._create(conn, institution, actor, "seal_key.rotate",
                                  {"retired": retired})


def key_view(key: SealKey) -> dict[str, Any]:
    """The public facts of one key: never the private half, encrypted or not."""
    return {
        "key_id": key.key_id, "algorithm": key.algorithm, "public_key": key.public_key,
        "status": key.status.value, "created_at": key.created_at.isoformat(),
        "retired_at": key.retired_at.isoformat() if key.retired_at else None,
    }


async def published_keyring(institution: Institution,
                            conn: BaseDBAsyncClient | None = None) -> dict[str, Any]:
    """The institution's public keys, as the API publishes them and an export embeds them;
    `python -m app verify-archive --keyring FILE` reads this document."""
    query = SealKey.filter(institution_id=institution.id).order_by("id")
    keys = await (query.using_db(conn) if conn is not None else query)
    return {
        "institution": {"code": institution.code, "name": institution.name},
        "algorithm": ALGORITHM,
        "keys": [key_view(k) for k in keys],
    }
