"""Why an inspector may dismiss a finding (R-40), and what a dismissal counts for.

A dismissal needs a reason from a fixed list — the reasons a QA (质检) department accepts after
watching the marked moment — plus a note saying what the inspector saw. Each reason explains
only some kinds of finding: "the replay shows the recording is there" can answer a recording
gap, "a bystander who did not take part" only a second face. There is deliberately no reason
about the customer's network, device or convenience: a gap in the evidence is a gap whatever
caused it, and the remedy is a new recording. Some findings cannot be dismissed at all (an
altered segment, a failed identity check, a missing signature).

A critical finding's dismissal is only proposed by the first inspector; it counts once a second,
different inspector of the same institution approves it (four eyes). A major (or lesser)
finding's dismissal takes effect at once. A pass is possible only when every critical and
major finding stands dismissed that way (`blocking`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from models.qa import DismissalStatus, FindingDecision, QaDismissal, QaFinding
from qa.findings import FAILING, KINDS, Severity

# Kinds whose finding says the recording itself is missing or unusable.
EVIDENCE_GAPS = frozenset({"recording_missing", "recording_gap", "segment_missing",
                           "segment_unreadable", "video_missing", "audio_missing"})
# Kinds a detector inferred from the media or the timeline, which a replay can refute.
DETECTED = frozenset({"second_face", "face_changed", "customer_left", "presence_low",
                      "customer_silent", "agent_step_silent", "silence_gap",
                      "step_not_played_in_full", "step_not_reached", "acknowledgement_missing",
                      "negative_answer_unexplained", "duration_implausible",
                      "resolution_low", "frame_rate_low", "forbidden_phrasing",
                      "agent_forbidden_phrase", "answer_contradicted", "agent_step_not_read"})
# Never dismissed: tampering, the identity gates (before the call and, when required, live in
# the call before the script), the customer's own signature and sentence, and what an
# inspector wrote down themselves.
NOT_DISMISSIBLE = frozenset({"segment_altered", "identity_not_passed", "live_liveness_missing",
                             "signature_missing", "inspector_note"})


@dataclass(frozen=True)
class DismissalReason:
    code: str
    label: str  # Chinese, shown to inspectors
    note_hint: str  # Chinese: what the note must say
    kinds: frozenset[str]  # the finding codes this reason can explain

    def allows(self, finding_code: str) -> bool:
        return finding_code not in NOT_DISMISSIBLE and finding_code in self.kinds


ALL_KINDS = frozenset(KINDS) - NOT_DISMISSIBLE
REASONS: dict[str, DismissalReason] = {r.code: r for r in [
    DismissalReason(
        "replay_event_absent", "回放核实：标记时点未发生所述情况",
        "写明回放的时间段及所见所闻",
        DETECTED - {"resolution_low", "frame_rate_low", "forbidden_phrasing"}),
    DismissalReason(
        "detector_error", "经回放核实为自动检测误判（光线、遮挡、画像、环境噪声、词语误匹配等）",
        "写明误判的原因及核实的时间段", DETECTED),
    DismissalReason(
        "replay_recording_complete", "回放核实：该时段音视频完整、可正常播放（检测误报）",
        "写明回放核实的时间段及录像分段", EVIDENCE_GAPS),
    DismissalReason(
        "step_replayed_in_full", "该环节此后已重新完整播报，并获客户明确肯定答复",
        "写明重新播报及客户答复的时间点",
        frozenset({"step_not_played_in_full", "customer_silent", "agent_step_silent",
                   "negative_answer_unexplained", "duration_implausible"})),
    DismissalReason(
        "explained_on_record", "回放核实：销售人员已当场作出解释说明，客户表示理解",
        "写明解释说明的时间点及内容要点",
        frozenset({"negative_answer_unexplained", "interruption_unexplained"})),
    DismissalReason(
        "manual_presence_verified", "人工回放全程核验：客户本人始终在场，且无他人参与",
        "写明核验的时间段（应覆盖整个通话）",
        frozenset({"presence_unchecked", "presence_low", "customer_left"})),
    DismissalReason(
        "manual_face_verified", "人工比对：通话画面中的客户与身份证照片为同一人",
        "写明比对所用的通话时间点及证件照片", frozenset({"live_face_mismatch",
                                                        "live_face_unchecked"})),
    DismissalReason(
        "bystander_not_involved", "回放核实：入镜人员为无关人员，未参与或干预客户作答",
        "写明入镜时间段及人员情况", frozenset({"second_face"})),
    DismissalReason(
        "manual_listening", "人工回放全程收听：已核查销售人员用语、客户答复及话术宣读，未见问题",
        "写明收听的时间段（应覆盖整个通话）", frozenset({"transcript_unavailable"})),
    DismissalReason(
        "not_applicable", "该项要求不适用于本产品或本客户", "写明依据（产品类型、条款或监管规定）",
        frozenset({"mandatory_step_missing", "risk_sentence_missing"})),
    DismissalReason(
        "duplicate", "与本会话另一项问题重复（另一项仍须处理）", "写明重复的问题",
        ALL_KINDS),
]}


class Standing(StrEnum):
    """Where a finding stands for the verdict."""

    UNDECIDED = "undecided"
    CONFIRMED = "confirmed"
    DISMISSED = "dismissed"  # in effect
    DISMISSAL_PROPOSED = "dismissal_proposed"  # critical: waiting for a second inspector
    DISMISSAL_UNAPPROVED = "dismissal_unapproved"  # marked dismissed without a valid record


STANDING_LABELS_ZH = {
    Standing.UNDECIDED: "未处理", Standing.CONFIRMED: "已确认", Standing.DISMISSED: "已排除",
    Standing.DISMISSAL_PROPOSED: "排除待第二名质检员复核",
    Standing.DISMISSAL_UNAPPROVED: "排除未经有效复核",
}


def reasons_for(finding_code: str) -> list[DismissalReason]:
    return [r for r in REASONS.values() if r.allows(finding_code)]


def needs_four_eyes(finding: QaFinding) -> bool:
    return Severity(finding.severity) == Severity.CRITICAL


def in_effect(finding: QaFinding, dismissal: QaDismissal) -> bool:
    """An approved dismissal with a listed reason; for a critical finding approved by someone
    other than its proposer."""
    if dismissal.status != DismissalStatus.APPROVED or dismissal.finding_id != finding.id:
        return False
    reason = REASONS.get(dismissal.reason_code)
    if reason is None or not reason.allows(finding.code):
        return False
    if needs_four_eyes(finding):
        return (dismissal.four_eyes and dismissal.reviewed_by_id is not None
                and dismissal.reviewed_by_id != dismissal.proposed_by_id)
    return True


def standing(finding: QaFinding, dismissals: Iterable[QaDismissal]) -> Standing:
    mine = [d for d in dismissals if d.finding_id == finding.id]
    if finding.decision == FindingDecision.CONFIRMED:
        return Standing.CONFIRMED
    if finding.decision == FindingDecision.DISMISSED:
        effective = any(in_effect(finding, d) for d in mine)
        return Standing.DISMISSED if effective else Standing.DISMISSAL_UNAPPROVED
    if any(d.status == DismissalStatus.PROPOSED for d in mine):
        return Standing.DISMISSAL_PROPOSED
    return Standing.UNDECIDED


def failing(finding: QaFinding) -> bool:
    return Severity(finding.severity) in FAILING


def blocking(findings: Iterable[QaFinding],
             dismissals: Iterable[QaDismissal]) -> list[tuple[QaFinding, Standing]]:
    """The critical and major findings that stand in the way of a pass: every one not
    dismissed in effect."""
    rows = list(dismissals)
    out: list[tuple[QaFinding, Standing]] = []
    for f in findings:
        if failing(f):
            s = standing(f, rows)
            if s != Standing.DISMISSED:
                out.append((f, s))
    return out


def counts(findings: Iterable[QaFinding], dismissals: Iterable[QaDismissal]) -> dict[str, int]:
    """The real counts for the verdict's audit entry: every finding, and the failing ones by
    standing (pending = undecided, proposed or dismissed without a valid record)."""
    rows = list(dismissals)
    all_findings = list(findings)
    result = {"findings": len(all_findings), "failing": 0, "confirmed": 0, "dismissed": 0,
              "dismissed_four_eyes": 0, "pending": 0}
    for f in all_findings:
        if not failing(f):
            continue
        result["failing"] += 1
        s = standing(f, rows)
        if s == Standing.CONFIRMED:
            result["confirmed"] += 1
        elif s == Standing.DISMISSED:
            result["dismissed"] += 1
            result["dismissed_four_eyes"] += needs_four_eyes(f)
        else:
            result["pending"] += 1
    return result


def describe(blocked: list[tuple[QaFinding, Standing]], limit: int = 8) -> str:
    """Chinese: the findings named, for the refusal of a pass."""
    parts = []
    for f, s in blocked[:limit]:
        title = KINDS[f.code].title if f.code in KINDS else f.code
        parts.append(f"#{f.id} {title}（{STANDING_LABELS_ZH[s]}）")
    more = f"等 {len(blocked)} 项" if len(blocked) > limit else ""
    return "；".join(parts) + more


def catalogue() -> list[dict[str, Any]]:
    return [{"code": r.code, "label": r.label, "note_hint": r.note_hint,
             "finding_codes": sorted(r.kinds - NOT_DISMISSIBLE)} for r in REASONS.values()]
