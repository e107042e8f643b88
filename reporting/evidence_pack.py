"""The acceptance evidence pack (R-02): one command writes, for an institution, a zip with an
index page (Chinese) and its evidence: the acceptance status as the institution's record states
it (已通过 only with an acceptance record, otherwise 待验收 and what is missing), known
limitations derived from facts read at build time (engines, database, storage, secrets), the
configuration (secrets redacted), the published script versions with their lint results, the
test results exactly as one pytest JUnit report records them (and every test that did not run
in it), the Ningbo articles and R-ids mapped to code and tests, one sealed sample session with
its QA report and a fresh offline verification, and samples of the audit log; plus
`manifest.json` (SHA-256 of every file, the git commit, signed with the institution's seal key;
`python -m reporting.pack_verify` checks it offline).

    python -m reporting.evidence_pack --institution DEMO-BANK --out pack.zip \\
        [--junit test-artifacts/junit.xml] [--sample-session test-artifacts/sample-session]
        [--sample-qa-report QA.json] [--sample-keyring KEYS.json] [--audit-samples 50]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import html
import json
import logging
import platform
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tortoise.transactions import in_transaction

from archive.offline import ArchiveError
from infra.config import PROJECT_ROOT, Config, load_config
from media.identity.config import IdentityConfig
from models.audit import AuditEntry
from models.org import Institution
from models.sales import Product, ScriptStatus, ScriptVersion
from models.seal_keys import SealKey
from reporting.facts import (
    Commit,
    acceptance_status,
    engines,
    git_commit,
    limitation_rows,
    limitations,
)
from reporting.pack_verify import MANIFEST, PACK_FORMAT, seal
from reporting.requirements_map import (
    RequirementEntry,
    TestRun,
    build_map,
    ningbo_map,
    not_run,
    read_junit,
    source_tests,
)
from reporting.sample_session import SAMPLE_DIR, SampleInput, build_sample, manifest_of
from scripts_library.lint import lint
from security import audit
from security.audit import Actor, verify_chain
from security.crypto import FieldCipher
from security.seal_keys import DatabaseKeyring, SealSigner, published_keyring
from security.seal_manifest import key_id_of, trusted_keys_from_keyring
from workflow.script_versions import document_of, findings_json

log = logging.getLogger(__name__)

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
        "qa": redact(config.qa.model_dump(mode="json")),
        "archive": redact(config.archive.model_dump(mode="json")),
        "insurer_clients": {cid: {"institution": c.institution,
                                  "webhook": bool(c.webhook_url)}
                            for cid, c in config.insurer.clients.items()},
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
    manifest: dict[str, Any]
    acceptance: dict[str, Any]
    tests: dict[str, Any]
    limitations: list[dict[str, Any]]
    sample: dict[str, Any]


def _h(value: Any) -> str:
    return html.escape(str(value))


def _json(data: Any) -> bytes:
    return json.dumps(data, ensure_ascii=False, indent=2).encode()


def tests_section(run: TestRun | None, junit: Path | None, problem: str | None,
                 tests: dict[str, set[str]], commit: Commit) -> dict[str, Any]:
    """The test evidence: only what the report records, plus the tests it did not run."""
    missing = not_run(run, tests)
    summary: dict[str, Any] = {
        "report": None if run is None else "tests/junit.xml",
        "source": str(junit) if junit is not None else None, "problem": problem,
        "not_run": missing,
        "not_run_with_requirements": sum(1 for m in missing if m["requirements"]),
    }
    if run is None:
        return summary
    sha, dirty = run.commit
    summary.update({
        "counts": run.counts, "cases": run.tests, "recorded_totals": run.recorded,
        "totals_agree": run.totals_agree, "seconds": run.seconds, "timestamp": run.timestamp,
        "suite_names": run.suite_names,
        "commit": {"id": sha, "dirty": dirty,
                   "matches_pack": None if sha is None or commit.id is None
                   else commit.id.startswith(sha)},
        "failed": [{"test": c.case_id, "outcome": c.outcome, "message": c.message}
                   for c in run.cases if c.outcome in ("failed", "error")],
    })
    return summary


def open_items(tests: dict[str, Any], entries: list[RequirementEntry], run: TestRun | None,
               ningbo: list[dict[str, Any]], commit: Commit, signed: bool,
               sample: dict[str, Any]) -> list[str]:
    """What this pack does not show (Chinese), listed with the acceptance status."""
    items: list[str] = []
    if run is None:
        items.append(f"没有测试报告（{tests['problem'] or '未提供 JUnit XML'}），"
                     "本材料包不含测试证据")
    else:
        counts = tests["counts"]
        if counts["failed"] or counts["error"]:
            items.append(f"测试报告中有 {counts['failed']} 项失败、{counts['error']} 项错误")
        if not tests["totals_agree"]:
            items.append("测试报告头部的统计与其中的用例记录不一致")
        report_commit = tests["commit"]
        if report_commit["id"] is None:
            items.append("测试报告未记录所测代码的提交（请用 bin/test 运行）")
        elif not report_commit["matches_pack"]:
            items.append(f"测试报告对应提交 {report_commit['id'][:12]}，与本材料包的代码提交不同")
        elif report_commit["dirty"]:
            items.append("测试运行时工作区有未提交的修改")
    if tests["not_run"]:
        items.append(f"{len(tests['not_run'])} 项测试未在该报告中运行（其中 "
                     f"{tests['not_run_with_requirements']} 项标注了需求编号），见第 6 节")
    if commit.id is None:
        items.append(f"无法确定代码提交（{commit.error}）")
    elif commit.dirty:
        items.append("生成材料包时工作区有未提交的修改，代码与提交不完全一致")
    gaps = [e.id for e in entries if e.gaps(run)]
    if gaps:
        items.append(f"以下需求没有代码或测试标注，或其测试在该报告中没有通过：{'、'.join(gaps)}")
    unmapped = [a["article"] for a in ningbo if a["status"] == "not mapped"]
    if unmapped:
        items.append(f"宁波办法 {'、'.join(unmapped)} 未对应系统需求，需机构另行提供材料")
    if not signed:
        items.append("材料包未签名")
    if not sample.get("present"):
        items.append("未附封存样例会话")
    elif not sample.get("ok"):
        items.append("封存样例会话核验未通过或材料不全，见第 9 节")
    if (sample.get("qa") or {}).get("passed") is False:
        items.append("样例会话的自动质检发现严重或重大问题，见第 9 节")
    return items


SYMBOL = {"passed": "✔", "failed": "✘", "error": "✘", "skipped": "–", "not run": "?"}
GAP_ZH = {"no code names it": "无代码标注", "no test names it": "无测试标注",
          "no test report": "无测试报告", "a test failed": "有测试失败",
          "no test passed in the report": "报告中没有通过的测试",
          "not in the catalogue": "不在需求目录中"}


def _gaps_zh(gaps: list[str]) -> str:
    return "；".join(GAP_ZH.get(g, g) for g in gaps)


def _requirement_rows(entries: list[RequirementEntry], run: TestRun | None) -> str:
    rows = []
    for e in entries:
        tests = "<br>".join(f"{SYMBOL[t.outcome]} <code>{_h(t.node_id)}</code>"
                            f" <small>({_h(t.how)}; {_h(t.outcome)})</small>"
                            for t in e.tests) or "<strong>无测试</strong>"
        code = "<br>".join(f"<code>{_h(c)}</code>" for c in e.code[:5]) or \
            "<strong>无代码</strong>"
        if len(e.code) > 5:
            code += f"<br><small>… 共 {len(e.code)} 处</small>"
        gaps = _gaps_zh(e.gaps(run))
        rows.append(f"<tr id='{_h(e.id)}'><td><b>{_h(e.id)}</b><br>{_h(e.title_zh)}<br>"
                    f"<small>{_h(e.title)}</small></td><td>{code}</td><td>{tests}</td>"
                    f"<td>{_h(gaps) or '—'}</td></tr>")
    return "".join(rows)


def _ningbo_rows(ningbo: list[dict[str, Any]]) -> str:
    label = {"evidenced": "有代码与通过的测试", "gap": "有缺口", "not mapped": "未映射"}
    rows = []
    for a in ningbo:
        reqs = "<br>".join(
            f"<a href='#{_h(r['id'])}'>{_h(r['id'])}</a>：代码 {r['code']} 处，测试 "
            f"{r['tests']} 项（通过 {r['outcomes'].get('passed', 0)}，失败 "
            f"{r['outcomes'].get('failed', 0) + r['outcomes'].get('error', 0)}，未运行 "
            f"{r['outcomes'].get('not run', 0) + r['outcomes'].get('skipped', 0)}）"
            + (f" <small>（{_h(_gaps_zh(r['gaps']))}）</small>" if r["gaps"] else "")
            for r in a["requirements"]) or "—"
        rows.append(f"<tr><td>{_h(a['article'])}</td><td>{_h(a['summary'])}"
                    f"{'<br><small>' + _h(a['note']) + '</small>' if a['note'] else ''}</td>"
                    f"<td>{reqs}</td><td>{label[a['status']]}</td></tr>")
    return "".join(rows)


def _tests_html(tests: dict[str, Any]) -> str:
    if tests["report"] is None:
        why = tests["problem"] or "未提供 JUnit XML（--junit）"
        body = f"<p><strong>没有测试报告：{_h(why)}。</strong>本材料包不含任何测试结果。</p>"
    else:
        c = tests["counts"]
        commit = tests["commit"]
        if commit["id"] is None:
            which = "报告未记录所测代码的提交"
        else:
            which = f"报告记录的提交 <code>{_h(commit['id'])}</code>" + \
                ("（工作区有未提交修改）" if commit["dirty"] else "") + \
                ("，与本材料包一致" if commit["matches_pack"] else "，与本材料包不同")
        agree = "" if tests["totals_agree"] else \
            f"<p><strong>报告头部统计 {_h(tests['recorded_totals'])} 与用例记录不一致。" \
            "</strong></p>"
        failed = "".join(f"<li><code>{_h(f['test'])}</code> {_h(f['outcome'])}："
                         f"{_h(f['message'])}</li>" for f in tests["failed"])
        body = (f"<p>报告中共 {tests['cases']} 个用例：通过 {c['passed']}，失败 {c['failed']}，"
                f"错误 {c['error']}，跳过 {c['skipped']}；用时 {tests['seconds']:.0f} 秒；"
                f"{_h(tests['timestamp'])}；{which}。数字均读自 "
                f"<a href='tests/junit.xml'>junit.xml</a>。</p>{agree}"
                + (f"<p>失败与错误：</p><ul>{failed}</ul>" if failed else ""))
    rows = "".join(f"<tr><td><code>{_h(m['test'])}</code></td><td>{_h(m['reason'])}"
                   f"{' ' + _h(m['message']) if m['message'] else ''}</td>"
                   f"<td>{_h('、'.join(m['requirements'])) or '—'}</td></tr>"
                   for m in tests["not_run"])
    return body + (
        f"<p>未在该报告中运行的测试共 {len(tests['not_run'])} 项（报告记为跳过的用例，以及"
        f"源代码中有、报告中没有的测试函数：未选中、被取消选择或报告之后新增）；其中 "
        f"{tests['not_run_with_requirements']} 项标注了需求编号。</p>"
        f"<details><summary>列表</summary><table><tr><th>测试</th><th>原因</th>"
        f"<th>需求</th></tr>{rows}</table></details>" if tests["not_run"] else
        "<p>源代码中的每个测试函数都在该报告中运行过。</p>")


def _sample_html(sample: dict[str, Any]) -> str:
    if not sample.get("present"):
        return ("<p><strong>未附封存样例会话。</strong>整场会话的浏览器测试"
                "（tests/h5/test_call_e2e.py）会把样例写入 test-artifacts/sample-session/，"
                "或用 --sample-session 指定导出的 zip 与质检报告。</p>")
    if "verification" not in sample:
        return f"<p><strong>样例会话无法读取：</strong>{_h('; '.join(sample['problems']))}</p>"
    v = sample["verification"]
    trust = {"database": "本机构在本系统数据库中发布的公钥",
             "supplied keyring": "随样例提供的公钥文件（录制该会话的服务当时发布的公钥）",
             "self-asserted": "证据包自带的公钥（只能证明封存后未被修改，不能证明签名人）"}
    origin = "" if sample["from_this_installation"] else (
        "<p><strong>说明：</strong>该样例会话不是以本机构在本系统中的密钥签名的，通常来自测试运行"
        "（其数据库与签名密钥随测试销毁），用于展示封存与离线核验，不是本机构的真实业务会话。</p>")
    qa = sample.get("qa")
    if qa is None:
        qa_html = "<p>质检报告：未提供或无法读取。</p>"
    else:
        findings = "".join(f"<li>{_h(f['severity'])} <code>{_h(f['code'])}</code> "
                           f"{_h(f['requirement'])}：{_h(f['message'])}</li>"
                           for f in qa["findings"])
        verdict = {True: "无严重、重大问题", False: "发现严重或重大问题，需人工复核",
                   None: "报告未给出结论"}[qa["passed"]]
        severity = {"critical": "严重", "major": "重大", "minor": "一般", "info": "提示"}
        counts = "，".join(f"{severity.get(k, k)} {v}" for k, v in (qa["counts"] or {}).items())
        used = "，".join(f"{k}={v}" for k, v in (qa["engines"] or {}).items())
        qa_html = (f"<p>自动质检报告（<a href='sample-session/qa-report.json'>qa-report.json"
                   f"</a>）：{verdict}；{_h(counts) or '无统计'}；"
                   f"引擎与阈值：{_h(used) or '未记录'}。</p>"
                   + (f"<ul>{findings}</ul>" if findings else ""))
    problems = "".join(f"<li>{_h(p)}</li>" for p in sample["problems"])
    agrees = {None: "未附测试保存的核验输出", True: "与测试运行时保存的核验输出一致",
              False: "与测试运行时保存的核验输出不一致"}[sample["recorded_output_agrees"]]
    return (f"<p>会话 <code>{_h(sample['session_id'])}</code>，机构 "
            f"{_h(sample['institution'])}，签名密钥 {_h(sample['key_id'])}，封存于 "
            f"{_h(sample['sealed_at'])}；证据包 <a href='{_h(sample['archive'])}'>"
            f"{_h(sample['archive'])}</a>。</p>{origin}"
            f"<p>离线核验（生成本材料包时重新运行 archive/offline.py，可信公钥："
            f"{trust[v['trust']]}）："
            f"<strong>{'完好' if v['ok'] else '不一致'}</strong>；{agrees}。</p>"
            f"<pre>{_h(v['output'])}</pre>{qa_html}"
            + (f"<p>问题：</p><ul>{problems}</ul>" if problems else ""))


def _index(institution: Institution, generated: str, manifest_info: dict[str, Any],
           acceptance: dict[str, Any], limits: list[dict[str, Any]],
           engine_rows: list[dict[str, Any]], scripts_summary: list[dict[str, Any]],
           entries: list[RequirementEntry], run: TestRun | None, tests: dict[str, Any],
           ningbo: list[dict[str, Any]], sample: dict[str, Any],
           audit_info: dict[str, Any]) -> str:
    commit = manifest_info["commit"]
    commit_html = (f"<code>{_h(commit['id'])}</code>"
                   + ("（工作区有未提交的修改）" if commit["dirty"] else "（工作区与提交一致）")
                   if commit["id"] else f"无法确定（{_h(commit['error'])}）")
    if manifest_info["key_id"]:
        signed = (f"已用本机构封存密钥 <code>{_h(manifest_info['key_id'])}</code>（Ed25519）签名"
                  f"；核验：<code>python -m reporting.pack_verify 本文件.zip --keyring "
                  f"机构公钥.json</code>（公钥见 GET /api/v1/institutions/"
                  f"{_h(institution.code)}/seal-keys）")
    else:
        signed = f"<strong>未签名</strong>：{_h(manifest_info['unsigned_reason'])}"
    missing = "".join(f"<li>{_h(m)}</li>" for m in acceptance["missing"])
    limit_rows = "".join(f"<tr><td>{_h(x['text_zh'])}</td><td><small>{_h(x['fact'])}</small>"
                         f"</td><td>{_h('、'.join(x['requirements'])) or '—'}</td></tr>"
                         for x in limits)
    engines_html = "".join(f"<tr><td>{_h(e['capability'])}</td><td>{_h(e['configured'])}</td>"
                           f"<td>{'可用' if e['available'] else '<strong>不可用</strong>'}</td>"
                           f"<td><small>{_h(e['detail'])}</small></td></tr>"
                           for e in engine_rows)
    script_rows = "".join(
        f"<tr><td>{_h(s['product_name'])}（{_h(s['product'])}）</td><td>v{s['version']}</td>"
        f"<td>{_h(s['status'])}</td><td>{s['errors']} / {s['warnings']}</td>"
        f"<td><a href='{_h(s['file'])}'>{_h(s['file'])}</a></td></tr>" for s in scripts_summary)
    covered = sum(1 for e in entries if e.covered)
    chain = audit_info["chain"]
    record = acceptance["record"]
    return f"""<!doctype html>
<html lang="zh-CN"><head><meta charset="utf-8"><title>验收材料包 · {_h(institution.name)}</title>
<style>body{{font-family:"Noto Sans CJK SC",sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222}}table{{border-collapse:collapse;width:100%;font-size:13px}}
td,th{{border:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}}
code{{font-size:12px;word-break:break-all}}h1{{color:#b3261e}}td:last-child{{min-width:5em}}
pre{{white-space:pre-wrap;background:#f6f6f6;
padding:8px;font-size:12px}}</style></head><body>
<h1>远程双录系统验收材料包</h1>
<table>
<tr><th>机构</th><td>{_h(institution.full_name)}（{_h(institution.code)}，{_h(institution.kind.value)}）</td></tr>
<tr><th>验收状态</th><td><strong>{_h(acceptance['label'])}</strong></td></tr>
<tr><th>生成时间</th><td>{_h(generated)}</td></tr>
<tr><th>代码版本</th><td>{commit_html}</td></tr>
<tr><th>签名</th><td>{signed}</td></tr>
</table>
<h2>1. 验收状态</h2>
<p>{_h(acceptance['label'])}。依据机构的验收记录：通过标记 {"是" if record['accepted'] else "否"}，
通过时间 {_h(record['accepted_at'] or '无')}；{_h(acceptance['record_note'])}。
<a href="acceptance.json">acceptance.json</a></p>
{'<p>尚缺或未证明的事项：</p><ul>' + missing + '</ul>' if missing else ''}
<h2>2. 已知限制（生成时读取的事实）</h2>
<table><tr><th>限制</th><th>依据</th><th>需求</th></tr>{limit_rows}</table>
<h2>3. 引擎与运行环境</h2>
<table><tr><th>能力</th><th>配置</th><th>本机</th><th>说明</th></tr>{engines_html}</table>
<p><a href="limitations.json">limitations.json</a></p>
<h2>4. 系统配置</h2><p><a href="configuration.json">configuration.json</a>（密钥已隐去）</p>
<h2>5. 话术库版本及检查结果</h2>
<table><tr><th>产品</th><th>版本</th><th>状态</th><th>错误 / 警告</th><th>文件</th></tr>
{script_rows}</table>
<h2>6. 测试结果（仅依据所附测试报告）</h2>{_tests_html(tests)}
<p><a href="tests/summary.json">tests/summary.json</a></p>
<h2>7. 宁波办法条款对照</h2>
<p>《宁波保险销售行为远程同步录音录像管理暂行办法》（甬金规〔2023〕1号）通知第三项及第一至十六条；
<a href="ningbo.json">ningbo.json</a></p>
<table><tr><th>条款</th><th>内容</th><th>需求、代码与测试</th><th>状态</th></tr>
{_ningbo_rows(ningbo)}</table>
<h2>8. 需求与测试对照</h2><p>{covered} / {len(entries)} 项需求有测试标注；
<a href="requirements.json">requirements.json</a></p>
<table><tr><th>需求</th><th>代码位置</th><th>测试（在报告中的结果）</th><th>缺口</th></tr>
{_requirement_rows(entries, run)}</table>
<h2>9. 封存样例会话</h2>{_sample_html(sample)}
<h2>10. 审计日志样本</h2><p>哈希链校验：{"完整" if chain["ok"] else "发现断裂"}（已校验
{chain["checked"]} 条）；最近 {len(audit_info["entries"])} 条见
<a href="audit/samples.json">audit/samples.json</a>。</p>
<p><small>manifest.json 列出本材料包每个文件的 SHA-256 及代码提交，并带签名（如已签名）。
</small></p>
</body></html>"""


async def _signer(config: Config, institution: Institution) -> tuple[SealSigner | None, str]:
    """The institution's seal key (created on first use, audited, as the first seal would),
    or None with the reason the pack stays unsigned."""
    try:
        async with in_transaction() as conn:
            keyring = DatabaseKeyring(FieldCipher(config.field_encryption_key))
            return await keyring.signer_for(conn, institution.id,
                                            Actor.system("evidence-pack")), ""
    except Exception as exc:  # any failure leaves the pack unsigned, saying why
        log.warning("evidence pack not signed: %s", exc)
        return None, f"the institution's seal key could not be used: {type(exc).__name__}: {exc}"


async def _sample(sample: SampleInput | None) -> tuple[dict[str, Any], dict[str, bytes]]:
    if sample is None:
        return {"present": False, "ok": False, "problems": []}, {}
    try:
        manifest = await asyncio.to_thread(manifest_of, sample.archive)
    except ArchiveError as exc:
        return {"present": True, "ok": False, "problems": [str(exc)]}, {}
    database_keys = None
    owner = await Institution.get_or_none(code=str(manifest.get("institution", "")))
    if owner is not None:
        keyring = await published_keyring(owner)
        if any(k.key_id == manifest.get("key_id") for k in trusted_keys_from_keyring(keyring)):
            database_keys = keyring
    return await asyncio.to_thread(build_sample, sample, database_keys)


def _read_junit(junit: Path | None) -> tuple[bytes | None, TestRun | None, str | None]:
    if junit is None:
        return None, None, "no report was given"
    if not junit.is_file():
        return None, None, f"{junit} does not exist"
    raw = junit.read_bytes()
    try:
        return raw, read_junit(junit), None
    except (ET.ParseError, ValueError) as exc:
        return None, None, f"{junit} is not a readable JUnit report: {exc}"


async def build_pack(
    config: Config, institution_code: str, out: Path, *, root: Path = PROJECT_ROOT,
    junit: Path | None = None, audit_count: int = 50, now: datetime | None = None,
    sample: SampleInput | None = None, sign: bool = True,
    identity: IdentityConfig | None = None,
) -> PackResult:
    institution = await Institution.get_or_none(code=institution_code)
    if institution is None:
        raise ValueError(f"no institution with code {institution_code}")
    generated = (now or datetime.now(UTC)).isoformat()
    commit = await asyncio.to_thread(git_commit, root)
    junit_xml, run, junit_problem = await asyncio.to_thread(_read_junit, junit)
    # Reading the source tree is blocking but short (a second): off the event loop anyway.
    entries = await asyncio.to_thread(build_map, root, run)
    all_tests = await asyncio.to_thread(source_tests, root)
    tests = tests_section(run, junit, junit_problem, all_tests, commit)
    ningbo = ningbo_map(entries, run)
    scripts_summary, script_files = await scripts()
    audit_info = await audit_samples(audit_count)

    signer, unsigned_reason = await _signer(config, institution) if sign else \
        (None, "signing was turned off")
    custody = [k.custody for k in await SealKey.filter(institution_id=institution.id)]
    engine_facts = await asyncio.to_thread(engines, config, root, identity)
    limits = limitation_rows(limitations(config, engine_facts, seal_custody=custody,
                                         institution_code=institution.code))
    sample_summary, sample_files = await _sample(sample)
    acceptance = acceptance_status(institution, open_items(
        tests, entries, run, ningbo, commit, signer is not None, sample_summary))

    files: dict[str, bytes] = {
        "acceptance.json": _json(acceptance),
        "limitations.json": _json({"engines": [asdict(e) for e in engine_facts],
                                   "limitations": limits}),
        "configuration.json": _json(configuration(config)),
        "scripts/index.json": _json(scripts_summary),
        "requirements.json": _json([{
            "id": e.id, "title": e.title, "title_zh": e.title_zh, "code": e.code,
            "gaps": e.gaps(run),
            "tests": [{"test": t.node_id, "how": t.how, "outcome": t.outcome}
                      for t in e.tests]} for e in entries]),
        "ningbo.json": _json(ningbo),
        "tests/summary.json": _json(tests),
        "audit/samples.json": _json(audit_info),
        "sample-session/summary.json": _json(sample_summary),
    }
    files.update({name: text.encode() for name, text in script_files.items()})
    files.update(sample_files)
    if junit_xml is not None:
        files["tests/junit.xml"] = junit_xml
    if signer is not None:
        files[f"keys/{institution.code}.json"] = _json(await published_keyring(institution))
    manifest_info = {"commit": asdict(commit),
                     "key_id": key_id_of(signer.public_key) if signer else None,
                     "unsigned_reason": unsigned_reason}
    files["index.html"] = _index(institution, generated, manifest_info, acceptance, limits,
                                 [asdict(e) for e in engine_facts], scripts_summary, entries,
                                 run, tests, ningbo, sample_summary, audit_info).encode()
    body = {"format": PACK_FORMAT,
            "institution": {"code": institution.code, "name": institution.name},
            "generated_at": generated, "commit": asdict(commit),
            "acceptance_status": acceptance["status"],
            "files": {name: hashlib.sha256(data).hexdigest()
                      for name, data in sorted(files.items())}}
    manifest = seal(body, signer.sign if signer else None,
                    signer.public_key if signer else None, unsigned_reason)
    files[MANIFEST] = _json(manifest)
    digest = await asyncio.to_thread(_write_zip, out, files)
    await audit.record_alone(Actor.system("evidence-pack"), "acceptance.pack_exported",
                             object_type="institution", object_id=str(institution.id),
                             details={"files": len(files), "sha256": digest,
                                      "commit": commit.id, "dirty": commit.dirty,
                                      "key_id": manifest["key_id"],
                                      "status": acceptance["status"]})
    return PackResult(out, entries, sorted(files), manifest, acceptance, tests, limits,
                      sample_summary)


def _write_zip(out: Path, files: dict[str, bytes]) -> str:
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as pack:
        for name in sorted(files):
            # Session archives are recordings already compressed: stored as they are.
            kind = zipfile.ZIP_STORED if name.endswith(".zip") else zipfile.ZIP_DEFLATED
            pack.writestr(name, files[name], compress_type=kind)
    return hashlib.sha256(out.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reporting.evidence_pack",
                                     description="Export the acceptance evidence pack (R-02).")
    parser.add_argument("--institution", required=True, help="institution code, e.g. DEMO-BANK")
    parser.add_argument("--out", required=True, type=Path, help="the zip file to write")
    parser.add_argument("--junit", type=Path, default=PROJECT_ROOT / "test-artifacts" /
                        "junit.xml", help="pytest --junitxml report of the latest test run")
    parser.add_argument("--sample-session", type=Path,
                        help="a sealed session: the folder the whole-session browser test "
                        "writes (default test-artifacts/sample-session, when it exists) or an "
                        "export .zip")
    parser.add_argument("--sample-qa-report", type=Path,
                        help="its QA report JSON (GET /qa/sessions/{id}/report with session_id)")
    parser.add_argument("--sample-keyring", type=Path,
                        help="the keyring published by the server that sealed the sample")
    parser.add_argument("--audit-samples", type=int, default=50)
    args = parser.parse_args(argv)
    if args.sample_session is not None and not args.sample_session.exists():
        print(f"{args.sample_session} does not exist", file=sys.stderr)
        return 2
    where = args.sample_session or (SAMPLE_DIR if SAMPLE_DIR.exists() else None)
    sample = SampleInput.from_path(where, args.sample_qa_report, args.sample_keyring) \
        if where is not None else None

    async def run() -> PackResult:
        from infra.database import open_database

        config = load_config()
        async with open_database(config.database_url):
            return await build_pack(config, args.institution, args.out, junit=args.junit,
                                    audit_count=args.audit_samples, sample=sample)

    try:
        result = asyncio.run(run())
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    covered = sum(1 for e in result.requirements if e.covered)
    signed = f"signed with key {result.manifest['key_id']}" if result.manifest["signature"] \
        else f"UNSIGNED ({result.manifest['unsigned_reason']})"
    counts = result.tests.get("counts")
    print(f"wrote {result.path} ({len(result.files)} files; {signed}; status "
          f"{result.acceptance['status']}; {covered}/{len(result.requirements)} requirements "
          f"covered by tests; test report: {counts or result.tests['problem']}; "
          f"{len(result.tests['not_run'])} tests not run in it; sample session: "
          f"{'verified' if result.sample.get('ok') else 'missing or not verified'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
