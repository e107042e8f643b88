"""Sealing a session (R-31): the timeline, acknowledgements, signatures and recording segments
are hashed into a chain, and the manifest is signed with the Ed25519 key of the session's
institution (manifest version 3; `security.seal_keys`).

Sealing fails closed (R-30, R-31): every registered file is checked before anything is signed.
A file that is missing, unreadable, of another size than registered, or whose SHA-256 is not
the one registered when it was written stops the seal: a completed session goes to
`evidence_incomplete` (timeline event, audit entry, alert to the branch's supervisors) and the
sweep tries again, so a file restored on the shared storage is sealed on the next sweep.
Aborted and expired sessions that recorded anything are sealed too, as incomplete (`complete:
false` in the signed body, with how and why they ended); their state stays.

`verify_session` recomputes the items from the database and the stored files and gives one of
four verdicts (intact, incomplete, altered, not sealed), naming what is missing or altered; the
manifest itself (hashing, chain, signature) is checked by `security.seal_manifest`, the same
code that verifies an exported archive offline (`archive.offline`). Version-1 manifests, signed
with the platform key (`deps.seal_key`), still verify against that key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from redis.exceptions import RedisError
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from models.archive import Tombstone
from models.org import Institution
from models.people import Role, User
from models.seal_keys import SealKey
from models.sessions import (
    Acknowledgement,
    AnswerValue,
    Recording,
    RecordingSession,
    SessionEvent,
    SessionState,
    Signature,
)
from security import audit
from security.audit import Actor
from security.seal_keys import DatabaseKeyring, SealKeyring
from security.seal_manifest import (
    ALGORITHM,
    ItemDifference,
    ItemStatus,
    TrustedKey,
    VerifyStatus,
    chain,
    check_chain,
    check_signature,
    compare_items,
    manifest_gaps,
    sha_json,
)
from security.seal_manifest import public_key_b64 as _public_key_b64
from security.seal_manifest import sign as sign_body
from storage import ObjectMissing, ObjectStore
from workflow.core import Unit, WorkflowDeps, locked, require_state
from workflow.errors import Conflict
from workflow.event_types import EventType
from workflow.states import ENDED_EARLY, STATE_LABELS_ZH
from workflow.steps import steps_of

log = logging.getLogger(__name__)
MANIFEST_VERSION = 3
SEALER = Actor.system("sealer")
NO_ANSWER = "none"  # a script step that needs no answer (workflow.call.NO_ANSWER)


def public_key_b64(seal_key: bytes) -> str:
    """The public half of the platform key (version-1 manifests)."""
    return _public_key_b64(Ed25519PrivateKey.from_private_bytes(seal_key))


# --- The evidence files and their checks ---------------------------------------------------


@dataclass(frozen=True)
class EvidenceFile:
    """A registered file: its manifest item name, where it is stored, and what was registered
    when it was written (a signature has no registered size)."""

    name: str
    path: str
    sha256: str
    size_bytes: int | None


class FileProblem(StrEnum):
    MISSING = "missing"
    UNREADABLE = "unreadable"
    SIZE_DIFFERS = "size_differs"
    HASH_DIFFERS = "hash_differs"


@dataclass(frozen=True)
class FileCheck:
    """What one registered file looks like now: its SHA-256 when it was hashed, else None."""

    file: EvidenceFile
    sha256: str | None = None
    problem: FileProblem | None = None
    detail: str = ""

    def describe(self) -> str:
        return f"{self.file.name}: {self.detail}"

    def as_data(self) -> dict[str, str]:
        return {"item": self.file.name, "path": self.file.path,
                "problem": self.problem.value if self.problem else "", "detail": self.detail}


def _stat(storage: ObjectStore, f: EvidenceFile) -> FileCheck | None:
    """The cheap checks first (exists, readable, registered size: a stat, or a HEAD on S3);
    None when they pass."""
    what = f"file {f.path}"
    try:
        info = storage.stat_sync(f.path)
        if info is None:
            return FileCheck(f, problem=FileProblem.MISSING, detail=f"{what} is missing")
        size = info.size_bytes
        own = storage.local_path(f.path)
        if own is not None:
            with own.open("rb"):
                pass
    except FileNotFoundError:
        return FileCheck(f, problem=FileProblem.MISSING, detail=f"{what} is missing")
    except (OSError, ValueError) as exc:
        return FileCheck(f, problem=FileProblem.UNREADABLE,
                         detail=f"{what} cannot be read ({type(exc).__name__})")
    if f.size_bytes is not None and size != f.size_bytes:
        return FileCheck(f, problem=FileProblem.SIZE_DIFFERS,
                         detail=f"{what} is {size} bytes, {f.size_bytes} were registered when "
                                f"it was written")
    return None


def _hash(storage: ObjectStore, f: EvidenceFile) -> FileCheck:
    what = f"file {f.path}"
    try:
        digest = storage.sha256_sync(f.path)  # the content as stored now, in 1 MiB chunks
        if digest is None:
            raise ObjectMissing(f.path)
    except FileNotFoundError:
        return FileCheck(f, problem=FileProblem.MISSING, detail=f"{what} is missing")
    except (OSError, ValueError) as exc:
        return FileCheck(f, problem=FileProblem.UNREADABLE,
                         detail=f"{what} cannot be read ({type(exc).__name__})")
    if digest != f.sha256:
        registered = ("the image stored at signing" if f.name.startswith("signature:")
                      else "what was registered when it was written")
        return FileCheck(f, digest, FileProblem.HASH_DIFFERS,
                         f"{what} differs from {registered} (SHA-256)")
    return FileCheck(f, digest)


def check_files(storage: ObjectStore, files: list[EvidenceFile]) -> dict[EvidenceFile, FileCheck]:
    """Blocking (run it in the store's threads: `storage.run`). Every file is looked at
    (exists, readable, size) before any is hashed; while one is missing or short nothing is
    hashed, so a session waiting for a file costs the sweep a few stat calls (HEAD requests on
    S3), not a re-read of its recordings (the files that passed are then returned unhashed:
    sha256 None, no problem)."""
    looked = {f: _stat(storage, f) for f in files}
    if any(looked.values()):
        return {f: check or FileCheck(f) for f, check in looked.items()}
    return {f: _hash(storage, f) for f in files}


def _problems(checks: dict[EvidenceFile, FileCheck]) -> list[FileCheck]:
    return [c for c in checks.values() if c.problem is not None]


async def evidence_files(session_id: UUID,
                         conn: BaseDBAsyncClient | None = None) -> list[EvidenceFile]:
    """The session's registered files in manifest order: signatures, then recordings by kind
    and segment."""
    signatures = await Signature.filter(session_id=session_id).using_db(conn).order_by("id")
    recordings = await Recording.filter(session_id=session_id).using_db(conn).order_by(
        "kind", "segment")
    return ([f for s in signatures for f in (
                EvidenceFile(f"signature:{s.image_path}", s.image_path, s.image_sha256, None),
                # the strokes the signature or hand-copy was written with.
                EvidenceFile(f"strokes:{s.strokes_path}", s.strokes_path, s.strokes_sha256, None),
            ) if f.path]
            + [EvidenceFile(f"recording:{r.kind}:{r.segment}", r.path, r.sha256, r.size_bytes)
               for r in recordings])


# --- The hashed data -------------------------------------------------------------------------


@dataclass
class SessionEvidence:
    """What a manifest covers: the timeline and the acknowledgements exactly as hashed, and
    the registered files."""

    timeline: list[dict[str, Any]]
    acknowledgements: list[dict[str, Any]]
    files: list[EvidenceFile] = field(default_factory=list)

    def items(self, file_hashes: dict[str, str | None]) -> list[dict[str, Any]]:
        """The manifest items; a file's hash comes from `file_hashes` (None: no data)."""
        return [{"name": "timeline", "sha256": sha_json(self.timeline)},
                {"name": "acknowledgements", "sha256": sha_json(self.acknowledgements)},
                *({"name": f.name, "sha256": file_hashes.get(f.name)} for f in self.files)]


async def session_evidence(session_id: UUID, conn: BaseDBAsyncClient,
                           upto_seq: int) -> SessionEvidence:
    events = await SessionEvent.filter(session_id=session_id, seq__lte=upto_seq).using_db(
        conn).order_by("seq")
    acks = await Acknowledgement.filter(session_id=session_id).using_db(conn).order_by("id")
    timeline = [
        {"seq": e.seq, "type": e.type, "from": e.from_state, "to": e.to_state,
         "actor": e.actor_kind, "actor_id": e.actor_id, "ip": e.ip, "at": e.at.isoformat(),
         "data": e.data}
        for e in events
    ]
    # A spoken answer also seals what was heard; button answers keep their old shape, so
    # manifests sealed before spoken answers existed still verify.
    acknowledgements = [
        {"step_id": a.step_id, "answer": a.answer.value, "kind": a.answer_kind,
         "offset_ms": a.offset_ms, "at": a.at.isoformat(),
         **({"speech": a.speech} if a.speech else {})} for a in acks
    ]
    return SessionEvidence(timeline, acknowledgements, await evidence_files(session_id, conn))


async def has_evidence(session: RecordingSession, conn: BaseDBAsyncClient | None = None) -> bool:
    """Anything was recorded: the recording clock started, or a segment or signature exists."""
    if session.recording_started_at is not None:
        return True
    return (await Recording.filter(session_id=session.id).using_db(conn).exists()
            or await Signature.filter(session_id=session.id).using_db(conn).exists())


async def _never_recorded(session: RecordingSession, conn: BaseDBAsyncClient,
                          files: list[EvidenceFile]) -> list[str]:
    """What a completed session would have and this one (ended early) does not."""
    missing = []
    if not any(f.name.startswith("recording:") for f in files):
        missing.append("recording")
    answered = set(await Acknowledgement.filter(
        session_id=session.id, answer=AnswerValue.AFFIRMATIVE).using_db(conn).values_list(
        "step_id", flat=True))
    missing += [f"acknowledgement:{step.id}" for step in steps_of(session)
                if step.answer != NO_ANSWER and step.id not in answered]
    if not any(f.name.startswith("signature:") for f in files):
        missing.append("signature")
    return missing


# --- Sealing ----------------------------------------------------------------------------------


@dataclass
class SealOutcome:
    session: RecordingSession
    sealed: bool
    complete: bool
    problems: list[FileCheck] = field(default_factory=list)


async def seal(
    deps: WorkflowDeps, session_id: UUID, keyring: SealKeyring | None = None
) -> SealOutcome:
    """completed (or evidence_incomplete) → sealed → qa_pending, or → evidence_incomplete when
    a file fails its check; an aborted or expired session with evidence is sealed as
    incomplete and keeps its state. One transaction; the manifest is signed with the active
    key of the session's institution (created on first use).

    The files are hashed before the session's row lock is taken and off the event loop; under
    the lock the registered rows are read again and any row not hashed yet (none, unless one
    was registered meanwhile) is checked there."""
    keys = keyring or DatabaseKeyring(deps.cipher, deps.clock)
    files = await evidence_files(session_id)
    checks = await deps.storage.run(check_files, deps.storage, files)
    alert: dict[str, Any] | None = None
    async with locked(deps, session_id, None) as unit:
        session = unit.session
        ended_early = session.state in ENDED_EARLY
        if ended_early:
            require_state(session, "seal_incomplete")
            if session.sealed_at is not None:
                raise Conflict("already_sealed", "该录制会话已封存")
            if not await has_evidence(session, unit.conn):
                raise Conflict("nothing_to_seal", "该录制会话没有任何录制内容，无需封存")
        else:
            require_state(session, "seal")
        files = await evidence_files(session_id, unit.conn)
        late = [f for f in files if f not in checks]
        if late:
            checks = {**checks, **await deps.storage.run(check_files, deps.storage, late)}
        checks = {f: checks[f] for f in files}
        problems = _problems(checks)
        if not problems and any(c.sha256 is None for c in checks.values()):
            # Looked at before a late row was (stat only): hash everything now.
            checks = await deps.storage.run(check_files, deps.storage, files)
            problems = _problems(checks)
        if problems:
            alert = await _refuse(unit, problems)
            outcome = SealOutcome(session, sealed=False, complete=not ended_early,
                                  problems=problems)
        else:
            await _sign(unit, keys, {f.name: c.sha256 for f, c in checks.items()}, ended_early)
            outcome = SealOutcome(session, sealed=True, complete=not ended_early)
    if alert is not None:
        try:
            await deps.publisher.publish(session_id, alert)
        except (ConnectionError, OSError, RedisError):
            log.warning("could not publish the evidence alert of session %s", session_id)
    return outcome


async def _sign(unit: Unit, keys: SealKeyring, file_hashes: dict[str, str | None],
                ended_early: bool) -> None:
    session = unit.session
    end = session.state.value if ended_early else "completed"
    # The sealing event itself is part of the timeline that is hashed.
    if ended_early:
        await unit.move(SEALER, session.state, EventType.SEALED,
                        {"complete": False, "end": end, "reason": session.end_reason})
    else:
        await unit.move(SEALER, SessionState.SEALED, EventType.SEALED)
    upto = session.event_seq
    signer = await keys.signer_for(unit.conn, session.institution_id, SEALER)
    evidence = await session_evidence(session.id, unit.conn, upto)
    items = evidence.items(file_hashes)
    sealed_at = unit.deps.clock()
    missing = await _never_recorded(session, unit.conn, evidence.files) if ended_early else []
    body = {"version": MANIFEST_VERSION, "session_id": str(session.id), "items": items,
            "chain": chain(items), "script_hash": session.script_hash,
            "timeline_upto_seq": upto, "institution": signer.institution_code,
            "key_id": signer.key_id, "public_key": signer.public_key,
            "algorithm": ALGORITHM, "sealed_at": sealed_at.isoformat(),
            "complete": not ended_early, "end": end,
            "reason": session.end_reason if ended_early else "", "missing": missing}
    session.manifest = sign_body(body, signer.sign)
    session.sealed_at = sealed_at
    if not ended_early:
        await unit.move(SEALER, SessionState.QA_PENDING, EventType.SUBMITTED_TO_QA)


async def _refuse(unit: Unit, problems: list[FileCheck]) -> dict[str, Any] | None:
    """Nothing is signed. The refusal goes on the timeline and in the audit log, and the
    returned alert is published to staff; a retry that finds the same problems adds nothing."""
    session = unit.session
    data = {"problems": [p.as_data() for p in problems]}
    if session.state == SessionState.COMPLETED:
        await unit.move(SEALER, SessionState.EVIDENCE_INCOMPLETE,
                        EventType.EVIDENCE_INCOMPLETE, data)
    else:
        last = await SessionEvent.filter(session_id=session.id,
                                         type=EventType.EVIDENCE_INCOMPLETE).using_db(
            unit.conn).order_by("-seq").first()
        if last is not None and last.data.get("problems") == data["problems"]:
            return None
        state = session.state.value
        await unit.event(SEALER, EventType.EVIDENCE_INCOMPLETE, data, state, state)
        await audit.record(unit.conn, SEALER, "session.evidence_incomplete",
                           object_type="session", object_id=str(session.id),
                           details={"from": state, "to": state, **data})
    supervisors = await User.filter(role=Role.SUPERVISOR, branch_id=session.branch_id,
                                    active=True).using_db(unit.conn).values_list("id", flat=True)
    await audit.record(unit.conn, SEALER, "session.evidence_alert", object_type="session",
                       object_id=str(session.id),
                       details={"branch_id": session.branch_id,
                                "supervisors": sorted(supervisors),
                                "items": [p.file.name for p in problems]})
    log.error("session %s not sealed, evidence incomplete: %s", session.id,
              "; ".join(p.describe() for p in problems))
    return {
        # Staff only (api.routes_live does not forward events without a seq to customers).
        "type": "evidence_incomplete_alert", "audience": "supervisor",
        "branch_id": session.branch_id, "session_id": str(session.id),
        "state": session.state.value, "state_label": STATE_LABELS_ZH[session.state],
        "message": f"录制证据不完整，暂不能封存：{len(problems)} 个文件缺失或与登记不一致，"
                   f"请检查存储；文件恢复后系统将自动重新封存",
        "problems": data["problems"], "at": unit.deps.clock().isoformat(),
    }


# --- Verification ----------------------------------------------------------------------------


async def trusted_keys_for(deps: WorkflowDeps, session: RecordingSession,
                           manifest: dict[str, Any]) -> list[TrustedKey]:
    """What the database says the manifest must be signed with: the platform key for version
    1; from version 2 on, the key of the session's institution that the manifest names."""
    if manifest.get("version") == 1:
        return [TrustedKey(public_key=public_key_b64(deps.seal_key))]
    institution = await Institution.get(id=session.institution_id)
    keys = await SealKey.filter(institution_id=institution.id,
                                key_id=str(manifest.get("key_id", "")))
    return [TrustedKey(public_key=k.public_key, key_id=k.key_id, institution=institution.code,
                       retired_at=k.retired_at.isoformat() if k.retired_at else None)
            for k in keys]


def describe_for_database(difference: ItemDifference) -> str:
    if difference.status == ItemStatus.ADDED:
        return f"{difference.name} was added after sealing"
    if difference.status == ItemStatus.MISSING:
        return f"{difference.name} is missing (sealed, now gone)"
    return f"{difference.name} was altered"


@dataclass
class Verification:
    """The verdict on one session. `altered` names what changed after sealing; `incomplete`
    what is missing and why (an incomplete manifest, or sealing refused)."""

    session_id: UUID
    state: SessionState
    status: VerifyStatus
    altered: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    complete: bool | None = None  # what the manifest says; None when not sealed
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == VerifyStatus.INTACT

    @property
    def problems(self) -> list[str]:
        """Every reason the session is not intact, one sentence each."""
        if self.status == VerifyStatus.NOT_SEALED:
            return [f"session is not sealed yet (state: {self.state.value})"]
        return [*self.altered, *self.incomplete]


async def verify_session(deps: WorkflowDeps, session_id: UUID) -> Verification:
    session = await RecordingSession.get(id=session_id)
    manifest = session.manifest
    result = Verification(session_id, session.state, VerifyStatus.NOT_SEALED)
    if not manifest:
        return await _unsealed(deps, session, result)
    result.altered = check_signature(manifest, await trusted_keys_for(deps, session, manifest))
    result.altered += check_chain(manifest)
    async with in_transaction() as conn:
        current = await session_evidence(session_id, conn,
                                         int(manifest.get("timeline_upto_seq", 0)))
    hashes = await deps.storage.run(_hash_all, deps.storage, current.files)
    actual = {i["name"]: i["sha256"] for i in current.items(hashes)}
    result.altered += [describe_for_database(d)
                       for d in compare_items(manifest.get("items") or [], actual)]
    result.incomplete = manifest_gaps(manifest)
    result.complete = not result.incomplete
    result.status = (VerifyStatus.ALTERED if result.altered
                     else VerifyStatus.INCOMPLETE if result.incomplete else VerifyStatus.INTACT)
    return result


def _hash_all(storage: ObjectStore, files: list[EvidenceFile]) -> dict[str, str | None]:
    hashes: dict[str, str | None] = {}
    for f in files:
        try:
            hashes[f.name] = storage.sha256_sync(f.path)
        except (OSError, ValueError):
            hashes[f.name] = None
    return hashes


async def _unsealed(deps: WorkflowDeps, session: RecordingSession,
                    result: Verification) -> Verification:
    label = f"{session.state.value} ({STATE_LABELS_ZH[session.state]})"
    if session.sealed_at is not None and await Tombstone.exists(session_id=session.id):
        result.status = VerifyStatus.INCOMPLETE
        result.incomplete = ["the session's evidence was deleted under the retention policy; "
                             "its manifest is kept in the tombstone"]
        return result
    refused = await SessionEvent.exists(session_id=session.id, type=EventType.EVIDENCE_INCOMPLETE)
    if session.state == SessionState.EVIDENCE_INCOMPLETE or (
            refused and session.state in ENDED_EARLY):
        checks = await deps.storage.run(check_files, deps.storage,
                                        await evidence_files(session.id))
        result.status = VerifyStatus.INCOMPLETE
        result.incomplete = [f"not sealed: {c.describe()}" for c in _problems(checks)] or [
            "not sealed: sealing was refused, but every file checks now; the next sweep seals "
            "the session"]
        return result
    if session.state in ENDED_EARLY and not await has_evidence(session):
        result.notes.append(f"state {label}: nothing was recorded, so there is nothing to seal")
    elif session.state in ENDED_EARLY or session.state == SessionState.COMPLETED:
        result.notes.append(f"state {label}: the background sweep seals it shortly")
    else:
        result.notes.append(f"state {label}: a session is sealed once it is completed, aborted "
                            f"or expired")
    return result


async def verify_manifest(deps: WorkflowDeps, session_id: UUID) -> list[str]:
    """Every reason the session is not intact; an empty list means sealed, complete and
    unaltered (see `verify_session` for the verdict itself)."""
    return (await verify_session(deps, session_id)).problems
