"""Network poor during the call (issue 17 item 2, R-30): the customer's page reports what its
connection measures (RTCPeerConnection.getStats: packet loss, round-trip time, the frame rate
and resolution it sends), the server adds what it receives itself (the customer's incoming frame
rate and loss in aiortc, `media.call.quality`), and decides here. The page never decides.

`assess` has two thresholds, so a connection near one limit does not flap: "poor" when any
measure is clearly bad, "good" when every known measure is clearly fine, otherwise unchanged.
A change puts `network_poor` (with the reasons and the measures) or `network_recovered` on the
timeline, which the agent's console shows live; the customer's page shows `HINT` while poor.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

from models.sessions import RecordingSession, SessionEvent
from workflow.core import WorkflowDeps, locked
from workflow.errors import Conflict
from workflow.event_types import EventType
from workflow.principals import CustomerPrincipal
from workflow.states import CALL_STATES

POOR_EVENT = EventType.NETWORK_POOR
RECOVERED_EVENT = EventType.NETWORK_RECOVERED
HINT = "网络信号较弱，请移到信号好的地方或连接 Wi-Fi"

# (poor at or beyond, good within): loss in %, round trip in ms, frames per second, height px.
LOSS_PCT = (10.0, 3.0)
RTT_MS = (800.0, 400.0)
FPS = (6.0, 10.0)
HEIGHT = (180, 240)

Verdict = Literal["poor", "good", "unsure"]


@dataclass(frozen=True)
class Measures:
    """One reading. Page: `loss_pct` (what the server's receiver reports back, RTCP),
    `rtt_ms`, `send_fps`, `send_height`; server: `recv_fps`, `recv_loss_pct`. None: unknown."""

    loss_pct: float | None = None
    rtt_ms: float | None = None
    send_fps: float | None = None
    send_height: int | None = None
    recv_fps: float | None = None
    recv_loss_pct: float | None = None
    # The sending browser's qualityLimitationReason; "cpu": fewer or smaller frames because the
    # phone is slow, which moving to Wi-Fi would not help, so the frame measures do not count.
    limitation: str | None = None


def assess(m: Measures) -> tuple[Verdict, list[str]]:
    """The verdict and, when poor, the reasons (in Chinese, for the agent)."""
    reasons: list[str] = []
    fine = True

    def high(value: float | None, limits: tuple[float, float], reason: str) -> None:
        nonlocal fine
        if value is None:
            return
        if value >= limits[0]:
            reasons.append(reason.format(value))
        elif value > limits[1]:
            fine = False

    def low(value: float | None, limits: tuple[float, float], reason: str) -> None:
        nonlocal fine
        if value is None:
            return
        if value < limits[0]:
            reasons.append(reason.format(value))
        elif value < limits[1]:
            fine = False

    high(m.loss_pct, LOSS_PCT, "客户上行丢包 {:.0f}%")
    high(m.recv_loss_pct, LOSS_PCT, "服务器收到的客户视频丢包 {:.0f}%")
    high(m.rtt_ms, RTT_MS, "网络往返时延 {:.0f} 毫秒")
    if m.limitation != "cpu":
        low(m.send_fps, FPS, "客户发送帧率 {:.1f} 帧/秒")
        low(m.recv_fps, FPS, "服务器收到的客户视频 {:.1f} 帧/秒")
        low(None if m.send_height is None else float(m.send_height), HEIGHT,
            "客户视频分辨率降至 {:.0f}p")
    if reasons:
        return "poor", reasons
    return ("good" if fine else "unsure"), []


async def report(deps: WorkflowDeps, principal: CustomerPrincipal,
                 measures: Measures) -> dict[str, Any]:
    """Records a change of the customer's network on the timeline; the page's hint back."""
    verdict, reasons = assess(measures)
    state = await RecordingSession.filter(id=principal.session_id).values_list("state",
                                                                               flat=True)
    if not state or state[0] not in CALL_STATES:
        raise Conflict("not_in_call", "当前不在视频通话中")
    poor_now = await _poor(principal.session_id)
    recorded = False
    if (verdict == "poor" and not poor_now) or (verdict == "good" and poor_now):
        async with locked(deps, principal.session_id, None) as unit:
            poor_now = await _poor(unit.session.id, unit.conn)  # as it is now, locked
            if unit.session.state in CALL_STATES and verdict != "unsure" \
                    and (verdict == "poor") != poor_now:
                known = {k: round(v, 1) if isinstance(v, float) else v
                         for k, v in asdict(measures).items() if v is not None}
                if verdict == "poor":
                    await unit.event(principal.actor, POOR_EVENT,
                                     {"reasons": reasons, "measures": known})
                else:
                    await unit.event(principal.actor, RECOVERED_EVENT, {"measures": known})
                poor_now, recorded = verdict == "poor", True
    return {"poor": poor_now, "hint": HINT if poor_now else "", "verdict": verdict,
            "reasons": reasons, "recorded": recorded}


async def _poor(session_id: UUID, conn: BaseDBAsyncClient | None = None) -> bool:
    """Whether the timeline's last network event says poor."""
    query = SessionEvent.filter(session_id=session_id, type__in=[POOR_EVENT, RECOVERED_EVENT])
    last = await (query.using_db(conn) if conn is not None else query).order_by("-seq").first()
    return last is not None and last.type == POOR_EVENT
