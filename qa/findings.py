"""Findings of the automated checks (R-40): what is wrong, how badly, which requirement it
breaks and where in the recording (milliseconds from the start of the recording)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    CRITICAL = "critical"  # the session cannot pass as it is
    MAJOR = "major"  # an inspector must look at it
    MINOR = "minor"  # worth noting
    INFO = "info"  # context for the inspector (e.g. an explained interruption)


SEVERITY_RANK = {Severity.CRITICAL: 0, Severity.MAJOR: 1, Severity.MINOR: 2, Severity.INFO: 3}
FAILING = frozenset({Severity.CRITICAL, Severity.MAJOR})
SEVERITY_LABELS_ZH = {Severity.CRITICAL: "严重", Severity.MAJOR: "重要", Severity.MINOR: "一般",
                      Severity.INFO: "提示"}


@dataclass(frozen=True)
class FindingKind:
    code: str
    severity: Severity
    requirement: str
    title: str  # Chinese, for inspectors


def _k(code: str, severity: Severity, requirement: str, title: str) -> FindingKind:
    return FindingKind(code, severity, requirement, title)


S = Severity
KINDS: dict[str, FindingKind] = {k.code: k for k in [
    _k("mandatory_step_missing", S.CRITICAL, "R-21", "话术缺少必备环节"),
    _k("step_not_reached", S.CRITICAL, "R-40", "话术步骤未播报"),
    _k("step_not_played_in_full", S.CRITICAL, "R-23", "话术语音未完整播放"),
    _k("agent_step_silent", S.MAJOR, "R-40", "销售人员讲解环节无语音"),
    _k("acknowledgement_missing", S.CRITICAL, "R-24", "缺少客户明确肯定答复"),
    _k("acknowledgement_not_affirmative", S.INFO, "R-24", "客户曾作否定或不明确答复"),
    _k("negative_answer_unexplained", S.MAJOR, "R-24", "否定答复后未见解释说明"),
    _k("customer_silent", S.MAJOR, "R-24", "语音答复处未检测到客户语音"),
    _k("answer_contradicted", S.CRITICAL, "R-24", "客户当时所说与记录的肯定答复不符"),
    _k("agent_forbidden_phrase", S.CRITICAL, "R-22", "销售人员口头使用禁止性表述"),
    _k("agent_step_not_read", S.MAJOR, "R-21", "销售人员未完整宣读话术"),
    _k("transcript_unavailable", S.MAJOR, "R-40", "缺少通话语音转写，无法核查所说内容"),
    _k("second_face", S.CRITICAL, "R-13", "画面中出现第二张人脸"),
    _k("face_changed", S.CRITICAL, "R-13", "出镜人员与核验身份的客户不一致"),
    _k("customer_left", S.MINOR, "R-13", "客户离开画面"),
    _k("presence_low", S.MAJOR, "R-13", "客户在画面内的时间不足"),
    _k("presence_unchecked", S.CRITICAL, "R-13", "通话中未能持续核验客户本人在场"),
    _k("recording_missing", S.CRITICAL, "R-30", "缺少录像"),
    _k("recording_gap", S.CRITICAL, "R-30", "录像不连续"),
    _k("recording_interrupted", S.INFO, "R-30", "通话中断后已续录"),
    _k("segment_missing", S.CRITICAL, "R-30", "录像分段缺失"),
    _k("segment_altered", S.CRITICAL, "R-31", "录像文件与登记的校验值不一致"),
    _k("segment_unreadable", S.CRITICAL, "R-30", "录像文件无法读取"),
    _k("video_missing", S.CRITICAL, "R-32", "录像中没有视频"),
    _k("audio_missing", S.CRITICAL, "R-32", "录像中没有音频"),
    _k("resolution_low", S.MAJOR, "R-32", "视频分辨率低于要求"),
    _k("frame_rate_low", S.MAJOR, "R-32", "视频帧率低于要求"),
    _k("silence_gap", S.MAJOR, "R-32", "录音出现过长静音"),
    _k("signature_missing", S.CRITICAL, "R-25", "缺少客户签名"),
    _k("risk_sentence_missing", S.CRITICAL, "R-25", "缺少抄录的风险提示语句"),
    _k("identity_not_passed", S.CRITICAL, "R-12", "身份核验未通过"),
    _k("id_card_recaptured", S.MAJOR, "R-12", "身份证照片疑似翻拍屏幕"),
    _k("live_liveness_missing", S.CRITICAL, "R-12", "话术开始前未通过通话中的实时活体检测"),
    _k("live_face_mismatch", S.CRITICAL, "R-12", "通话中的人脸与身份证照片不一致"),
    _k("live_face_unchecked", S.MAJOR, "R-12", "通话中的实时活体未与身份证照片比对"),
    _k("live_spot_check_unpassed", S.CRITICAL, "R-12", "话术中的随机活体抽检未通过"),
    _k("live_spot_check_failed", S.MINOR, "R-12", "随机活体抽检曾未通过，重测后通过"),
    _k("duration_implausible", S.MAJOR, "R-40", "时长不合理"),
    _k("interruption_unexplained", S.MAJOR, "R-30", "中断未说明原因或未续录"),
    _k("forbidden_phrasing", S.CRITICAL, "R-22", "话术含禁止性表述"),
    _k("speech_hint", S.INFO, "R-24", "语音识别提示"),
    _k("inspector_note", S.MAJOR, "R-40", "质检员发现的问题"),
]}


@dataclass(frozen=True)
class Finding:
    """One finding; `message` is Chinese and says what the inspector will see or hear."""

    code: str
    message: str
    at_ms: int | None = None
    step_id: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    severity: Severity | None = None

    @property
    def kind(self) -> FindingKind:
        return KINDS[self.code]

    @property
    def effective_severity(self) -> Severity:
        return self.severity or self.kind.severity

    @property
    def requirement(self) -> str:
        return self.kind.requirement

    def as_dict(self) -> dict[str, Any]:
        return {"code": self.code, "severity": self.effective_severity.value,
                "requirement": self.requirement, "title": self.kind.title,
                "at_ms": self.at_ms, "step_id": self.step_id, "message": self.message,
                "details": self.details}


def sort_key(finding: Finding) -> tuple[int, int, str]:
    at = finding.at_ms if finding.at_ms is not None else -1
    return (at, SEVERITY_RANK[finding.effective_severity], finding.code)


def clock(ms: int | None) -> str:
    """mm:ss (or h:mm:ss) of a time in the recording, for messages."""
    if ms is None:
        return "--:--"
    seconds = max(ms, 0) // 1000
    hours, rest = divmod(seconds, 3600)
    return (f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours
            else f"{rest // 60:02d}:{rest % 60:02d}")
