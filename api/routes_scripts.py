"""The script library for product owners (R-21, R-22, R-23): upload a draft from YAML, validate,
submit, approve (a second person), publish (speech pre-rendered in the background), retire,
compare versions. Every change is audited by the library service."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from api.auth import staff
from api.http import path_int, read_json
from api.keys import DEPS, REDIS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.schemas import Body
from models.sales import ScriptStatus, ScriptVersion
from scripts_library import versions
from scripts_library.lint import lint
from scripts_library.speech import read_progress
from security.roles import Permission

api = Api()
P = Permission


class DraftBody(Body):
    yaml: str = Field(min_length=1, max_length=500_000)
    source_name: str = Field(default="upload.yaml", max_length=120)


def _view(version: ScriptVersion, *, full: bool = False) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": version.id, "product_id": version.product_id, "version": version.version,
        "status": version.status.value, "content_hash": version.content_hash,
        "title": version.document.get("script", {}).get("title", ""),
        "created_by": version.created_by_id, "submitted_by": version.submitted_by_id,
        "approved_by": version.approved_by_id,
        "created_at": version.created_at.isoformat(),
        "published_at": version.published_at.isoformat() if version.published_at else None,
        "lint": version.lint, "prerender_status": version.prerender_status,
    }
    if full:
        data["yaml"] = version.source_yaml
        data["audio"] = version.audio
    return data


@api.endpoint("GET", "/scripts", summary="Script versions (filter by product code, status)",
              tag="scripts", permission=P.EDIT_SCRIPT, query=("product", "status"))
async def list_scripts(request: web.Request) -> web.Response:
    query = ScriptVersion.all()
    if product := request.query.get("product"):
        query = query.filter(product__code=product[:32])
    if status := request.query.get("status"):
        try:
            query = query.filter(status=ScriptStatus(status))
        except ValueError as exc:
            raise ApiProblem(422, "validation_failed", "状态参数无效", field="status") from exc
    rows = await query.order_by("product_id", "version")
    return json_response({"items": [_view(v) for v in rows]})


@api.endpoint("POST", "/scripts", summary="Create a draft version from YAML", tag="scripts",
              permission=P.EDIT_SCRIPT, body=DraftBody,
              responses={422: "the YAML does not load (file, line, field named)"})
async def post_script(request: web.Request) -> web.Response:
    body = await read_json(request, DraftBody)
    version = await versions.create_draft(staff(request), body.yaml, body.source_name)
    return json_response(_view(version, full=True), status=201)


@api.endpoint("GET", "/scripts/{version_id}", summary="One script version with its YAML",
              tag="scripts", permission=P.EDIT_SCRIPT)
async def get_script(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    return json_response(_view(version, full=True))


@api.endpoint("POST", "/scripts/{version_id}/validate",
              summary="Lint a version (R-21, R-22); findings in Chinese", tag="scripts",
              permission=P.EDIT_SCRIPT)
async def post_validate(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    findings = versions.findings_json(lint(versions.document_of(version)))
    publishable = not any(f["severity"] == "error" for f in findings)
    return json_response({"publishable": publishable, "findings": findings})


def _transition(action: str, permission: Permission, summary: str) -> None:
    operation = getattr(versions, action)

    async def handler(request: web.Request) -> web.Response:
        version = await operation(staff(request), path_int(request, "version_id"))
        if action == "publish":
            await request.app[DEPS].jobs.enqueue("prerender_script", version_id=version.id)
        return json_response(_view(version))

    api.endpoint("POST", f"/scripts/{{version_id}}/{action}", summary=summary, tag="scripts",
                 permission=permission)(handler)


_transition("submit", P.EDIT_SCRIPT, "Submit a draft for approval (lint must pass)")
_transition("approve", P.PUBLISH_SCRIPT, "Approve (a second person, not the author)")
_transition("publish", P.PUBLISH_SCRIPT,
            "Publish: immutable from now on; speech pre-rendered in the background")
_transition("retire", P.PUBLISH_SCRIPT, "Retire a version")


@api.endpoint("GET", "/scripts/{version_id}/prerender",
              summary="Progress of the speech pre-rendering job", tag="scripts",
              permission=P.EDIT_SCRIPT)
async def get_prerender(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    progress = await read_progress(request.app[REDIS], "script", str(version.id))
    return json_response({"status": version.prerender_status or progress.get("status", ""),
                          "progress": progress, "error": version.prerender_error})


@api.endpoint("GET", "/scripts/{version_id}/diff/{other_id}",
              summary="What changed between two versions", tag="scripts",
              permission=P.EDIT_SCRIPT)
async def get_diff(request: web.Request) -> web.Response:
    result = await versions.diff(path_int(request, "version_id"), path_int(request, "other_id"))
    d = result.diff
    return json_response({
        "old": result.old.id, "new": result.new.id, "summary": d.summary(),
        "added_steps": d.added_steps, "removed_steps": d.removed_steps,
        "changed_steps": d.changed_steps, "reordered": d.reordered,
        "metadata_changed": d.metadata_changed, "unified": d.unified,
    })
