"""The script library for product owners (R-21, R-22, R-23): upload a draft from YAML, validate,
submit, approve (a second person), publish (speech pre-rendered in the background), retire,
compare versions. Every change is audited by the library service."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import Field

from api.auth import staff
from api.http import ChoiceQuery, TextQuery, path_int, read_json
from api.keys import CONFIG, DEPS, REDIS
from api.problems import ApiProblem, json_response
from api.registry import Api
from api.responses import (
    LintFindingView,
    LintResult,
    PrerenderView,
    Resp,
    ScriptDiff,
    ScriptList,
    ScriptVersionFull,
    ScriptVersionView,
)
from api.schemas import Body
from media.tts.base import TtsError
from media.tts.prerender import prerender
from models.sales import ScriptStatus, ScriptVersion
from scripts_library import placeholders
from scripts_library.lint import lint
from scripts_library.loader import ScriptLoadError, load_script_text
from scripts_library.model import Speaker
from security.roles import Permission
from workflow import script_versions as versions
from workflow.script_speech import read_progress

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


PRODUCT = TextQuery("product", 32)
STATUS = ChoiceQuery.of("status", ScriptStatus)


@api.endpoint("GET", "/scripts", summary="Script versions (filter by product code, status)",
              tag="scripts", permission=P.EDIT_SCRIPT, query=(PRODUCT, STATUS),
              returns=ScriptList)
async def list_scripts(request: web.Request) -> web.Response:
    query = ScriptVersion.all()
    if product := PRODUCT.read(request):
        query = query.filter(product__code=product)
    if status := STATUS.read(request):
        query = query.filter(status=ScriptStatus(status))
    rows = await query.order_by("product_id", "version")
    return json_response({"items": [_view(v) for v in rows]})


@api.endpoint("POST", "/scripts", summary="Create a draft version from YAML", tag="scripts",
              permission=P.EDIT_SCRIPT, body=DraftBody, returns=ScriptVersionFull, status=201,
              responses={404: "the script's product does not exist",
                         422: "the YAML does not load (file, line, field named)"})
async def post_script(request: web.Request) -> web.Response:
    body = await read_json(request, DraftBody)
    version = await versions.create_draft(staff(request), body.yaml, body.source_name)
    return json_response(_view(version, full=True), status=201)


@api.endpoint("GET", "/scripts/{version_id}", summary="One script version with its YAML",
              tag="scripts", permission=P.EDIT_SCRIPT, returns=ScriptVersionFull)
async def get_script(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    return json_response(_view(version, full=True))


@api.endpoint("POST", "/scripts/{version_id}/validate",
              summary="Lint a version (R-21, R-22); findings in Chinese", tag="scripts",
              permission=P.EDIT_SCRIPT, returns=LintResult,
              responses={409: "the stored document no longer loads"})
async def post_validate(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    findings = versions.findings_json(lint(versions.document_of(version)))
    publishable = not any(f["severity"] == "error" for f in findings)
    return json_response({"publishable": publishable, "findings": findings})


class StepBrief(Resp):
    id: str
    title: str
    speaker: str


class DraftLint(Resp):
    """The lint of YAML being edited (nothing stored): load errors and lint findings with
    their lines, and the steps the text defines (R-21, R-22)."""

    loads: bool
    publishable: bool
    findings: list[LintFindingView]
    steps: list[StepBrief]


@api.endpoint("POST", "/scripts/lint",
              summary="Lint YAML being edited without storing it (the editor's live lint)",
              tag="scripts", permission=P.EDIT_SCRIPT, body=DraftBody, returns=DraftLint)
async def post_lint(request: web.Request) -> web.Response:
    body = await read_json(request, DraftBody)
    try:
        document = load_script_text(body.yaml, body.source_name)
    except ScriptLoadError as exc:
        problems = [{"code": "script_invalid", "severity": "error",
                     "message": (f"{p.field}：" if p.field else "") + p.message,
                     "step_id": None, "line": p.line} for p in exc.problems]
        return json_response({"loads": False, "publishable": False, "findings": problems,
                              "steps": []})
    findings = versions.findings_json(lint(document))
    steps = [{"id": s.id, "title": s.display_title, "speaker": s.speaker.value}
             for s in document.steps]
    return json_response({"loads": True,
                          "publishable": not any(f["severity"] == "error" for f in findings),
                          "findings": findings, "steps": steps})


@dataclass(frozen=True)
class _Spoken:
    id: str
    text: str
    speaker: str = "tts"


@api.endpoint("GET", "/scripts/{version_id}/steps/{step_id}/speech",
              summary="Hear a step: the WAV the call would play, through the TTS cache (order "
              "values not yet known are read as their labels)", tag="scripts",
              permission=P.EDIT_SCRIPT, produces="audio/wav",
              responses={404: "no such version or step",
                         409: "the stored document no longer matches its hash",
                         422: "the agent reads this step in person (no speech)",
                         503: "no speech engine could render the text"})
async def get_step_speech(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    document = versions.document_of(version)
    step_id = request.match_info["step_id"]
    step = next((s for s in document.steps if s.id == step_id), None)
    if step is None:
        raise ApiProblem(404, "step_not_found", "该话术版本中没有这个步骤")
    if step.speaker is not Speaker.TTS:
        raise ApiProblem(422, "step_spoken_by_agent", "该步骤由销售人员本人宣读，没有合成语音")
    builtins = document.builtin_values()

    def value_of(name: str) -> str:
        if name in builtins:
            return builtins[name]
        declared = document.variables.get(name)
        return declared.label if declared else name

    text = placeholders.substitute(step.text, value_of)
    config = request.app[CONFIG]
    try:
        report = await prerender([_Spoken(step.id, text)], list(config.tts_engines),
                                 config.tts_cache_dir, store=request.app[DEPS].storage)
    except TtsError:
        raise ApiProblem(503, "speech_unavailable",
                         "暂时无法生成该步骤的语音，请稍后再试") from None
    speech = report.steps[0].speech
    return web.Response(body=speech.wav_path.read_bytes(), content_type="audio/wav",
                        headers={"Cache-Control": "private, no-store",
                                 "X-Speech-Engine": speech.engine,
                                 "X-Content-SHA256": speech.wav_sha256})


def _transition(action: str, permission: Permission, summary: str) -> None:
    operation = getattr(versions, action)

    async def handler(request: web.Request) -> web.Response:
        version = await operation(staff(request), path_int(request, "version_id"))
        if action == "publish":
            await request.app[DEPS].jobs.enqueue("prerender_script", version_id=version.id)
        return json_response(_view(version))

    api.endpoint("POST", f"/scripts/{{version_id}}/{action}", summary=summary, tag="scripts",
                 permission=permission, returns=ScriptVersionView,
                 responses={403: "the author may not approve", 409: "not allowed in the "
                            "version's status, or the lint finds errors"})(handler)


_transition("submit", P.EDIT_SCRIPT, "Submit a draft for approval (lint must pass)")
_transition("approve", P.PUBLISH_SCRIPT, "Approve (a second person, not the author)")
_transition("publish", P.PUBLISH_SCRIPT,
            "Publish: immutable from now on; speech pre-rendered in the background")
_transition("retire", P.PUBLISH_SCRIPT, "Retire a version")


@api.endpoint("GET", "/scripts/{version_id}/prerender",
              summary="Progress of the speech pre-rendering job", tag="scripts",
              permission=P.EDIT_SCRIPT, returns=PrerenderView)
async def get_prerender(request: web.Request) -> web.Response:
    version = await versions.get(path_int(request, "version_id"))
    progress = await read_progress(request.app[REDIS], "script", str(version.id))
    return json_response({"status": version.prerender_status or progress.get("status", ""),
                          "progress": progress, "error": version.prerender_error})


@api.endpoint("GET", "/scripts/{version_id}/diff/{other_id}",
              summary="What changed between two versions", tag="scripts",
              permission=P.EDIT_SCRIPT, returns=ScriptDiff,
              responses={409: "versions of different products"})
async def get_diff(request: web.Request) -> web.Response:
    result = await versions.diff(path_int(request, "version_id"), path_int(request, "other_id"))
    d = result.diff
    return json_response({
        "old": result.old.id, "new": result.new.id, "summary": d.summary(),
        "added_steps": d.added_steps, "removed_steps": d.removed_steps,
        "changed_steps": d.changed_steps, "reordered": d.reordered,
        "metadata_changed": d.metadata_changed, "unified": d.unified,
    })
