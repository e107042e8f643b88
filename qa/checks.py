"""The automated checks of a sealed session (R-40). Each check reads the timeline and what the
recording really contains, and returns findings with a severity, the requirement it enforces
and the time in the recording where an inspector should look.

Pure functions over `CheckInput`: no database, no files (the caller loads both), so they are
cheap to test and to run again with other thresholds.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from models.sales import Product
from models.sessions import AnswerValue
from qa.findings import KINDS, Finding, Severity, clock
from qa.live_liveness import LiveFacts, live_facts
from qa.media import AV_KINDS, MediaFacts, holes, overlap, union
from qa.settings import QaSettings
from qa.timeline import PresenceFact, StepPlay, Timeline, TranscriptLine
from scripts_library.model import ProductType as ScriptProductType
from scripts_library.render import SessionStep
from scripts_library.rules import forbidden_phrasing, mandatory_steps
from workflow.call import RISK_SENTENCE_PRODUCTS
from workflow.consent_texts import RISK_SENTENCE
from workflow.event_types import EventType

if TYPE_CHECKING:  # the recogniser's rules load with it, only when a transcript is read
    from media.voice.answers import Expectation

NO_ANSWER = "none"
WRITTEN = frozenset({"handwritten_copy", "signature"})


@dataclass
class CheckInput:
    timeline: Timeline
    media: MediaFacts
    product: Product
    settings: QaSettings
    identity_max_attempts: int = 3

    @property
    def steps(self) -> list[SessionStep]:
        return self.timeline.steps

    @property
    def call_end_ms(self) -> int:
        """The end of the part of the call that must be recorded: the last step's end."""
        ends = [p.end_ms for p in self.timeline.plays if p.end_ms is not None]
        return max(ends) if ends else self.timeline.end_ms


Check = Callable[[CheckInput], list[Finding]]


def _speech_ms(step: SessionStep) -> int:
    return step.audio.duration_ms if step.audio else 0


def _label(step: SessionStep) -> str:
    return step.title or step.id


def _final_play(plays: list[StepPlay]) -> StepPlay | None:
    return plays[-1] if plays else None


# --------------------------------------------------------------------------- script content


def check_script_content(c: CheckInput) -> list[Finding]:
    """R-21: every mandatory kind for the product type is in the session's steps; R-22: no
    forbidden phrasing in the rendered texts (values filled in can differ from the template)."""
    findings = []
    kinds = {s.kind.value for s in c.steps}
    product_type = ScriptProductType(c.product.product_type.value)
    for kind in mandatory_steps().kinds_for(product_type):
        if kind.value not in kinds:
            findings.append(Finding("mandatory_step_missing",
                                    f"本次录制的话术缺少必备环节：{kind.label}",
                                    details={"kind": kind.value}))
    phrasing = forbidden_phrasing()
    for index, step in enumerate(c.steps):
        for entry, match in phrasing.find(step.text):
            plays = c.timeline.plays_of(index)
            findings.append(Finding(
                "forbidden_phrasing", f"步骤“{_label(step)}”含禁止性表述“{match.group(0)}”："
                f"{entry.rationale}", at_ms=plays[0].start_ms if plays else None,
                step_id=step.id, details={"pattern": entry.id},
            ))
    return findings


# --------------------------------------------------------------------------- steps and clips


def check_steps_played(c: CheckInput) -> list[Finding]:
    """R-40, R-23: every step was reached and its speech played to the end — the TTS clip by
    the call hub's report and by the recorded TTS track; an agent's step by the agent's voice."""
    findings: list[Finding] = []
    t = c.timeline
    clips_reported = bool(t.clips)
    tts_track = c.media.tracks.get("tts")
    tts_loud = union(tts_track.loud, slack_ms=600) if tts_track else []
    agent = c.media.tracks.get("agent_av")
    tolerance = c.settings.clip_tolerance_ms
    for index, step in enumerate(c.steps):
        plays = t.plays_of(index)
        play = _final_play(plays)
        step_id = step.id
        if play is None:
            findings.append(Finding("step_not_reached", f"步骤“{_label(step)}”未播报",
                                    at_ms=c.call_end_ms, step_id=step_id))
            continue
        expected = _speech_ms(step)
        if step.speaker == "tts":
            complete = [k for k in t.clips_of(step_id)
                        if k.complete and k.played_ms >= k.duration_ms - tolerance]
            played = max((k.played_ms for k in t.clips_of(step_id)), default=0)
            if clips_reported and not complete:
                duration = max((k.duration_ms for k in t.clips_of(step_id)), default=expected)
                findings.append(Finding(
                    "step_not_played_in_full",
                    f"步骤“{_label(step)}”的语音只播放了 {played / 1000:.1f} 秒"
                    f"（共 {duration / 1000:.1f} 秒）即进入下一环节",
                    at_ms=play.start_ms, step_id=step_id,
                    details={"played_ms": played, "duration_ms": duration},
                ))
                continue
            if not clips_reported and expected and play.end_ms is not None \
                    and play.end_ms - play.start_ms < expected - tolerance:
                findings.append(Finding(
                    "step_not_played_in_full",
                    f"步骤“{_label(step)}”语音时长 {expected / 1000:.1f} 秒，但 "
                    f"{(play.end_ms - play.start_ms) / 1000:.1f} 秒后即已应答或跳过",
                    at_ms=play.start_ms, step_id=step_id,
                    details={"played_ms": play.end_ms - play.start_ms, "duration_ms": expected},
                ))
                continue
            start = complete[-1].start_ms if complete else play.start_ms
            if tts_track and expected \
                    and overlap(tts_track.covered, start, start + expected) >= 0.9 * expected:
                # The recorded TTS track must hold the clip's sound (R-23: what was heard);
                # where the track was not recorded at all, the continuity check speaks.
                heard = overlap(tts_loud, start, start + expected)
                if heard < 0.7 * expected:
                    findings.append(Finding(
                        "step_not_played_in_full",
                        f"录制的播报音轨中，步骤“{_label(step)}”的语音只有 "
                        f"{heard / 1000:.1f} 秒（应为 {expected / 1000:.1f} 秒）",
                        at_ms=start, step_id=step_id,
                        details={"heard_ms": heard, "duration_ms": expected},
                    ))
        elif step.speaker == "agent" and agent is not None and agent.segments \
                and play.end_ms is not None:
            spoken = agent.speech_within(play.start_ms, play.end_ms)
            if spoken < c.settings.min_answer_speech_ms:
                findings.append(Finding(
                    "agent_step_silent", f"步骤“{_label(step)}”应由销售人员讲解，但未检测到其语音",
                    at_ms=play.start_ms, step_id=step_id, details={"speech_ms": spoken},
                ))
        if not expected and play.end_ms is not None and step.answer != NO_ANSWER \
                and play.end_ms - play.start_ms < c.settings.min_step_seconds * 1000:
            findings.append(Finding(
                "duration_implausible",
                f"步骤“{_label(step)}”从开始到应答仅 {(play.end_ms - play.start_ms) / 1000:.1f} 秒",
                at_ms=play.start_ms, step_id=step_id,
            ))
    return findings


def check_acknowledgements(c: CheckInput) -> list[Finding]:
    """R-24: each step that needs an answer has a stored affirmative answer; negative or
    unclear answers are marked, and must be followed by an explanation before the replay."""
    findings: list[Finding] = []
    t = c.timeline
    affirmative = {a.step_id for a in t.acknowledgements if a.answer == AnswerValue.AFFIRMATIVE}
    for index, step in enumerate(c.steps):
        if step.answer == NO_ANSWER:
            continue
        step_id = step.id
        plays = t.plays_of(index)
        if step_id not in affirmative:
            at = plays[-1].end_ms if plays and plays[-1].end_ms is not None else (
                plays[-1].start_ms if plays else c.call_end_ms)
            findings.append(Finding("acknowledgement_missing",
                                    f"步骤“{_label(step)}”没有客户的明确肯定答复记录",
                                    at_ms=at, step_id=step_id))
        for play, nxt in zip(plays, [*plays[1:], None], strict=True):
            if play.ended_by not in (AnswerValue.NEGATIVE.value, AnswerValue.UNCLEAR.value):
                continue
            answer = "否定" if play.ended_by == AnswerValue.NEGATIVE.value else "不明确"
            findings.append(Finding("acknowledgement_not_affirmative",
                                    f"客户对步骤“{_label(step)}”作出{answer}答复",
                                    at_ms=play.answer_offset_ms, step_id=step_id))
            if not _explained(c, play, nxt):
                findings.append(Finding(
                    "negative_answer_unexplained",
                    f"客户对步骤“{_label(step)}”作出{answer}答复后，未见销售人员解释说明",
                    at_ms=play.answer_offset_ms, step_id=step_id,
                ))
    return findings


def _explained(c: CheckInput, play: StepPlay, nxt: StepPlay | None) -> bool:
    if nxt is None:
        return False
    for e in c.timeline.events:
        if e.type == EventType.SCRIPT_RESUMED and c.timeline.offset(e.at) == nxt.start_ms \
                and str((e.data or {}).get("note", "")).strip():
            return True
    agent = c.media.tracks.get("agent_av")
    if agent is not None and play.end_ms is not None:
        return agent.speech_within(play.end_ms, nxt.start_ms) >= 1000
    return False


def check_customer_spoke(c: CheckInput) -> list[Finding]:
    """R-24: a spoken answer (answer_kind "voice") has the customer's own voice in the
    recording where the live recogniser heard it. Only steps whose answer is spoken
    (`speech_answers`, by default ``spoken_answer``) are checked, and only their voice answers:
    a button answer carries no claim about speech, so silence around it is no finding
    (issue 12 item 4)."""
    findings: list[Finding] = []
    customer = c.media.tracks.get("customer_av")
    if customer is None or not customer.segments:
        return findings  # no recording at all: check_continuity reports it
    s = c.settings
    steps = {step.id: step for step in c.steps}
    for ack in c.timeline.acknowledgements:
        step = steps.get(ack.step_id)
        if step is None or step.answer not in s.speech_answers \
                or ack.answer != AnswerValue.AFFIRMATIVE or ack.answer_kind != "voice":
            continue
        span = ack.speech or {}
        if "start_ms" in span and "end_ms" in span:
            start, end = int(span["start_ms"]) - 500, int(span["end_ms"]) + 500
        else:
            start = ack.offset_ms - round(s.answer_window_before_s * 1000)
            end = ack.offset_ms + round(s.answer_window_after_s * 1000)
        if overlap(customer.covered, start, end) < (end - start) // 2:
            continue  # not recorded there: a gap finding says so
        spoken = customer.speech_within(start, end)
        if spoken < s.min_answer_speech_ms:
            findings.append(Finding(
                "customer_silent",
                f"步骤“{_label(step)}”记录为语音答复，但 {clock(start)}–{clock(end)} "
                "未检测到客户的语音",
                at_ms=ack.offset_ms, step_id=ack.step_id,
                details={"window_ms": [start, end], "speech_ms": spoken},
            ))
    return findings


# --------------------------------------------------------------------------- what was said


def check_transcript(c: CheckInput) -> list[Finding]:
    """R-40, fail closed: the checks of what was said need the after-call transcript; without
    one (not made yet, no recogniser, the job gave up) they cannot decide, and say so."""
    if not c.timeline.had_call:
        return []
    t = c.timeline.transcript
    what = "无法核查销售人员的用语、客户答复的内容及话术宣读情况，须人工回放收听"
    if t is None:
        message = f"尚无通话语音转写，{what}"
    elif t.status == "unavailable":
        message = f"语音识别不可用，未能生成通话转写，{what}"
    elif t.status == "failed":
        message = f"通话语音转写失败（已尝试 {t.attempts} 次），{what}"
    else:
        return []
    return [Finding("transcript_unavailable", message, at_ms=None,
                    details={"status": t.status if t else "missing",
                             "reason": t.reason[:300] if t else ""})]


def _step_at(c: CheckInput, at_ms: int) -> str:
    for play in reversed(c.timeline.plays):
        if play.start_ms <= at_ms and (play.end_ms is None or at_ms < play.end_ms + 1000):
            return play.step_id
    return ""


def _at_char(line: TranscriptLine, index: int) -> int:
    """Where a character of a line was said: spread evenly over the line's span."""
    if not line.text:
        return line.start_ms
    share = min(max(index / len(line.text), 0.0), 1.0)
    return line.start_ms + round((line.end_ms - line.start_ms) * share)


# Key words of the R-22 list, matched by their sound too: the recogniser writes homophones
# (Whisper base heard 保本 as 爆本). A homophone is a suspicion (major), never the critical
# finding of the words themselves.
SOUNDALIKE_TERMS: dict[str, tuple[str, ...]] = {
    "principal-guarantee": ("保本", "保息"),
    "no-risk": ("稳赚不赔", "只赚不赔", "稳赚", "包赚", "零风险", "无风险"),
    "guaranteed-return": ("保证收益", "保证回报"),
    "fixed-return": ("固定收益",),
    "deposit-terminology": ("随存随取", "存本取息", "利滚利"),
}


def _syllables(text: str) -> list[str]:
    from pypinyin import lazy_pinyin

    return [lazy_pinyin(ch)[0] if "\u4e00" <= ch <= "\u9fff" else ch for ch in text]


def _soundalikes(text: str, phrasing: Any) -> list[tuple[str, str, int]]:
    """(pattern id, the words heard, index) for each homophone of a key word that is not
    the key word itself and not negated."""
    sounds = _syllables(text)
    hits: list[tuple[str, str, int]] = []
    taken: set[int] = set()
    for pattern_id, terms in SOUNDALIKE_TERMS.items():
        for term in terms:
            key = _syllables(term)
            for i in range(len(text) - len(term) + 1):
                heard = text[i:i + len(term)]
                if i in taken or heard == term or sounds[i:i + len(term)] != key:
                    continue
                before = text[max(0, i - phrasing.negation_window):i]
                if any(word in before for word in phrasing.negation_words):
                    continue
                taken.update(range(i, i + len(term)))
                hits.append((pattern_id, heard, i))
    return hits


def check_agent_words(c: CheckInput) -> list[Finding]:
    """R-22 on what the agent said (the after-call transcript, the agent's track only): the
    script lint's forbidden-phrasing list, negated matches excepted; a homophone of one of its
    key words is a suspicion for the inspector (major)."""
    t = c.timeline.transcript
    if t is None or not t.usable:
        return []
    phrasing = forbidden_phrasing()
    rationale = {entry.id: entry.rationale for entry in phrasing.patterns}
    findings: list[Finding] = []
    for line in (x for x in t.lines if x.party == "agent"):
        exact = phrasing.find(line.text)
        for entry, match in exact:
            at = _at_char(line, match.start())
            findings.append(Finding(
                "agent_forbidden_phrase",
                f"{clock(at)} 销售人员说“{match.group(0)}”：{entry.rationale}",
                at_ms=at, step_id=_step_at(c, at),
                details={"pattern": entry.id, "phrase": match.group(0), "match": "text",
                         "said": line.text[:200], "line_ms": [line.start_ms, line.end_ms]}))
        found = {entry.id for entry, _ in exact}
        for pattern_id, heard, index in _soundalikes(line.text, phrasing):
            if pattern_id in found:
                continue
            at = _at_char(line, index)
            findings.append(Finding(
                "agent_forbidden_phrase",
                f"{clock(at)} 销售人员疑似说了禁止性表述（语音识别为“{heard}”，读音同"
                f"禁用语，请回放核实）：{rationale.get(pattern_id, '')}",
                at_ms=at, step_id=_step_at(c, at), severity=Severity.MAJOR,
                details={"pattern": pattern_id, "phrase": heard, "match": "sound",
                         "said": line.text[:200], "line_ms": [line.start_ms, line.end_ms]}))
    return findings


def _answer_window(c: CheckInput, index: int, step: SessionStep,
                   ack: Any) -> tuple[int, int]:
    s = c.settings
    span = ack.speech or {}
    if ack.answer_kind == "voice" and "start_ms" in span and "end_ms" in span:
        return int(span["start_ms"]) - 500, int(span["end_ms"]) + 500
    plays = [p for p in c.timeline.plays_of(index) if p.ended_by == "affirmative"]
    end = ack.offset_ms + round(s.answer_window_after_s * 1000)
    if not plays:
        return ack.offset_ms - round(s.answer_window_before_s * 1000), end
    play = plays[-1]
    clips = [k for k in c.timeline.clips_of(step.id) if k.complete]
    speech_end = (clips[-1].end_ms if clips
                  else play.start_ms + _speech_ms(step) if _speech_ms(step) else None)
    start = max(play.start_ms, speech_end - 1000) if speech_end is not None else play.start_ms
    return start, end


def check_answers_heard(c: CheckInput) -> list[Finding]:
    """R-24: what the customer said when an answer was stored agrees with it. A stored
    affirmative answer (button or voice) while the transcript has the customer saying no
    (不清楚, 不同意 …) is critical; a hedge or a question (应该吧, 什么？) is major. The words
    are read by the live verdict's own text rules (`media.voice.answers.read_text`); a "no"
    recognised with low confidence counts as unclear, and so does a "no" that negates none of
    the accepted words beside a clause that says one (不得，我清楚: 是的 misheard): major, for
    the inspector to listen to, not a certain contradiction."""
    t = c.timeline.transcript
    if t is None or not t.usable:
        return []
    from media.voice.answers import Expectation, Verdict, read_text

    findings: list[Finding] = []
    affirmative: dict[str, Any] = {}
    for stored in c.timeline.acknowledgements:
        if stored.answer == AnswerValue.AFFIRMATIVE and stored.answer_kind not in (
                "signature", "handwriting"):
            affirmative[stored.step_id] = stored  # the last one stands
    for index, step in enumerate(c.steps):
        ack = affirmative.get(step.id)
        if ack is None or step.answer in (NO_ANSWER, *WRITTEN):
            continue
        start, end = _answer_window(c, index, step, ack)
        lines = t.said("customer", start, end)
        text = "，".join(line.text for line in lines)
        if not text:
            continue
        expectation = Expectation.from_step_text(step.text)
        reading = read_text(text, expectation)
        mixed = False
        if reading.verdict == Verdict.NEGATIVE:
            sure = all(line.avg_logprob >= c.settings.transcript_min_logprob
                       and line.no_speech_prob < 0.6 for line in lines)
            mixed = _negation_beside_yes(text, expectation)
            severity = Severity.CRITICAL if sure and not mixed else Severity.MAJOR
            heard = ("否定与肯定并存，需人工复核" if mixed
                     else "否定" if sure else "疑似否定（识别置信度低）")
        elif reading.verdict == Verdict.UNCLEAR and reading.reason == "hedge":
            severity, heard = Severity.MAJOR, "不明确"
        else:
            continue
        how = "语音" if ack.answer_kind == "voice" else "按钮"
        findings.append(Finding(
            "answer_contradicted",
            f"步骤“{_label(step)}”记录为客户肯定答复（{how}），但客户当时说“{text[:60]}”"
            f"（{heard}）", at_ms=lines[0].start_ms, step_id=step.id,
            severity=severity,
            details={"said": text[:200],
                     "reading": "mixed" if mixed else reading.verdict.value,
                     "words": list(reading.words), "answer_kind": ack.answer_kind,
                     "answer_at_ms": ack.offset_ms, "window_ms": [start, end]}))
    return findings


_CLAUSES = re.compile(r"[，,。.！!、；;：:\s]+")


def _negation_beside_yes(text: str, expectation: Expectation) -> bool:
    """Whether a clause of `text` says an accepted word un-negated while the clauses with a
    negation negate none of them (不得，我清楚; 不，我清楚 to "any questions?"). A negated
    accepted word (不清楚, 不太明白, 不是) anywhere is a real no, whatever else was said."""
    from media.voice.answers import Verdict, read_text
    from media.voice.chinese import normalise

    affirmative = stray_no = False
    for clause in filter(None, _CLAUSES.split(text)):
        verdict = read_text(clause, expectation).verdict
        if verdict is Verdict.AFFIRMATIVE:
            affirmative = True
        elif verdict is Verdict.NEGATIVE:
            if any(word in normalise(clause) for word in expectation.accepted):
                return False
            stray_no = True
    return affirmative and stray_no


def character_recall(reference: str, said: str) -> float:
    """The share of the reference's characters found, in order, in what was said (longest
    common subsequence over the normalised texts: simplified, no punctuation, numbers as
    words)."""
    from media.voice.chinese import normalise

    ref, hyp = normalise(reference), normalise(said)
    if not ref:
        return 1.0
    if not hyp:
        return 0.0
    previous = [0] * (len(hyp) + 1)
    for ch in ref:
        row = [0]
        for j, other in enumerate(hyp):
            row.append(previous[j] + 1 if ch == other else max(previous[j + 1], row[j]))
        previous = row
    return previous[-1] / len(ref)


def check_agent_read(c: CheckInput) -> list[Finding]:
    """R-21, R-24: a step the agent reads (``speaker: agent``) was read — the agent's
    transcript during the step (until 2 s after it) holds at least `step_read_min_coverage` of
    the step's text (character recall); the best play of the step counts."""
    t = c.timeline.transcript
    if t is None or not t.usable:
        return []
    findings: list[Finding] = []
    threshold = c.settings.step_read_min_coverage
    for index, step in enumerate(c.steps):
        if step.speaker != "agent":
            continue
        best: tuple[float, StepPlay | None, str] = (-1.0, None, "")
        for candidate in c.timeline.plays_of(index):
            end = (candidate.end_ms if candidate.end_ms is not None else c.call_end_ms) + 2000
            heard = "".join(line.text for line in t.said("agent", candidate.start_ms, end))
            score = character_recall(step.text, heard)
            if score > best[0]:
                best = (score, candidate, heard)
        coverage, play, said = best
        if play is None or coverage >= threshold:
            continue
        findings.append(Finding(
            "agent_step_not_read",
            f"步骤“{_label(step)}”应由销售人员宣读，但其讲述只覆盖话术文字的 {coverage:.0%}"
            f"（要求至少 {threshold:.0%}）",
            at_ms=play.start_ms, step_id=step.id,
            details={"coverage": round(coverage, 3), "threshold": threshold,
                     "heard": said[:300]}))
    return findings


# --------------------------------------------------------------------------- presence


def _unsampled(marks: list[PresenceFact], end: int) -> list[tuple[int, int]]:
    """Stretches without presence samples (``sampling_lost`` to the next ``sampling_resumed``
    or the end): the customer's presence there is unknown — neither in view nor away."""
    spans = []
    for i, mark in enumerate(marks):
        if mark.type == "sampling_lost":
            until = next((m.at_ms for m in marks[i + 1:] if m.type == "sampling_resumed"), end)
            spans.append((mark.at_ms, max(mark.at_ms, until)))
    return spans


def _known(start: int, end: int, unknown: list[tuple[int, int]]) -> int:
    """Milliseconds of [start, end) outside the unknown stretches (which do not overlap)."""
    return max(0, end - start) - sum(max(0, min(end, b) - max(start, a)) for a, b in unknown)


def check_presence(c: CheckInput) -> list[Finding]:
    """R-13: no second face, the same face throughout, the customer in view long enough.
    Fail closed: time without samples counts neither as absence nor as presence (it gets its
    own `presence_unchecked` finding, `check_presence_monitored`); only the absence seen
    counts, so a customer is out of view too long only if that holds whatever happened in
    the unknown time."""
    findings: list[Finding] = []
    marks = sorted(c.timeline.presence, key=lambda m: m.at_ms)
    end = c.call_end_ms
    unknown = _unsampled(marks, end)
    away_ms = 0
    left_at: int | None = None
    pairs = {"second_face_appeared": "second_face_gone", "face_changed": "face_restored"}
    for i, mark in enumerate(marks):
        if mark.type in pairs:
            until = next((m.at_ms for m in marks[i + 1:] if m.type == pairs[mark.type]), None)
            code = "second_face" if mark.type == "second_face_appeared" else "face_changed"
            span = f"至 {clock(until)}" if until is not None else "直至通话结束"
            title = mark.message or KINDS[code].title
            findings.append(Finding(code, f"{title}（{clock(mark.at_ms)} {span}）",
                                    at_ms=mark.at_ms,
                                    details={"until_ms": until, "faces": mark.faces}))
        elif mark.type == "customer_left":
            left_at = mark.at_ms
            until = next((m.at_ms for m in marks[i + 1:] if m.type == "customer_returned"), end)
            seen = _known(mark.at_ms, until, unknown)
            away_ms += seen
            findings.append(Finding("customer_left",
                                    f"客户离开画面 {seen / 1000:.1f} 秒",
                                    at_ms=mark.at_ms, details={"until_ms": until}))
    if end > 0 and away_ms:
        share = 1 - away_ms / end
        if share < c.settings.min_presence_share:
            findings.append(Finding(
                "presence_low",
                f"客户在画面内的时间占通话的 {share:.0%}，低于要求的 "
                f"{c.settings.min_presence_share:.0%}",
                at_ms=left_at, details={"share": round(share, 3)},
            ))
    return findings


# Reasons the live call gives in `presence_unavailable`, in Chinese for the inspector.
PRESENCE_UNAVAILABLE_ZH = {
    "no_verified_face": "没有已核验的客户活体人脸",
    "no_live_face": "没有已核验的客户活体人脸",
    "engines_unavailable": "人脸核验引擎不可用",
    "engine_unavailable": "人脸核验引擎不可用",
    "monitor_failed": "在场核验进程异常退出",
    "no_video": "未收到客户视频",
}


def check_presence_monitored(c: CheckInput) -> list[Finding]:
    """R-13, fail closed: a call whose customer was not watched by the presence monitor has no
    evidence that the verified customer stayed in front of the camera — no presence marks then
    mean "not checked", never "all fine". Critical when the call never logged
    `presence_started`, for every `presence_unavailable`, and when the monitor went without
    samples for a while (`sampling_lost`: the node fell behind, the picture stopped) outside
    an interruption of the call (which has its own finding)."""
    t = c.timeline
    if not t.had_call:
        return []
    findings: list[Finding] = []
    marks = sorted(t.presence, key=lambda m: m.at_ms)
    gaps = [(a, b) for a, b in _unsampled(marks, c.call_end_ms)
            if b > a and not _covered_by_interruption(c, a, b)]
    if gaps:
        total = sum(b - a for a, b in gaps)
        spans = "、".join(f"{clock(a)}–{clock(b)}" for a, b in gaps[:5])
        more = f" 等 {len(gaps)} 段" if len(gaps) > 5 else ""
        findings.append(Finding(
            "presence_unchecked",
            f"{spans}{more}（共 {total / 1000:.0f} 秒）未能采样客户画面，"
            "其间无法判断客户本人是否在场",
            at_ms=gaps[0][0], details={"event": "presence_not_sampled",
                                       "spans_ms": [list(g) for g in gaps],
                                       "unsampled_ms": total}))
    for watch in t.presence_watch:
        if watch.type != "unavailable":
            continue
        reason = PRESENCE_UNAVAILABLE_ZH.get(watch.reason, watch.reason or "未说明原因")
        at = max(watch.at_ms, 0)
        findings.append(Finding(
            "presence_unchecked", f"{clock(at)} 起未能核验客户本人在场：{reason}", at_ms=at,
            details={"event": "presence_unavailable", "reason": watch.reason}))
    if not any(w.type == "started" for w in t.presence_watch):
        findings.append(Finding(
            "presence_unchecked", "通话中没有启动客户在场核验的记录，无法确认通话全程为客户本人",
            at_ms=0, details={"event": "presence_started_missing"}))
    return findings


# --------------------------------------------------------------------------- recording


def _covered_by_interruption(c: CheckInput, start: int, end: int) -> bool:
    slack = c.settings.max_segment_gap_ms + 2000
    for gap in c.timeline.interruptions:
        gap_end = gap.end_ms if gap.end_ms is not None else c.timeline.end_ms
        if start >= gap.start_ms - slack and end <= gap_end + slack:
            return True
    return False


def check_continuity(c: CheckInput) -> list[Finding]:
    """R-30, R-31: both parties recorded from the start of the call to the end of the script,
    every segment present, readable and unaltered; gaps only where the call was interrupted."""
    findings: list[Finding] = []
    tolerance = c.settings.max_segment_gap_ms
    end = c.call_end_ms
    for kind in AV_KINDS:
        who = "客户" if kind == "customer_av" else "销售人员"
        track = c.media.tracks.get(kind)
        if track is None or not track.segments:
            findings.append(Finding("recording_missing", f"没有{who}一方的录像",
                                    at_ms=0, details={"kind": kind}))
            continue
        numbers = [f.recording.segment for f in track.segments]
        for previous, number in itertools.pairwise(numbers):
            if number != previous + 1:
                at = next(f.end_ms for f in track.segments if f.recording.segment == previous)
                findings.append(Finding(
                    "segment_missing", f"{who}录像缺少第 {previous + 1} 至 {number - 1} 段",
                    at_ms=at, details={"kind": kind, "after_segment": previous},
                ))
        for f in track.segments:
            r = f.recording
            if not f.exists:
                findings.append(Finding("segment_missing",
                                        f"{who}录像第 {r.segment} 段的文件不存在",
                                        at_ms=f.start_ms, details={"kind": kind,
                                                                   "segment": r.segment}))
            elif not f.hash_ok:
                findings.append(Finding("segment_altered",
                                        f"{who}录像第 {r.segment} 段的校验值与登记时不一致",
                                        at_ms=f.start_ms, details={"kind": kind,
                                                                   "segment": r.segment}))
            elif f.error:
                findings.append(Finding("segment_unreadable",
                                        f"{who}录像第 {r.segment} 段无法解码",
                                        at_ms=f.start_ms, details={"kind": kind,
                                                                   "error": f.error}))
        for start, stop in holes(track.covered, 0, end):
            if stop - start <= tolerance or _covered_by_interruption(c, start, stop):
                continue
            findings.append(Finding(
                "recording_gap",
                f"{who}录像在 {clock(start)}–{clock(stop)} 之间中断 "
                f"{(stop - start) / 1000:.1f} 秒，且无通话中断记录",
                at_ms=start, details={"kind": kind, "until_ms": stop, "gap_ms": stop - start},
            ))
    return findings


def check_quality(c: CheckInput) -> list[Finding]:
    """R-32: video present at the minimum size and frame rate, audio present, and no silence
    longer than the limit outside the customer's answers."""
    findings: list[Finding] = []
    s = c.settings
    for kind in AV_KINDS:
        who = "客户" if kind == "customer_av" else "销售人员"
        track = c.media.tracks.get(kind)
        if track is None:
            continue
        seen: set[str] = set()

        def once(code: str, message: str, at: int, details: dict[str, Any],
                 seen: set[str] = seen) -> None:
            # One finding per problem and track; the segments concerned are in its details.
            if code not in seen:
                seen.add(code)
                findings.append(Finding(code, message, at_ms=at, details=details))

        for f in track.segments:
            p = f.probe
            if p is None:
                continue
            details = {"kind": kind, "segment": f.recording.segment}
            if not p.has_video:
                once("video_missing", f"{who}录像第 {f.recording.segment} 段没有视频画面",
                     f.start_ms, details)
                continue
            if (p.width or 0) < s.min_width or (p.height or 0) < s.min_height:
                once("resolution_low", f"{who}视频分辨率 {p.width}×{p.height}，低于 "
                     f"{s.min_width}×{s.min_height}", f.start_ms,
                     {**details, "width": p.width, "height": p.height})
            if p.duration_ms >= 2000 and p.frame_rate < s.min_frame_rate - s.frame_rate_tolerance:
                once("frame_rate_low", f"{who}视频帧率 {p.frame_rate:.1f} 帧/秒，低于 "
                     f"{s.min_frame_rate:.0f} 帧/秒", f.start_ms,
                     {**details, "frame_rate": p.frame_rate})
            if not p.has_audio:
                once("audio_missing", f"{who}录像第 {f.recording.segment} 段没有声音",
                     f.start_ms, details)
    findings += _silence(c)
    return findings


def _silence(c: CheckInput) -> list[Finding]:
    recorded = [t for t in c.media.tracks.values() if t.segments]
    if not recorded:
        return []
    sound = union([i for t in recorded for i in t.loud], slack_ms=300)
    allowed = list(c.timeline.answer_windows())
    for gap in c.timeline.interruptions:
        allowed.append((gap.start_ms, gap.end_ms if gap.end_ms is not None else c.call_end_ms))
    # Stretches without any recording are the continuity check's business.
    covered = union([i for t in recorded for i in t.covered])
    limit = round(c.settings.max_silence_seconds * 1000)
    findings = []
    for start, stop in holes(sound, 0, c.call_end_ms):
        for a, b in holes(allowed + holes(covered, start, stop), start, stop):
            if b - a > limit:
                findings.append(Finding(
                    "silence_gap",
                    f"{clock(a)}–{clock(b)} 之间 {(b - a) / 1000:.1f} 秒无任何声音"
                    "（非客户应答时段）",
                    at_ms=a, details={"until_ms": b, "silence_ms": b - a},
                ))
    return findings


# --------------------------------------------------------------------------- documents, identity


def check_signature(c: CheckInput) -> list[Finding]:
    """R-25: a handwritten signature, and the hand-copied risk sentence where it is needed."""
    sigs = c.timeline.signatures
    end = c.call_end_ms
    if not sigs:
        return [Finding("signature_missing", "没有客户签名记录", at_ms=end)]
    copy_steps = [s for s in c.steps if s.answer == "handwritten_copy"]
    needed = [s.copy_text or RISK_SENTENCE for s in copy_steps]
    if not needed and c.product.product_type in RISK_SENTENCE_PRODUCTS:
        needed = [RISK_SENTENCE]
    copied = {_normalised(s.risk_sentence) for s in sigs}
    return [Finding("risk_sentence_missing", f"没有客户抄录的风险提示语句“{text}”",
                    at_ms=sigs[-1].offset_ms)
            for text in needed if _normalised(text) not in copied]


def _normalised(text: str) -> str:
    return "".join(text.split()).rstrip("。")


def check_identity(c: CheckInput) -> list[Finding]:
    """R-12: the last identity attempt passed, within the attempt limit; a card photo that
    looks taken off a screen (the engines' moiré warning, issue 15) is for an inspector."""
    checks = c.timeline.identity_checks
    if not checks:
        return [Finding("identity_not_passed", "没有身份核验记录", at_ms=0)]
    last = checks[-1]
    findings = [
        Finding("id_card_recaptured",
                f"第 {check.attempt} 次身份核验的身份证照片疑似翻拍自屏幕（摩尔纹），请核对原件",
                at_ms=0, details={"attempt": check.attempt, "warnings": warnings,
                                  "recapture": (check.ocr or {}).get("details", {})
                                  .get("recapture")})
        for check in checks
        if (warnings := [w for w in ((check.ocr or {}).get("details", {}).get("warnings") or [])
                         if str(w).startswith("screen_recapture")])
    ]
    if not last.passed or last.attempt > c.identity_max_attempts:
        findings.append(Finding(
            "identity_not_passed",
            f"第 {last.attempt} 次身份核验未通过：{'；'.join(last.reasons) or '无'}",
            at_ms=0, details={"attempt": last.attempt}))
    return findings


def check_live_liveness(c: CheckInput) -> list[Finding]:
    """R-12 in the call (issue 15): when the policy required it, the script started only after a
    live liveness run passed (critical otherwise: the timeline has no proof that a live person
    was in the call when the script began); every live face match that failed (the call's face
    was not the card portrait's: critical when no later run matched, else for an inspector);
    a passed run whose face was not matched against the card portrait; every spot check during
    the script passed before the step it held started (critical otherwise), and the spot
    checks a customer failed before passing (for the inspector)."""
    facts = live_facts(c.timeline)
    findings: list[Finding] = []
    for run in facts.runs:
        if run.face_status != "mismatch":
            continue
        face = run.face_match
        at = next((ch.sent_ms for ch in run.challenges
                   if ch.face_match and not ch.face_match.get("passed")), run.started_ms)
        later = any(r.passed and r.face_status == "matched" for r in facts.runs
                    if r.seq > run.seq)
        findings.append(Finding(
            "live_face_mismatch",
            f"{run.label}：通话画面中的人脸与身份证照片不一致（比对距离 "
            f"{face.get('distance')}，通过阈值 {face.get('threshold')}）"
            + ("，之后的检测已比对一致" if later else ""),
            at_ms=max(at or 0, 0), severity=None if not later else Severity.MAJOR,
            details={"attempt": run.attempt, "spot": run.spot, "face_match": face}))
    findings += _spot_check_findings(facts)
    if facts.script_started_ms is None or not facts.required:
        return findings
    passed = facts.passed_before_script()
    at = max(facts.script_started_ms, 0)
    if passed is None:
        tried = [r for r in facts.runs if r.spot is None
                 and (facts.script_started_seq is None or r.seq < facts.script_started_seq)]
        failed = [r for r in tried if r.passed is False]
        why = (f"此前 {len(tried)} 次检测均未通过"
               + (f"（最后一次：{failed[-1].reason}）" if failed and failed[-1].reason else "")
               if tried else "没有检测记录")
        findings.append(Finding(
            "live_liveness_missing", f"{clock(at)} 开始播报话术时，客户尚未通过通话中的实时活体"
            f"检测：{why}", at_ms=at,
            details={"runs": len(tried), "required": True}))
    elif passed.face_status in ("not_run", ""):
        findings.append(Finding(
            "live_face_unchecked",
            f"第 {passed.attempt} 次实时活体检测通过，但通话画面未与身份证照片比对"
            + ("（没有已核验的证件人像）"
               if passed.face_match.get("reason") == "no_portrait" else ""),
            at_ms=max(passed.ended_ms or 0, 0),
            details={"attempt": passed.attempt, "face_match": passed.face_match}))
    return findings


def _spot_check_findings(facts: LiveFacts) -> list[Finding]:
    """Issue 15: each spot check that fell due during the script passed before its held step
    started (critical otherwise: that part of the call has no proof of a live card holder);
    counted failures of a spot check that later passed, for the inspector to look at."""
    findings: list[Finding] = []
    for due in facts.spots:
        runs = [r for r in facts.runs if r.spot == due.check]
        if not due.passed_in_time:
            failed = [r for r in runs if r.passed is False]
            findings.append(Finding(
                "live_spot_check_unpassed",
                f"{clock(due.due_ms)} 第 {due.check} 次随机活体抽检"
                + (f"未通过（{failed[-1].reason or failed[-1].reason_code}）" if failed
                   else "没有通过的检测记录")
                + ("，其后的话术仍继续播报" if due.step_started_seq is not None else ""),
                at_ms=max(due.due_ms, 0), step_id=due.step_id,
                details={"check": due.check, "runs": len(runs)}))
            continue
        for run in runs:
            if run.passed is False and run.counted and run.reason_code != "card_face_mismatch":
                findings.append(Finding(
                    "live_spot_check_failed",
                    f"{run.label}未通过（{run.reason or run.reason_code}），之后的检测已通过",
                    at_ms=max(run.started_ms, 0), step_id=due.step_id,
                    details={"check": due.check, "attempt": run.attempt,
                             "reason_code": run.reason_code}))
    return findings


def check_durations(c: CheckInput) -> list[Finding]:
    """R-40: the call's length is plausible against the speech it had to contain."""
    findings: list[Finding] = []
    end = c.call_end_ms
    if end > c.settings.max_call_hours * 3600 * 1000:
        findings.append(Finding("duration_implausible",
                                f"通话时长 {end / 60000:.0f} 分钟，超出合理范围", at_ms=0))
    speech = sum(_speech_ms(s) for s in c.steps if s.speaker == "tts")
    if speech and end < speech * 0.9:
        findings.append(Finding(
            "duration_implausible",
            f"话术语音共 {speech / 1000:.0f} 秒，但录制时长只有 {end / 1000:.0f} 秒",
            at_ms=0, details={"speech_ms": speech, "call_ms": end},
        ))
    for ack in c.timeline.acknowledgements:
        if ack.offset_ms < 0 or ack.offset_ms > c.timeline.end_ms + 1000:
            findings.append(Finding("duration_implausible",
                                    f"步骤 {ack.step_id} 的应答时间不在录制时间范围内",
                                    at_ms=max(ack.offset_ms, 0), step_id=ack.step_id))
    return findings


def check_interruptions(c: CheckInput) -> list[Finding]:
    """R-30: every interruption has a reason and was resumed; each is shown to the inspector."""
    findings = []
    for gap in c.timeline.interruptions:
        if gap.end_ms is None or not gap.reason.strip():
            findings.append(Finding(
                "interruption_unexplained",
                f"{clock(gap.start_ms)} 通话中断" + ("，未续录" if gap.end_ms is None else
                                                     "，未记录中断原因"),
                at_ms=gap.start_ms, details={"reason": gap.reason}))
        else:
            findings.append(Finding(
                "recording_interrupted",
                f"{clock(gap.start_ms)} 通话中断（{gap.reason}），"
                f"{(gap.end_ms - gap.start_ms) / 1000:.0f} 秒后续录",
                at_ms=gap.start_ms, details={"until_ms": gap.end_ms, "reason": gap.reason}))
    return findings


CHECKS: tuple[Check, ...] = (
    check_script_content, check_steps_played, check_acknowledgements, check_customer_spoke,
    check_transcript, check_agent_words, check_answers_heard, check_agent_read, check_presence,
    check_presence_monitored, check_continuity, check_quality, check_signature,
    check_identity, check_live_liveness, check_durations, check_interruptions,
)


def run_checks(c: CheckInput) -> list[Finding]:
    findings: list[Finding] = []
    for check in CHECKS:
        findings += check(c)
    return findings

