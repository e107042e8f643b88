"""The versioned library behind the API (R-21, R-22, R-23): draft → submitted → approved by a
second person → published (immutable, content hash) → retired; lint blocks publishing; every
step audited; sessions pin the exact version and hash; speech pre-rendered with progress."""

from __future__ import annotations

import re
from pathlib import Path
from uuid import UUID

from models.audit import AuditEntry
from models.sales import ScriptVersion
from models.sessions import RecordingSession, SessionEvent
from scripts_library.catalogue import LIBRARY_DIR
from tests.harness import HERE, Harness
from workflow.script_speech import prerender_script_version
from workflow.speech import prepare_session_speech

SAMPLE = (LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml").read_text(encoding="utf-8")


def version_2(text: str = SAMPLE) -> str:
    return text.replace("  version: 1\n", "  version: 2\n", 1).replace(
        "属于传统型终身寿险", "属于传统型终身寿险产品")


async def _draft(harness: Harness, yaml: str, user: str = "po01") -> dict:
    r = await harness.as_(user, "POST", "/scripts", json={"yaml": yaml, "source_name": "v2.yaml"})
    assert r.status == 201, r.body
    return r.body  # type: ignore[no-any-return]


async def test_the_whole_review_path_with_four_eyes_R23(harness: Harness) -> None:
    draft = await _draft(harness, version_2())
    assert draft["status"] == "draft" and draft["lint"] == []
    assert draft["content_hash"].startswith("sha256:")
    vid = draft["id"]
    r = await harness.as_("po01", "POST", f"/scripts/{vid}/submit")
    assert r.body["status"] == "submitted"
    r = await harness.as_("po01", "POST", f"/scripts/{vid}/approve")
    assert r.status == 403 and r.body["code"] == "four_eyes"
    r = await harness.as_("agent01", "POST", f"/scripts/{vid}/approve")
    assert r.status == 403
    r = await harness.as_("po02", "POST", f"/scripts/{vid}/publish")
    assert r.status == 409  # not approved yet
    r = await harness.as_("po02", "POST", f"/scripts/{vid}/approve")
    assert r.body["status"] == "approved"
    r = await harness.as_("po02", "POST", f"/scripts/{vid}/publish")
    assert r.body["status"] == "published"
    listed = await harness.as_("po01", "GET", "/scripts?product=YA-ZSS-001")
    assert [v["status"] for v in listed.body["items"]] == ["retired", "published"]
    actions = await AuditEntry.filter(object_id=str(vid)).values_list("action", flat=True)
    assert list(actions) == ["script.draft", "script.submit", "script.approve", "script.publish"]


async def test_sessions_pin_the_published_version_and_its_hash_R23(harness: Harness) -> None:
    draft = await _draft(harness, version_2())
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        await harness.as_(user, "POST", f"/scripts/{draft['id']}/{action}")
    walk = await harness.walk_to("created")
    session = await RecordingSession.get(id=walk.session_id)
    assert session.script_version_id == draft["id"]
    assert session.script_hash == draft["content_hash"]
    product_step = next(s for s in session.steps if s["id"] == "product")
    assert "属于传统型终身寿险产品" in product_step["text"]


async def test_a_script_missing_a_mandatory_step_cannot_be_submitted_R21(
    harness: Harness,
) -> None:
    without_exclusions = re.sub(r"\n  - id: exclusions\n(    .*\n|\n)*?(?=  - id:)", "\n",
                                version_2())
    draft = await _draft(harness, without_exclusions)
    assert any(f["severity"] == "error" for f in draft["lint"])
    r = await harness.as_("po01", "POST", f"/scripts/{draft['id']}/submit")
    assert r.status == 409 and r.body["code"] == "script_lint_failed"
    assert any("责任免除" in f["message"] for f in r.body["findings"])


async def test_forbidden_phrasing_blocks_publishing_R22(harness: Harness) -> None:
    promising = version_2().replace("属于传统型终身寿险产品", "收益比银行存款高，保本保息")
    draft = await _draft(harness, promising)
    r = await harness.as_("po01", "POST", f"/scripts/{draft['id']}/submit")
    assert r.status == 409
    validate = await harness.as_("po01", "POST", f"/scripts/{draft['id']}/validate")
    assert validate.body["publishable"] is False


async def test_a_broken_file_names_the_line_and_field(harness: Harness) -> None:
    broken = version_2().replace("  cooling_off_days: 15\n", "  cooling_off_days: fifteen\n")
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": broken})
    assert r.status == 422 and r.body["code"] == "script_invalid"
    problem = r.body["problems"][0]
    assert problem["field"] == "product.cooling_off_days" and problem["line"] == 20


async def test_version_numbers_follow_on(harness: Harness) -> None:
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": SAMPLE})
    assert r.status == 422 and r.body["expected"] == 2


async def test_a_tampered_published_version_is_refused_for_new_sessions_R23(
    harness: Harness,
) -> None:
    version = await ScriptVersion.get(product__code="YA-ZSS-001", status="published")
    await ScriptVersion.filter(id=version.id).update(
        source_yaml=version.source_yaml.replace("终身寿险", "终身保险"))
    order_id = await harness.create_order()
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": order_id, "location": HERE})
    assert r.status == 409 and r.body["code"] == "script_hash_mismatch"


async def test_diff_between_versions(harness: Harness) -> None:
    draft = await _draft(harness, version_2())
    first = await ScriptVersion.get(product__code="YA-ZSS-001", version=1)
    r = await harness.as_("po01", "GET", f"/scripts/{first.id}/diff/{draft['id']}")
    assert r.body["changed_steps"] == ["product"] and "属于传统型终身寿险产品" in r.body["unified"]


async def test_publishing_prerenders_speech_and_the_second_run_hits_the_cache_R23(
    harness: Harness, tmp_path: Path
) -> None:
    version = await ScriptVersion.get(product__code="YA-ZSS-001", version=1)
    from app.factory import speech_settings

    settings = speech_settings(harness.config)
    await prerender_script_version(version.id, settings, harness.redis)
    version = await ScriptVersion.get(id=version.id)
    assert version.prerender_status == "done" and version.audio
    assert {a["engine"] for a in version.audio.values()} == {"espeak"}
    r = await harness.as_("po01", "GET", f"/scripts/{version.id}/prerender")
    first = r.body["progress"]
    assert first["status"] == "done" and first["done"] == first["total"] > 3
    await prerender_script_version(version.id, settings, harness.redis)
    again = (await harness.as_("po01", "GET", f"/scripts/{version.id}/prerender")).body
    assert again["progress"]["cache_hits"] == first["total"]

    # A session's own steps find the static ones cached and pin every audio hash.
    walk = await harness.walk_to("created")
    count = await prepare_session_speech(harness.deps, settings, harness.redis,
                                         UUID(walk.session_id))
    session = await RecordingSession.get(id=walk.session_id)
    spoken = [s for s in session.steps if s["speaker"] == "tts"]
    assert count == len(spoken) and all(len(s["audio"]["sha256"]) == 64 for s in spoken)
    event = await SessionEvent.get(session_id=walk.session_id, type="speech_prepared")
    assert event.data["engines"] == ["espeak"]
