"""The acceptance evidence pack (R-02): one command writes, for an institution, a zip with an
index page — the configuration (secrets redacted), the published script versions with their
lint results, the requirement-to-test map built from the R-xx ids in the code and the tests,
the latest test results (pytest's JUnit XML) and samples of the audit log with the chain's
verification — plus a manifest of every file's SHA-256.

    python -m reporting.evidence_pack --institution DEMO-BANK --out pack.zip \\
        [--junit test-artifacts/junit.xml] [--audit-samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import platform
import sys
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from app.config import PROJECT_ROOT, Config, load_config
from archive.settings import ArchiveSettings, InsurerSettings
from models.audit import AuditEntry
from models.org import Institution
from models.sales import Product, ScriptStatus, ScriptVersion
from qa.settings import QaSettings
from reporting.requirements_map import RequirementEntry, TestRun, build_map, read_junit
from scripts_library.lint import lint
from scripts_library.versions import document_of, findings_json
from security import audit
from security.audit import Actor, verify_chain

SECRET_WORDS = ("secret", "key", "password", "token")
PACKAGES = ("aiohttp", "tortoise-orm", "aiortc", "av", "onnxruntime", "silero-vad", "redis",
            "taskiq", "pydantic", "cryptography", "boto3")


def redact(data: Any) -> Any:
    """Secret values become "[set]" / "[not set]"; a database URL loses its password."""
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            if any(w in str(k).lower() for w in SECRET_WORDS) and not isinstance(v, dict):
                out[k] = "[set]" if v else "[not set]"
            elif str(k).lower().endswith("url") and isinstance(v, str) and "@" in v:
                scheme, _, rest = v.partition("://")
                out[k] = f"{scheme}://[redacted]@{rest.split('@', 1)[1]}"
            else:
                out[k] = redact(v)
        return out
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def configuration(config: Config) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "profile": config.profile,
        "settings": redact(config.settings.model_dump(mode="json")),
        "database": "postgresql" if config.database_url.startswith("postgres") else "sqlite",
        "qa": redact(QaSettings().model_dump(mode="json")),
        "archive": redact(ArchiveSettings().model_dump(mode="json")),
        "insurer_clients": {cid: {"institution": c.institution,
                                  "webhook": bool(c.webhook_url)}
                            for cid, c in InsurerSettings().clients.items()},
        "runtime": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "packages": versions},
    }


async def scripts() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Published (and retired) versions with the stored and a fresh lint; file name → text."""
    summary: list[dict[str, Any]] = []
    files: dict[str, str] = {}
    versions = await ScriptVersion.filter(
        status__in=[ScriptStatus.PUBLISHED, ScriptStatus.RETIRED]).order_by("product_id",
                                                                            "version")
    for v in versions:
        product = await Product.get(id=v.product_id)
        fresh = findings_json(lint(document_of(v)))
        name = f"scripts/{product.code}-v{v.version}"
        files[f"{name}.yaml"] = v.source_yaml
        files[f"{name}.lint.json"] = json.dumps({"stored": v.lint, "now": fresh},
                                                ensure_ascii=False, indent=2)
        summary.append({
            "product": product.code, "product_name": product.name,
            "type": product.product_type.value, "version": v.version,
            "status": v.status.value, "content_hash": v.content_hash,
            "published_at": v.published_at.isoformat() if v.published_at else None,
            "errors": sum(1 for f in fresh if f.get("severity") == "error"),
            "warnings": sum(1 for f in fresh if f.get("severity") == "warning"),
            "file": f"{name}.yaml",
        })
    return summary, files


async def audit_samples(count: int) -> dict[str, Any]:
    result = await verify_chain()
    rows = await AuditEntry.all().order_by("-id").limit(count)
    return {
        "chain": {"ok": result.ok, "checked": result.checked,
                  "first_broken_id": result.first_broken_id, "reason": result.reason},
        "entries": [{"id": e.id, "at": e.at.isoformat(), "actor": e.actor_label or e.actor_kind,
                     "action": e.action, "object": f"{e.object_type}:{e.object_id}",
                     "outcome": e.outcome, "details": e.details, "hash": e.hash}
                    for e in rows],
    }


@dataclass(frozen=True)
class PackResult:
    path: Path
    requirements: list[RequirementEntry]
    files: list[str]


def _h(value: Any) -> str:
    return html.escape(str(value))


def _index(institution: Institution, generated: str, scripts_summary: list[dict[str, Any]],
           entries: list[RequirementEntry], run: TestRun | None,
           audit_info: dict[str, Any]) -> str:
    symbol = {"passed": "✔", "failed": "✘", "skipped": "–", "not run": "?"}
    rows = []
    for e in entries:
        tests = "<br>".join(f"{symbol[t.outcome]} <code>{_h(t.node_id)}</code>"
                            f" <small>({_h(t.how)})</small>" for t in e.tests) or \
            "<strong>无测试覆盖</strong>"
        code = "<br>".join(f"<code>{_h(c)}</code>" for c in e.code[:5])
        if len(e.code) > 5:
            code += f"<br><small>… 共 {len(e.code)} 处</small>"
        rows.append(f"<tr id='{_h(e.id)}'><td><b>{_h(e.id)}</b><br>{_h(e.title_zh)}<br>"
                    f"<small>{_h(e.title)}</small></td><td>{code}</td><td>{tests}</td></tr>")
    script_rows = "".join(
        f"<tr><td>{_h(s['product_name'])}（{_h(s['product'])}）</td><td>v{s['version']}</td>"
        f"<td>{_h(s['status'])}</td><td>{s['errors']} / {s['warnings']}</td>"
        f"<td><a href='{_h(s['file'])}'>{_h(s['file'])}</a></td></tr>" for s in scripts_summary)
    if run is None:
        tests_html = "<p>未提供测试结果（--junit）。</p>"
    else:
        passed = run.tests - run.failures - run.errors - run.skipped
        tests_html = (f"<p>共 {run.tests} 项：通过 {passed}，失败 {run.failures}，错误 "
                      f"{run.errors}，跳过 {run.skipped}；用时 {run.seconds:.0f} 秒；"
                      f"{_h(run.timestamp)}。详见 <a href='tests/junit.xml'>junit.xml</a>。</p>")
    covered = sum(1 for e in entries if e.covered)
    chain = audit_info["chain"]
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>验收材料包 · {_h(institution.name)}</title>
<style>body{{font-family:"Noto Sans CJK SC",sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222}}table{{border-collapse:collapse;width:100%;font-size:13px}}
td,th{{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}}
code{{font-size:12px}}h1{{color:#b3261e}}</style></head><body>
<h1>远程双录系统验收材料包</h1>
<p>机构：{_h(institution.full_name)}（{_h(institution.code)}，{_h(institution.kind.value)}）；
验收状态：{"已通过" if institution.accepted else "未通过"}
{_h(institution.accepted_at.isoformat()) if institution.accepted_at else ""}；
生成时间：{_h(generated)}</p>
<h2>1. 系统配置</h2><p><a href="configuration.json">configuration.json</a>（密钥已隐去）</p>
<h2>2. 话术库版本及检查结果</h2>
<table><tr><th>产品</th><th>版本</th><th>状态</th><th>错误 / 警告</th><th>文件</th></tr>
{script_rows}</table>
<h2>3. 需求与测试对照</h2><p>{covered} / {len(entries)} 项需求有测试覆盖；
<a href="requirements.json">requirements.json</a></p>
<table><tr><th>需求</th><th>代码位置</th><th>测试</th></tr>{''.join(rows)}</table>
<h2>4. 最新测试结果</h2>{tests_html}
<h2>5. 审计日志样本</h2><p>哈希链校验：{"完整" if chain["ok"] else "发现断裂"}（已校验
{chain["checked"]} 条）；最近 {len(audit_info["entries"])} 条见
<a href="audit/samples.json">audit/samples.json</a>。</p>
<p><small>manifest.json 列出本材料包每个文件的 SHA-256。</small></p>
</body></html>"""


async def build_pack(
    config: Config, institution_code: str, out: Path, *, root: Path = PROJECT_ROOT,
    junit: Path | None = None, audit_count: int = 50, now: datetime | None = None,
) -> PackResult:
    institution = await Institution.get_or_none(code=institution_code)
    if institution is None:
        raise ValueError(f"no institution with code {institution_code}")
    generated = (now or datetime.now(UTC)).isoformat()
    junit_xml = await asyncio.to_thread(_read_optional, junit)
    run = read_junit(junit) if junit is not None and junit_xml is not None else None
    # Reading the source tree is blocking but short (a second): off the event loop anyway.
    entries = await asyncio.to_thread(build_map, root, run)
    scripts_summary, script_files = await scripts()
    audit_info = await audit_samples(audit_count)
    files: dict[str, bytes] = {
        "configuration.json": json.dumps(configuration(config), ensure_ascii=False,
                                         indent=2).encode(),
        "scripts/index.json": json.dumps(scripts_summary, ensure_ascii=False,
                                         indent=2).encode(),
        "requirements.json": json.dumps([{
            "id": e.id, "title": e.title, "title_zh": e.title_zh, "code": e.code,
            "tests": [{"test": t.node_id, "how": t.how, "outcome": t.outcome}
                      for t in e.tests]} for e in entries], ensure_ascii=False,
            indent=2).encode(),
        "audit/samples.json": json.dumps(audit_info, ensure_ascii=False, indent=2).encode(),
    }
    files.update({name: text.encode() for name, text in script_files.items()})
    if junit_xml is not None:
        files["tests/junit.xml"] = junit_xml
    files["index.html"] = _index(institution, generated, scripts_summary, entries, run,
                                 audit_info).encode()
    manifest = {name: hashlib.sha256(data).hexdigest() for name, data in sorted(files.items())}
    files["manifest.json"] = json.dumps({"institution": institution.code,
                                         "generated_at": generated, "files": manifest},
                                        ensure_ascii=False, indent=2).encode()
    digest = await asyncio.to_thread(_write_zip, out, files)
    await audit.record_alone(Actor.system("evidence-pack"), "acceptance.pack_exported",
                             object_type="institution", object_id=str(institution.id),
                             details={"files": len(files), "sha256": digest})
    return PackResult(out, entries, sorted(files))


def _read_optional(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None and path.exists() else None


def _write_zip(out: Path, files: dict[str, bytes]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as pack:
        for name in sorted(files):
            pack.writestr(name, files[name])
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reporting.evidence_pack",
                                     description="Export the acceptance evidence pack (R-02).")
    parser.add_argument("--institution", required=True, help="institution code, e.g. DEMO-BANK")
    parser.add_argument("--out", required=True, type=Path, help="the zip file to write")
    parser.add_argument("--junit", type=Path, default=PROJECT_ROOT / "test-artifacts" /
                        "junit.xml", help="pytest --junitxml report of the latest test run")
    parser.add_argument("--audit-samples", type=int, default=50)
    args = parser.parse_args(argv)

    async def run() -> PackResult:
        from app.database import open_database

        config = load_config()
        async with open_database(config.database_url):
            return await build_pack(config, args.institution, args.out, junit=args.junit,
                                    audit_count=args.audit_samples)

    try:
        result = asyncio.run(run())
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    covered = sum(1 for e in result.requirements if e.covered)
    print(f"wrote {result.path} ({len(result.files)} files; {covered}/"
          f"{len(result.requirements)} requirements covered by tests)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
