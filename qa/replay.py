"""The replay view of a session (R-41): the recorded segments placed on the session's clock and
every mark an inspector jumps to — each step and answer, identity results, presence breaches,
interruptions, signatures and the findings — plus the channel conversation when one is stored,
and the after-call transcript (`transcript_view`, its own audited read).

Media is fetched through short-lived playback tickets (a `<video>` element cannot send an
Authorization header); each ticket belongs to one user and one session, and the first fetch of
each segment under a ticket, and every download, is audited. The playback copy
(`qa.playback`: both parties side by side with the TTS mixed in) goes through the same
tickets and the same audit.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from typing import Any
from uuid import UUID

from redis.asyncio import Redis

from models.qa import QaFinding
from models.sales import Order, Product
from qa.findings import KINDS, SEVERITY_LABELS_ZH, Severity, clock
from qa.live_liveness import live_facts
from qa.playback import playback_view
from qa.timeline import PARTY_LABELS, load_timeline
from qa.transcripts import read_transcript_data
from storage import ObjectStore
from workflow.event_types import EventType
from workflow.principals import StaffPrincipal
from workflow.states import STATE_LABELS_ZH

TICKET_TTL_SECONDS = 2 * 3600
PRESENCE_LABELS = {
    "customer_left": "客户离开画面", "customer_returned": "客户回到画面",
    "second_face_appeared": "出现第二张人脸", "second_face_gone": "第二张人脸离开",
    "face_changed": "人脸与客户不一致", "face_restored": "客户本人回到画面",
    "sampling_lost": "客户画面未能采样（在场情况不明）", "sampling_resumed": "客户画面恢复采样",
}
ANSWER_LABELS = {"affirmative": "肯定答复", "negative": "否定答复", "unclear": "答复不明确"}


def _ticket_key(ticket: str) -> str:
    return "replay-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


async def issue_ticket(redis: Redis, principal: StaffPrincipal, session_id: UUID) -> str:
    ticket = secrets.token_urlsafe(32)
    await redis.set(_ticket_key(ticket), json.dumps({
        "user_id": principal.user_id, "label": f"{principal.username}({principal.role.value})",
        "session_id": str(session_id)}), ex=TICKET_TTL_SECONDS)
    return ticket


async def resolve_ticket(redis: Redis, ticket: str) -> dict[str, Any] | None:
    raw = await redis.get(_ticket_key(ticket))
    return json.loads(raw) if raw else None


async def first_fetch(redis: Redis, ticket: str, recording_id: int | str) -> bool:
    """True the first time this ticket fetches this segment (or ``"playback"``, the playback
    copy; range requests follow)."""
    key = f"{_ticket_key(ticket)}:played:{recording_id}"
    return bool(await redis.set(key, "1", nx=True, ex=TICKET_TTL_SECONDS))


async def replay_view(session_id: UUID, ticket: str,
                      store: ObjectStore | None = None) -> dict[str, Any]:
    """The page's data; with the evidence ``store``, also the playback copy (ready, or being
    made)."""
    t = await load_timeline(session_id)
    s = t.session
    order = await Order.get(id=s.order_id)
    product = await Product.get(id=s.product_id)
    marks: list[dict[str, Any]] = []

    def mark(kind: str, at_ms: int | None, label: str, **extra: Any) -> None:
        marks.append({"kind": kind, "at_ms": at_ms, "clock": clock(at_ms), "label": label,
                      **extra})

    steps = []
    for index, step in enumerate(t.steps):
        plays = t.plays_of(index)
        steps.append({"index": index, "id": step.id, "title": step.title,
                      "kind": step.kind.value, "speaker": step.speaker.value,
                      "answer": step.answer.value, "text": step.text,
                      "plays": [{"start_ms": p.start_ms, "end_ms": p.end_ms,
                                 "ended_by": p.ended_by} for p in plays]})
        for n, p in enumerate(plays):
            again = "（重播）" if n else ""
            mark("step", p.start_ms, f"{index + 1}. {step.title or step.id}{again}",
                 step_id=step.id)
    for a in t.acknowledgements:
        label = "签名/抄录" if a.answer_kind in ("signature", "handwriting") else \
            ANSWER_LABELS.get(a.answer.value, a.answer.value)
        mark("answer", a.offset_ms, f"客户{label}（{a.step_id}）", step_id=a.step_id,
             answer=a.answer.value)
    for c in t.identity_checks:
        at = t.offset(c.at)
        mark("identity", max(at, 0),
             f"身份核验第 {c.attempt} 次：{'通过' if c.passed else '未通过'}"
             + (f"（{'；'.join(c.reasons)}）" if c.reasons else ""),
             passed=c.passed, before_call=at < 0)
    # R-12 in the call: each live liveness challenge where the server gave it, with its
    # outcome, when it was done, its deadline and its face match against the card portrait.
    for run in live_facts(t).runs:
        name = (f"实时活体第 {run.attempt} 次" if run.spot is None
                else f"随机活体抽检第 {run.spot} 次（第 {run.attempt} 次检测）")
        for n, ch in enumerate(run.challenges, start=1):
            if ch.passed:
                outcome = "通过" + (f"（{(ch.completed_ms - ch.sent_ms) / 1000:.1f} 秒完成）"
                                    if ch.completed_ms is not None and ch.sent_ms is not None
                                    else "")
            else:
                outcome = f"未通过：{ch.reason or ch.reason_code or '未说明原因'}"
            face = ch.face_match or {}
            if face:
                outcome += (f"；人脸与证件照{'一致' if face.get('passed') else '不一致'}"
                            f"（距离 {face.get('distance')}，阈值 {face.get('threshold')}）")
            mark("liveness", ch.sent_ms,
                 f"{name}·动作 {n}/{len(run.challenges)}「{ch.label}」"
                 f"{outcome}", attempt=run.attempt, spot=run.spot, challenge_id=ch.id,
                 action=ch.action,
                 passed=ch.passed, completed_ms=ch.completed_ms, deadline_ms=ch.deadline_ms,
                 face_distance=face.get("distance"), face_passed=face.get("passed"))
        if not run.challenges:  # cut off before its first challenge went out
            mark("liveness", run.started_ms,
                 f"{name}："
                 + ("未完成" if run.passed is None else f"未通过：{run.reason or run.reason_code}"),
                 attempt=run.attempt, passed=bool(run.passed))
    for fact in t.presence:
        mark("presence", fact.at_ms, fact.message or PRESENCE_LABELS.get(fact.type, fact.type),
             type=fact.type, faces=fact.faces)
    # Issue 17 item 2: where the server found the customer's network poor (stutter explained).
    for e in t.events:
        if e.type in (EventType.NETWORK_POOR, EventType.NETWORK_RECOVERED):
            poor = e.type == EventType.NETWORK_POOR
            mark("network", t.offset(e.at),
                 f"客户网络信号较弱（{'，'.join(e.data.get('reasons') or [])}）" if poor
                 else "客户网络恢复", type=e.type)
    for gap in t.interruptions:
        mark("interruption", gap.start_ms, f"通话中断：{gap.reason or '未说明原因'}",
             until_ms=gap.end_ms)
    findings = await QaFinding.filter(session_id=session_id).order_by("id")
    latest = max((f.report_id or 0 for f in findings if f.source == "auto"), default=0)
    shown = [f for f in findings if f.source != "auto" or f.report_id == latest]
    for f in shown:
        title = KINDS[f.code].title if f.code in KINDS else f.code
        mark("finding", f.at_ms, f"{SEVERITY_LABELS_ZH[Severity(f.severity)]}：{title}",
             finding_id=f.id, severity=f.severity, requirement=f.requirement,
             message=f.message)
    marks.sort(key=lambda m: (m["at_ms"] is None, m["at_ms"] or 0))
    recordings: dict[str, list[dict[str, Any]]] = {}
    for r in t.recordings:
        start = t.offset(r.started_at)
        recordings.setdefault(r.kind, []).append({
            "id": r.id, "segment": r.segment, "start_ms": start,
            "end_ms": t.offset(r.ended_at) if r.ended_at else start + r.duration_ms,
            "duration_ms": r.duration_ms, "sha256": r.sha256,
            "url": f"/api/v1/replay/media/{ticket}/{r.id}",
        })
    return {
        "session": {"id": str(s.id), "state": s.state.value,
                    "state_label": STATE_LABELS_ZH[s.state],
                    "application_no": order.application_no, "product": product.name,
                    "customer_age": s.customer_age,
                    "recording_started_at": s.recording_started_at.isoformat()
                    if s.recording_started_at else None,
                    "duration_ms": t.end_ms,
                    "manifest_chain": (s.manifest or {}).get("chain")},
        "steps": steps, "marks": marks, "recordings": recordings,
        "findings": [{"id": f.id, "code": f.code, "severity": f.severity,
                      "requirement": f.requirement, "at_ms": f.at_ms, "message": f.message,
                      "step_id": f.step_id, "source": f.source,
                      "decision": f.decision.value if f.decision else None,
                      "decision_note": f.decision_note} for f in shown],
        "conversation": await _conversation(session_id, t.offset),
        "playback": None if store is None else await playback_view(store, session_id, ticket),
    }


async def _conversation(session_id: UUID, offset: Any) -> list[dict[str, Any]]:
    """The customer's chat from the channels (bot/), when that package stores one."""
    try:
        from models.channels import ConversationMessage
        from workflow.conversations import replay_view as message_view
    except ImportError:
        return []
    rows = await ConversationMessage.filter(session_id=session_id).order_by("at", "id")
    return [{**message_view(m), "offset_ms": offset(m.at)} for m in rows]


TRANSCRIPT_LABELS = {
    "pending": "通话转写生成中",
    "done": "通话转写（语音自动识别，仅供检索和定位，以录音录像为准）",
    "unavailable": "语音识别不可用，未生成通话转写",
    "failed": "通话转写生成失败",
}


async def transcript_view(store: ObjectStore, session_id: UUID) -> dict[str, Any]:
    """The after-call transcript for the replay page: each line with its party, its time on
    the recording clock and its text (R-41); or why there is none (yet)."""
    data = await read_transcript_data(store, session_id)
    if data is None:
        return {"status": "pending", "label": TRANSCRIPT_LABELS["pending"], "lines": []}
    status = str(data.get("status", ""))
    lines = [{"party": str(x.get("party", "")),
              "party_label": PARTY_LABELS.get(str(x.get("party", "")), str(x.get("party", ""))),
              "start_ms": int(x.get("start_ms", 0)), "end_ms": int(x.get("end_ms", 0)),
              "clock": clock(int(x.get("start_ms", 0))), "text": str(x.get("text", ""))}
             for x in data.get("lines") or []] if status == "done" else []
    return {"status": status, "label": TRANSCRIPT_LABELS.get(status, status),
            "engine": data.get("engine", ""), "engine_version": data.get("engine_version", ""),
            "made_at": data.get("made_at"), "lines": sorted(lines, key=lambda x: x["start_ms"])}
