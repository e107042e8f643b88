"""Exporting a sealed session as a self-contained archive (R-31, R-42), verifiable offline with
`python -m app verify-archive` (`archive.offline`) or by hand with sha256sum and any Ed25519
tool.

Layout (a folder, or the same files in a .zip):

    manifest.json          the manifest exactly as sealed (signed)
    timeline.json          the timeline as hashed: canonical JSON, so its SHA-256 is the
    acknowledgements.json  manifest's item hash (likewise the acknowledgements)
    signatures/<file>      signature images and the strokes they were written with (JSON)
    recordings/<kind>/<segment>.<ext>   recording segments
    keys/<CODE>.json       the institution's published public keys (or the platform key)
    index.json             which file holds which manifest item (not signed: every file is
                           checked against the signed hash anyway)
    README.txt             how to verify, in Chinese and English

Personal data: the items are exported exactly as sealed, because they must re-hash to the
manifest. That means the recordings (faces, voices) and signature images of the customer, and a
timeline with the IP addresses and ids of the actors and any free text typed into events (the
reason of an interruption or abort). The customer's name, ID number and phone are not in any
sealed item, and the identity uploads (ID card photos, liveness clips) are not exported.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from uuid import UUID

from tortoise.transactions import in_transaction

from archive.offline import ARCHIVE_FORMAT, INDEX, KEYS_DIR, MANIFEST, README
from models.org import Institution
from models.sessions import RecordingSession
from security.seal_keys import published_keyring
from security.seal_manifest import ALGORITHM, canonical_json, key_id_of
from storage import ObjectStore
from workflow.core import WorkflowDeps
from workflow.sealing import public_key_b64, session_evidence


class NotSealed(ValueError):
    """The session has no manifest yet."""


@dataclass
class ExportPlan:
    """Everything an archive holds: small files in memory, evidence objects by their key in
    `store` (streamed into the archive by the writers, which run in a worker thread)."""

    session_id: str
    blobs: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # archive path -> object key
    store: ObjectStore | None = None

    @property
    def members(self) -> list[str]:
        return sorted({*self.blobs, *self.files})


def _archive_path(name: str, storage_path: str) -> str:
    suffix = "".join(PurePosixPath(storage_path).suffixes)
    if name.startswith("recording:"):
        _, kind, segment = name.split(":", 2)
        return f"recordings/{kind}/{int(segment):05d}{suffix}"
    return f"signatures/{PurePosixPath(storage_path).name}"


async def plan_export(deps: WorkflowDeps, session_id: UUID, exported_at: datetime) -> ExportPlan:
    session = await RecordingSession.get_or_none(id=session_id)
    if session is None or not session.manifest:
        raise NotSealed(f"session {session_id} is not sealed")
    manifest = session.manifest
    async with in_transaction() as conn:
        data = await session_evidence(session_id, conn, int(manifest["timeline_upto_seq"]))
        institution = await Institution.get(id=session.institution_id, using_db=conn)
        if manifest.get("version", 1) >= 2:
            keyring = await published_keyring(institution, conn)
            key_file = f"{KEYS_DIR}/{institution.code}.json"
        else:
            platform = public_key_b64(deps.seal_key)
            keyring = {"institution": {"code": "", "name": "platform"}, "algorithm": ALGORITHM,
                       "keys": [{"key_id": key_id_of(platform), "public_key": platform,
                                 "status": "platform"}]}
            key_file = f"{KEYS_DIR}/platform.json"
    plan = ExportPlan(str(session_id), store=deps.storage)
    plan.blobs[MANIFEST] = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
    # The exact bytes that were hashed: sha256sum of these files equals the manifest's hash.
    plan.blobs["timeline.json"] = canonical_json(data.timeline)
    plan.blobs["acknowledgements.json"] = canonical_json(data.acknowledgements)
    items = {"timeline": "timeline.json", "acknowledgements": "acknowledgements.json"}
    for evidence in data.files:
        target = _archive_path(evidence.name, evidence.path)
        items[evidence.name] = target
        if await deps.storage.exists(evidence.path):
            # A file gone from storage stays in the index: verification names it missing.
            plan.files[target] = evidence.path
    plan.blobs[key_file] = json.dumps(keyring, ensure_ascii=False, indent=2).encode()
    index: dict[str, Any] = {
        "format": ARCHIVE_FORMAT, "session_id": str(session_id),
        "institution": manifest.get("institution", institution.code),
        "manifest_version": manifest.get("version"), "exported_at": exported_at.isoformat(),
        "items": items, "keys": [key_file],
    }
    plan.blobs[INDEX] = json.dumps(index, ensure_ascii=False, indent=2).encode()
    plan.blobs[README] = readme(str(session_id), institution.code, key_file).encode()
    return plan


def write_folder(plan: ExportPlan, dest: Path) -> None:
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"{dest} exists and is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    for name, blob in plan.blobs.items():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(blob)
    for name, key in plan.files.items():
        _store(plan).download_sync(key, dest / name)


def _store(plan: ExportPlan) -> ObjectStore:
    if plan.store is None:
        raise ValueError("an export plan with evidence files needs its store")
    return plan.store


def write_zip(plan: ExportPlan, out: BinaryIO | Path) -> None:
    """Blocking (a worker thread). Recordings are stored as they are (already compressed),
    streamed from the store in 1 MiB chunks; JSON and text deflated."""
    with zipfile.ZipFile(out, "w") as archive:
        for name in plan.members:
            if name in plan.blobs:
                archive.writestr(name, plan.blobs[name], compress_type=zipfile.ZIP_DEFLATED)
                continue
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_STORED
            source = _store(plan).open_sync(plan.files[name])
            with contextlib.closing(source), archive.open(info, "w", force_zip64=True) as sink:
                shutil.copyfileobj(source, sink, 1 << 20)


def write_archive(plan: ExportPlan, dest: Path) -> Path:
    """A .zip when `dest` ends in .zip, otherwise a folder (new, or empty)."""
    if dest.suffix.lower() == ".zip":
        if dest.exists():
            raise FileExistsError(f"{dest} exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_zip(plan, dest)
    else:
        write_folder(plan, dest)
    return dest


def readme(session_id: str, institution: str, key_file: str) -> str:
    return f"""远程双录 封存证据包 / Sealed session archive
会话 Session: {session_id}
机构 Institution: {institution}

【中文】
本证据包包含一次远程双录会话封存时的全部证据：manifest.json（封存清单，已签名）、
timeline.json（会话时间线）、acknowledgements.json（客户逐项确认）、signatures/（签名图片及其笔迹数据）、
recordings/（录像分段）、{key_file}（机构公开的验签公钥）、index.json（各文件对应的清单条目）。

一、使用本系统离线核验（无需数据库、服务器或任何密钥）：
    python -m app verify-archive <本文件夹或 zip> --keyring <机构公钥文件>
  机构公钥请从机构公布渠道取得（GET /api/v1/institutions/{institution}/seal-keys），
  不要只信任证据包内自带的公钥：它只能证明封存后内容未被修改，不能证明签名人。
  也可用 --public-key <Base64 公钥> 指定可信公钥。结果完好时退出码为 0；
  被修改时退出码为 1，并逐项列出被修改、缺失或多出的文件
  （例如 “recording:customer_av:2 was altered”）；
  会话在完成前已终止或过期、按“未完成”封存且内容未被修改时退出码为 3，并说明缺少什么、原因为何
  （manifest.json 中 complete 为 false，end、reason、missing 说明结束方式、原因和未录制的内容）。

二、手工核验：
  1. 对 index.json 中每个文件计算 SHA-256（如 sha256sum），应等于 manifest.json 中 items
     同名条目的 sha256。timeline.json 与 acknowledgements.json 是规范化 JSON
     （键排序、无空格、UTF-8），其 SHA-256 即清单中的值。
  2. 哈希链：link0 = 64 个 "0"；按 items 顺序 link = SHA-256(link + name + sha256) 的十六进制；
     最后的 link 应等于 chain。
  3. 签名：去掉 signature（第 1 版还去掉 public_key）后的清单主体做规范化 JSON，取其 SHA-256
     十六进制字符串，以 Ed25519 公钥验证 signature（Base64）。第 2 版起清单的 key_id 是公钥
     SHA-256 的前 16 位十六进制。

个人信息提示：本证据包含客户的录像（人像、声音）、签名图片，以及时间线中的 IP 地址、
操作人标识和事件说明文字，属于个人信息，请按授权范围保管与使用，用后及时删除。
客户姓名、身份证号、手机号及身份证照片不在本证据包中。

[English]
This archive holds everything a remote double-recording session was sealed with:
manifest.json (the signed manifest), timeline.json (the session timeline),
acknowledgements.json (the customer's answers), signatures/ (signature images and their strokes),
recordings/ (recording segments), {key_file} (the institution's public keys) and index.json
(which file holds which manifest item).

1. Verify offline with this project (no database, server or secret needed):
    python -m app verify-archive <this folder or zip> --keyring <institution keyring file>
  Get the institution's keys from where it publishes them
  (GET /api/v1/institutions/{institution}/seal-keys). Do not rely on the key inside the
  archive alone: it proves the content was not changed after signing, not who signed it.
  --public-key <base64 key> names one trusted key instead. Exit code 0 means intact; 1 lists
  every altered, missing or extra file (e.g. "recording:customer_av:2 was altered"); 3 means
  intact but incomplete: the session was aborted or expired before it was complete and sealed
  as such ("complete": false in manifest.json; "end", "reason" and "missing" say how it ended,
  why, and what was never recorded).

2. By hand:
  1. The SHA-256 of each file listed in index.json (sha256sum) must equal the sha256 of the
     item of the same name in manifest.json. timeline.json and acknowledgements.json are
     canonical JSON (sorted keys, no spaces, UTF-8): their SHA-256 is the manifest's value.
  2. Chain: link = 64 "0"; for each item in order, link = hex SHA-256(link + name + sha256);
     the last link must equal "chain".
  3. Signature: the manifest without "signature" (version 1: also without "public_key"),
     as canonical JSON; its hex SHA-256 (as ASCII) is what the Ed25519 key signed
     ("signature", base64). From version 2 on, key_id is the first 16 hex digits of the
     SHA-256 of the raw public key.

Personal data: the recordings (faces, voices), the signature images, and the IP addresses,
actor ids and event notes in the timeline are personal data of the customer and staff: keep
and use them only as authorised, and delete them when done. The customer's name, ID number,
phone and ID-card photos are not in this archive.
"""
