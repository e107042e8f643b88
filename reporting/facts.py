"""Facts the acceptance evidence pack (R-02) reads at build time instead of claiming them: the git
commit of the code, which engines this configuration names and whether they can run here, the
known limitations that follow from those facts, and the institution's acceptance status as its
record states it.

Configuration is read the way the app reads it: `Config` from `infra.config.load_config`, the
identity engines from `Config.identity` (what `app.factory.identity_engines_factory` builds),
the TTS chain from `Config.tts_engines`, voice activity from `Config.qa.vad_engine`, storage
from `Config.archive`. Nothing here loads a model or reaches the network.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from archive.settings import ArchiveSettings, InsurerSettings
from infra.config import SECRET_FIELDS, Config
from media.identity.config import IdentityConfig
from media.identity.weights import (
    DLIB_LANDMARKS_5,
    DLIB_LANDMARKS_68,
    DLIB_RECOGNITION,
    FASNET_FILES,
    MissingModelError,
    face_recognition_model,
    fasnet_weights_present,
)
from media.tts.chain import EngineChain
from media.voice.vad import silero_model_path
from models.org import Institution
from qa.settings import QaSettings
from reporting.requirements_map import CODE_DIRS, SKIP_PARTS


@dataclass(frozen=True)
class Commit:
    """The code the pack was built from. `dirty`: files differ from the commit (modified,
    staged or untracked, ignored files excepted)."""

    id: str | None
    dirty: bool | None
    changed: list[str] = field(default_factory=list)
    error: str | None = None


def git_commit(root: Path) -> Commit:
    binary = shutil.which("git")
    if binary is None:
        return Commit(None, None, [], "git is not installed")

    def git(*args: str) -> str:
        return subprocess.run(  # noqa: S603 - git with fixed arguments
            [binary, "-C", str(root), *args], capture_output=True, text=True, timeout=60,
            check=True).stdout

    try:
        head = git("rev-parse", "HEAD").strip()
        status = [line[3:] for line in git("status", "--porcelain").splitlines() if line]
    except (OSError, subprocess.SubprocessError) as exc:
        return Commit(None, None, [], f"git: {exc}")
    return Commit(head, bool(status), status[:200])


@dataclass(frozen=True)
class EngineFact:
    capability: str
    requirement: str
    configured: str
    available: bool
    detail: str


def _missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def _model_files(*names: str) -> list[str]:
    missing = []
    for name in names:
        try:
            face_recognition_model(name)
        except MissingModelError:
            missing.append(name)
    return missing


def _importers(root: Path, module: str) -> list[str]:
    """The platform's source files that import `module` (the evidence pack's own files, which
    only name it, excepted)."""
    pattern = re.compile(rf"^\s*(?:from|import)\s+{re.escape(module)}\b", re.MULTILINE)
    found = []
    for folder in CODE_DIRS:
        if folder == "reporting":
            continue
        for path in sorted((root / folder).rglob("*.py")):
            if SKIP_PARTS & set(path.parts):
                continue
            if pattern.search(path.read_text(encoding="utf-8", errors="replace")):
                found.append(path.relative_to(root).as_posix())
    return found


def engines(config: Config, root: Path, identity: IdentityConfig | None = None,
            qa: QaSettings | None = None) -> list[EngineFact]:
    identity = identity or config.identity
    qa = qa or config.qa
    facts: list[EngineFact] = []

    ocr = identity.ocr.engine
    needed = (("paddleocr", "paddlex", "rapidocr", "onnxruntime") if ocr == "paddleocr"
              else ("rapidocr", "onnxruntime"))
    missing = _missing_modules(*needed)
    facts.append(EngineFact("ocr", "R-12", ocr, not missing,
                            f"missing Python packages: {', '.join(missing)}" if missing
                            else f"packages present: {', '.join(needed)}"))

    for capability, modules, models, engine in (
        ("face_match", ("deepface", "dlib"), (DLIB_RECOGNITION, DLIB_LANDMARKS_5),
         f"{identity.face.engine} ({identity.face.detector_backend})"),
        ("liveness_active", ("dlib",), (DLIB_LANDMARKS_68,),
         "dlib 68-point landmarks, random challenges"),
    ):
        missing = _missing_modules(*modules)
        files = _model_files(*models) if "face_recognition_models" not in \
            _missing_modules("face_recognition_models") else list(models)
        problems = [f"missing Python packages: {', '.join(missing)}"] if missing else []
        problems += [f"missing model files: {', '.join(files)}"] if files else []
        facts.append(EngineFact(capability, "R-12", engine, not problems,
                                "; ".join(problems) or
                                f"{', '.join(modules)} and {', '.join(models)} present"))

    weights = identity.anti_spoof.weights_dir
    present = fasnet_weights_present(weights)
    facts.append(EngineFact(
        "anti_spoofing_passive", "R-12",
        str(weights) if weights else "not configured (anti_spoof.weights_dir is unset)",
        present,
        "MiniFASNet weights present" if present else
        f"MiniFASNet weights ({', '.join(FASNET_FILES)}) not present; policy without them: "
        f"{identity.anti_spoof.policy_without_weights}"))

    try:
        chain = EngineChain.from_config(config.tts_engines)
    except ValueError as exc:
        facts.append(EngineFact("tts", "R-23", ",".join(config.tts_engines), False, str(exc)))
    else:
        for link in chain.links:
            reason = link.engine.unavailable_reason()
            note = " (online service: reachability is not checked here)" if \
                link.name == "edge" else ""
            facts.append(EngineFact("tts", "R-23", f"{link.name}:{link.voice}", reason is None,
                                    (reason or "can run here") + note))

    wired = _importers(root, "faster_whisper")
    installed = not _missing_modules("faster_whisper")
    facts.append(EngineFact(
        "speech_recognition", "R-24", "faster-whisper" if wired else "none",
        bool(wired) and installed,
        f"used in {', '.join(wired)}; package {'installed' if installed else 'not installed'}"
        if wired else "no code uses a speech recogniser; answers are taken from the buttons"))

    silero = silero_model_path()
    vad_ok = qa.vad_engine == "energy" or silero is not None
    facts.append(EngineFact(
        "voice_activity", "R-24", qa.vad_engine, vad_ok,
        "energy detector (cannot tell speech from music)" if qa.vad_engine == "energy" else
        f"Silero model at {silero}" if silero else
        "silero-vad is not installed: the app falls back to the energy detector"))
    return facts


@dataclass(frozen=True)
class Limitation:
    code: str
    requirements: tuple[str, ...]
    text_zh: str
    fact: str


def limitations(config: Config, engine_facts: list[EngineFact], *, seal_custody: list[str],
                institution_code: str, archive: ArchiveSettings | None = None,
                insurer: InsurerSettings | None = None) -> list[Limitation]:
    """Known limitations, each derived from a fact read at build time (`fact` says which)."""
    archive = archive or config.archive
    insurer = insurer or config.insurer
    found: list[Limitation] = []
    by_capability: dict[str, list[EngineFact]] = {}
    for fact in engine_facts:
        by_capability.setdefault(fact.capability, []).append(fact)
    names = {"ocr": "身份证识别（OCR）", "face_match": "人脸比对",
             "liveness_active": "动作活体检测"}
    for capability, name in names.items():
        for fact in by_capability.get(capability, []):
            if not fact.available:
                found.append(Limitation(f"{capability}_unavailable", (fact.requirement,),
                                        f"{name}引擎在本机不可用，身份核验无法完成", fact.detail))
    for fact in by_capability.get("anti_spoofing_passive", []):
        if not fact.available:
            found.append(Limitation(
                "anti_spoofing_not_configured", ("R-12",),
                "未配置静默活体（防翻拍）模型，活体检测仅依据随机动作", fact.detail))
    tts = by_capability.get("tts", [])
    usable = [f for f in tts if f.available]
    for fact in tts:
        if not fact.available:
            found.append(Limitation("tts_engine_unavailable", ("R-23",),
                                    f"配置的语音合成引擎 {fact.configured} 在本机不可用",
                                    fact.detail))
    if not usable:
        found.append(Limitation("tts_none_available", ("R-23",),
                                "没有可用的语音合成引擎，话术无法语音播报",
                                f"configured: {config.settings.tts_engines}"))
    elif all(f.configured.startswith("espeak") for f in usable):
        found.append(Limitation("tts_only_espeak", ("R-23",),
                                "可用的语音合成只有 espeak-ng（机器音，按设计只作最后兜底）",
                                f"available: {', '.join(f.configured for f in usable)}"))
    for fact in by_capability.get("speech_recognition", []):
        if not fact.available:
            found.append(Limitation("speech_recognition_absent", ("R-24",),
                                    "未接入语音识别：客户答复以点击按钮记录，口头答复不做识别",
                                    fact.detail))
    for fact in by_capability.get("voice_activity", []):
        if not fact.available or fact.configured == "energy":
            found.append(Limitation("vad_energy_fallback", ("R-24", "R-40"),
                                    "客户发声检测使用能量阈值（无法区分语音与音乐）",
                                    fact.detail))

    if not config.database_url.startswith("postgres"):
        found.append(Limitation("database_sqlite", ("R-53", "R-54"),
                                "数据库为 SQLite，仅用于开发与试用，生产须使用 PostgreSQL",
                                "DATABASE_URL is not a PostgreSQL URL"))
    given = [n for n in SECRET_FIELDS if getattr(config.settings, n)]
    if config.profile != "prod":
        found.append(Limitation(
            "not_production_profile", ("R-54",),
            f"运行配置为 {config.profile} 环境，不是生产配置",
            f"SHUANGLU_PROFILE={config.profile}"))
    missing = [n for n in SECRET_FIELDS if n not in given]
    if missing:
        found.append(Limitation(
            "production_secrets_missing", ("R-54",),
            "以下密钥未由部署提供，使用的是开发/测试环境自动生成的密钥：" + "、".join(missing),
            f"not set: {', '.join('SHUANGLU_' + n.upper() for n in missing)}"))
    if not config.redis_url:
        found.append(Limitation("redis_embedded", (),
                                "未配置 REDIS_URL，使用内嵌的 redis-server 子进程（单机部署）",
                                "REDIS_URL is not set"))
    if not config.public_url.startswith("https://"):
        found.append(Limitation("public_url_not_https", ("R-20",),
                                "对外访问地址不是 HTTPS，客户手机浏览器无法在此地址使用摄像头通话",
                                f"public URL {config.public_url}"))
    if archive.backend == "local":
        found.append(Limitation("archive_local_only", ("R-42",),
                                "证据只保存在本机数据目录，未配置异地对象存储",
                                "SHUANGLU_ARCHIVE_BACKEND=local"))
    elif not (archive.s3_endpoint_url and archive.s3_access_key and archive.s3_secret_key):
        found.append(Limitation("archive_s3_incomplete", ("R-42",),
                                "对象存储配置不完整（地址或访问密钥未设置）",
                                "SHUANGLU_ARCHIVE_S3_ENDPOINT_URL / ACCESS_KEY / SECRET_KEY"))
    if not insurer.clients:
        found.append(Limitation("insurer_clients_none", ("R-43",),
                                "未配置保险公司核心系统接入（状态查询与回调）",
                                "SHUANGLU_INSURER_CLIENTS is empty"))
    if not seal_custody:
        found.append(Limitation("seal_key_none", ("R-31",),
                                "本机构尚无封存签名密钥（首次封存时生成）",
                                f"no seal_key row for {institution_code}"))
    elif any(c == "db-aesgcm" for c in seal_custody):
        found.append(Limitation("seal_key_in_database", ("R-31",),
                                "封存私钥加密保存在数据库中，未使用 KMS/HSM；"
                                "持有数据库与字段密钥者可签名",
                                f"seal_key.custody: {', '.join(sorted(set(seal_custody)))}"))
    found.append(Limitation(
        "acceptance_record_without_who", ("R-02",),
        "验收记录只有“是否通过”和“通过时间”，不记录验收人和验收文号",
        "models/org.py Institution has accepted and accepted_at only"))
    return found


def limitation_rows(items: list[Limitation]) -> list[dict[str, Any]]:
    return [{**asdict(i), "requirements": list(i.requirements)} for i in items]


ACCEPTED_LABEL = "已通过验收"


def acceptance_status(institution: Institution, open_items: list[str]) -> dict[str, Any]:
    """What the institution's acceptance record says (R-02). Only a record with the accepted
    flag and its date makes the pack say 已通过; otherwise 待验收 with what is missing.
    `open_items` are the evidence gaps this pack found (listed either way)."""
    record = {"accepted": institution.accepted,
              "accepted_at": institution.accepted_at.isoformat() if institution.accepted_at
              else None,
              "accepted_by": None}
    missing: list[str] = []
    if institution.accepted and institution.accepted_at:
        status, label = "accepted", f"{ACCEPTED_LABEL}（{record['accepted_at']}）"
    elif institution.accepted:
        status, label = "record_incomplete", "待验收（记录不完整）"
        missing.append("机构标记为通过，但没有验收时间（accepted_at），不能视为验收记录")
    else:
        status, label = "pending", "待验收"
        missing.append("机构尚无验收通过记录（accepted = false）")
    return {"status": status, "label": label, "record": record,
            "record_note": "验收人与验收文号：系统不记录（无此字段）",
            "missing": missing + open_items}
