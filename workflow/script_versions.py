"""The versioned script library in the database (R-21, R-22, R-23): draft → submitted →
approved (by a second person with publish_script) → published → retired.

A published version is immutable and identified by its content hash; editing means uploading a
new draft. Every step of the lifecycle is audited. Sessions pin the version and hash they play.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.transactions import in_transaction

from models.sales import Product, ScriptStatus, ScriptVersion
from scripts_library.canonical import content_hash
from scripts_library.diff import ScriptDiff, diff_documents
from scripts_library.lint import LintFinding, has_errors, lint
from scripts_library.loader import ScriptLoadError, load_script_text
from scripts_library.model import ScriptDocument
from security import audit
from security.roles import Permission
from workflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from workflow.principals import StaffPrincipal

# Product types and grades of the library, as the database stores them.
GRADE_RANK = {"basic": 1, "intermediate": 2, "advanced": 3}


def findings_json(findings: list[LintFinding]) -> list[dict[str, Any]]:
    return [{"code": f.code, "severity": f.severity.value, "message": f.message,
             "step_id": f.step_id, "line": f.line} for f in findings]


def parse(source_yaml: str, source_name: str) -> ScriptDocument:
    """Load errors become a 422 naming the file, line and field of every problem."""
    try:
        return load_script_text(source_yaml, source_name)
    except ScriptLoadError as exc:
        raise InvalidInput(
            "script_invalid", "话术文件格式有误：" + "；".join(p.message for p in exc.problems[:3]),
            problems=[{"source": p.source, "line": p.line, "field": p.field,
                       "message": p.message} for p in exc.problems],
        ) from exc


def document_of(version: ScriptVersion) -> ScriptDocument:
    """The parsed document of a stored version, checked against its content hash (R-23)."""
    document = load_script_text(version.source_yaml, f"script_version:{version.id}")
    if content_hash(document) != version.content_hash:
        raise Conflict("script_hash_mismatch", "话术内容与其版本哈希不一致，已拒绝使用")
    return document


def _require(principal: StaffPrincipal, permission: Permission) -> None:
    if not principal.can(permission):
        raise Forbidden("permission_denied", "您没有执行此操作的权限",
                        permission=permission.value)


async def create_draft(
    principal: StaffPrincipal, source_yaml: str, source_name: str = "upload.yaml"
) -> ScriptVersion:
    _require(principal, Permission.EDIT_SCRIPT)
    document = parse(source_yaml, source_name)
    product = await Product.get_or_none(code=document.product.code)
    if product is None:
        raise NotFound("product_not_found",
                       f"产品 {document.product.code} 不存在，请先由管理员建立产品")
    if product.product_type.value != document.product.type.value:
        raise InvalidInput("product_type_mismatch",
                           f"话术的产品类型与产品 {product.code} 登记的类型不一致")
    async with in_transaction() as conn:
        latest = await ScriptVersion.filter(product_id=product.id).using_db(conn).order_by(
            "-version").first()
        number = (latest.version if latest else 0) + 1
        if document.script.version != number:
            raise InvalidInput("script_version_number",
                               f"新版本的 script.version 应为 {number}",
                               expected=number)
        findings = lint(document)
        version = await ScriptVersion.create(
            product_id=product.id, version=number, status=ScriptStatus.DRAFT,
            source_yaml=source_yaml, document=document.model_dump(mode="json"),
            content_hash=content_hash(document), created_by_id=principal.user_id,
            lint=findings_json(findings), using_db=conn,
        )
        await audit.record(conn, principal.actor, "script.draft", object_type="script_version",
                           object_id=str(version.id),
                           details={"product": product.code, "version": number,
                                    "content_hash": version.content_hash})
    return version


async def _locked(conn: Any, version_id: int) -> ScriptVersion:
    version = await ScriptVersion.select_for_update().using_db(conn).get_or_none(id=version_id)
    if version is None:
        raise NotFound("script_not_found", "找不到该话术版本")
    return version


def _from(version: ScriptVersion, *allowed: ScriptStatus) -> None:
    if version.status not in allowed:
        raise Conflict("script_illegal_transition",
                       f"话术版本当前状态为 {version.status.value}，不能执行此操作",
                       script_status=version.status.value)


async def submit(principal: StaffPrincipal, version_id: int) -> ScriptVersion:
    _require(principal, Permission.EDIT_SCRIPT)
    async with in_transaction() as conn:
        version = await _locked(conn, version_id)
        _from(version, ScriptStatus.DRAFT)
        findings = lint(document_of(version))
        version.lint = findings_json(findings)
        if has_errors(findings):
            await version.save(using_db=conn, update_fields=["lint"])
            raise Conflict("script_lint_failed", "话术未通过合规检查，不能提交审核",
                           findings=version.lint)
        version.status = ScriptStatus.SUBMITTED
        version.submitted_by_id = principal.user_id
        version.submitted_at = datetime.now(UTC)
        await version.save(using_db=conn)
        await audit.record(conn, principal.actor, "script.submit",
                           object_type="script_version", object_id=str(version.id))
    return version


async def approve(principal: StaffPrincipal, version_id: int) -> ScriptVersion:
    """A second person with publish_script approves: never the author or the submitter."""
    _require(principal, Permission.PUBLISH_SCRIPT)
    async with in_transaction() as conn:
        version = await _locked(conn, version_id)
        _from(version, ScriptStatus.SUBMITTED)
        if principal.user_id in (version.created_by_id, version.submitted_by_id):
            raise Forbidden("four_eyes", "话术须由编写人以外的另一位有发布权限的人员审核")
        version.status = ScriptStatus.APPROVED
        version.approved_by_id = principal.user_id
        version.approved_at = datetime.now(UTC)
        await version.save(using_db=conn)
        await audit.record(conn, principal.actor, "script.approve",
                           object_type="script_version", object_id=str(version.id))
    return version


async def publish(principal: StaffPrincipal, version_id: int) -> ScriptVersion:
    """Publishing re-lints (R-21, R-22) and retires the previously published version."""
    _require(principal, Permission.PUBLISH_SCRIPT)
    async with in_transaction() as conn:
        version = await _locked(conn, version_id)
        _from(version, ScriptStatus.APPROVED)
        findings = lint(document_of(version))
        if has_errors(findings):
            raise Conflict("script_lint_failed", "话术未通过合规检查，不能发布",
                           findings=findings_json(findings))
        now = datetime.now(UTC)
        retired = await ScriptVersion.filter(
            product_id=version.product_id, status=ScriptStatus.PUBLISHED
        ).using_db(conn).update(status=ScriptStatus.RETIRED, retired_at=now)
        version.status = ScriptStatus.PUBLISHED
        version.published_at = now
        version.prerender_status = "pending"
        await version.save(using_db=conn)
        await audit.record(conn, principal.actor, "script.publish",
                           object_type="script_version", object_id=str(version.id),
                           details={"content_hash": version.content_hash,
                                    "retired_previous": retired})
    return version


async def retire(principal: StaffPrincipal, version_id: int) -> ScriptVersion:
    _require(principal, Permission.PUBLISH_SCRIPT)
    async with in_transaction() as conn:
        version = await _locked(conn, version_id)
        _from(version, ScriptStatus.PUBLISHED, ScriptStatus.DRAFT, ScriptStatus.SUBMITTED,
              ScriptStatus.APPROVED)
        version.status = ScriptStatus.RETIRED
        version.retired_at = datetime.now(UTC)
        await version.save(using_db=conn)
        await audit.record(conn, principal.actor, "script.retire",
                           object_type="script_version", object_id=str(version.id))
    return version


async def get(version_id: int) -> ScriptVersion:
    version = await ScriptVersion.get_or_none(id=version_id)
    if version is None:
        raise NotFound("script_not_found", "找不到该话术版本")
    return version


@dataclass(frozen=True)
class VersionDiff:
    old: ScriptVersion
    new: ScriptVersion
    diff: ScriptDiff


async def diff(old_id: int, new_id: int) -> VersionDiff:
    old, new = await get(old_id), await get(new_id)
    return VersionDiff(old, new, diff_documents(document_of(old), document_of(new)))


async def published_for(product_id: int) -> ScriptVersion | None:
    return await ScriptVersion.filter(
        product_id=product_id, status=ScriptStatus.PUBLISHED
    ).order_by("-version").first()
