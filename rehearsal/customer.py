"""The customer, as h5/static/customer.js plays it: opens the invitation, gives both consents
(R-10), proves who they are with the real engines (R-12: both sides of an ID card whose portrait
is a real face, and a clip of that face performing the prompted challenges), joins the call with
the face on camera (R-13) and a voice, answers each step only once the server opened its answer
(R-24), reads every page of a shown document (R-25) and writes the hand-copy and the signature
with synthetic strokes (R-25)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from media.identity.results import Challenge
from rehearsal import face as faces
from rehearsal.api import ApiClient, LiveFeed, Refused, RehearsalError, Snapshot
from rehearsal.line import CallLine
from rehearsal.progress import Progress
from rehearsal.voice import SpeechEngine, Voice, asked_word, spoken_answer
from testing import handwriting
from testing.call_media import EncodedMedia

WHO = "customer"
DONE = frozenset({"completed", "sealed", "qa_pending", "qa_passed", "qa_rejected"})
ENDED = frozenset({"declined", "identity_failed", "expired", "aborted"})
CALL = frozenset({"in_call", "disclosing", "signing"})
WRITTEN = frozenset({"handwritten_copy", "signature"})
INVITE_PATH = re.compile(r"/h5/invite/([A-Za-z0-9_-]+)")
MAX_TRIES = 4  # per step: a refused answer is tried again (as a person taps again)
MAX_JOINS = 4
GREETING_REPLY = "您好，我能听到。"


@dataclass(frozen=True)
class CustomerOptions:
    link: str | None = None  # the invitation link (or its token)
    token: str | None = None  # a customer token instead (the link was opened already)
    name: str | None = None  # the name and ID number on the order: printed on the card
    id_number: str | None = None
    face_photo: Path | None = None
    answers: Literal["button", "voice"] = "button"
    cache_dir: Path = Path.home() / ".cache" / "shuanglu-rehearsal"
    identity_timeout_s: float = 300.0  # the engines' verdict (they load on first use)
    wait_call_s: float = 1200.0  # for the agent to start the call (speech renders first)
    step_timeout_s: float = 180.0  # beyond a step's speech, for its answer to open


def invitation_token(link: str) -> str:
    found = INVITE_PATH.search(link)
    if found:
        return found.group(1)
    if re.fullmatch(r"[A-Za-z0-9_-]{16,}", link):
        return link
    raise RehearsalError(f"not an invitation link or token: {link!r} (WeChat and bank-app "
                         "links open through their own channels)")


def _same_step(s: Snapshot, step: dict[str, Any]) -> bool:
    current = s.get("current_step") or {}
    return (s.get("state") == "disclosing" and current.get("id") == step["id"]
            and current.get("index") == step["index"])


class Customer:
    def __init__(self, client: ApiClient, options: CustomerOptions, progress: Progress,
                 speech: SpeechEngine) -> None:
        self.client = client
        self.options = options
        self.progress = progress
        self.voice = Voice(speech, speech.speech_rate)
        # Answers are said as the server's recogniser hears them best.
        self.answering_voice = Voice(speech, speech.answer_rate)
        self.token = ""
        self.session_id = ""
        self.feed: LiveFeed | None = None
        self.line: CallLine | None = None
        self._face: asyncio.Task[faces.Face] | None = None
        self._call_camera: asyncio.Task[EncodedMedia] | None = None
        self._warm: asyncio.Task[None] | None = None
        self._dropped = False  # the server interrupted the call since we last joined
        self._done: dict[tuple[int, str], int] = {}  # step → tries
        self._answered: set[tuple[int, str]] = set()
        self._signed_final = False
        self._seed = 0

    def _say(self, message: str) -> None:
        self.progress.say(WHO, message)

    async def open(self) -> str:
        """The invitation opened (or the token checked); returns the session id."""
        o = self.options
        if o.token:
            self.token = o.token
            session = await self.client.call("GET", "/customer/session", token=self.token)
            self._say(f"customer token accepted; the session is「{session['state_label']}」")
        else:
            if not o.link:
                raise RehearsalError("the customer needs --customer-link (or --customer-token)")
            opened = await self.client.call("POST", "/invitations/open",
                                            json_body={"token": invitation_token(o.link)})
            self.token, session = opened["customer_token"], opened["session"]
            self._say(f"opened the invitation link; the session is「{session['state_label']}」")
        self.session_id = str(session["id"])
        self.progress.resume_hint = f"--customer-token {self.token}"
        return self.session_id

    async def run(self) -> str:
        """Plays the customer until the session is completed; returns its state."""
        if not self.token:
            await self.open()
        self._face = asyncio.create_task(asyncio.to_thread(
            faces.load_face, faces.face_photo(self.options.face_photo)))
        # Made while the customer consents and is checked: the call's recording runs from the
        # moment the agent starts it, so the customer joins (and speaks) at once.
        self._call_camera = asyncio.create_task(self._camera())
        self._warm = asyncio.create_task(self._prepare_speech())
        self.feed = LiveFeed(self.client, {"role": "customer", "token": self.token},
                             lambda: self.client.call("GET", "/customer/session",
                                                      token=self.token),
                             on_event=self._on_event)
        try:
            await self.feed.start()
            return await self._play()
        finally:
            for task in (self._face, self._call_camera, self._warm):
                if task is not None and not task.done():
                    task.cancel()
            if self.line is not None:
                await self.line.leave()
            await self.feed.close()

    async def _play(self) -> str:
        assert self.feed is not None
        while True:
            s = self.feed.snapshot
            state = str(s.get("state"))
            if state in DONE:
                self._say(f"the session is「{s.get('state_label')}」")
                return state
            if state in ENDED:
                raise RehearsalError(f"the session ended:「{s.get('state_label')}」")
            if state == "opened":
                await self._consent()
            elif state == "consented":
                await self._verify_identity()
            elif state == "identity_verified":
                self._say("identity verified; waiting for the agent to start the call")
                await self.feed.wait_for("the agent to start the call",
                                         lambda s: s.get("state") != "identity_verified",
                                         self.options.wait_call_s)
            elif state in CALL and (self.line is None or self._dropped):
                # Joined once; again only after the server interrupted the call and the agent
                # resumed it (a line closed by the server at completion stays closed).
                await self._join()
            elif state == "disclosing" and not s.get("paused") and s.get("current_step") \
                    and self._key(s["current_step"]) not in self._answered:
                await self._step(s["current_step"], int(s.get("step_count") or 0))
            elif state == "signing" and not s.get("signed") and not self._signed_final:
                await self._sign_final()
            else:
                # Listening, paused, interrupted (the agent resumes) or waiting for the agent.
                if state == "interrupted":
                    self._dropped = True
                if not await self.feed.next_change(self.options.step_timeout_s):
                    self.feed.update(await self.client.call("GET", "/customer/session",
                                                            token=self.token))

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("type") == "interrupted":
            self._dropped = True

    @staticmethod
    def _key(step: dict[str, Any]) -> tuple[int, str]:
        return int(step["index"]), str(step["id"])

    # -- before the call ---------------------------------------------------------------------

    async def _prepare_speech(self) -> None:
        """What the customer will say, rendered ahead (a neural voice takes seconds to load)."""
        await self.voice.render(GREETING_REPLY)
        for words in ("好的，我明白了。", "是的，我清楚。"):
            await self.answering_voice.render(words)

    async def _consent(self) -> None:
        texts = await self.client.call("GET", "/consent-texts")
        answers = [{"kind": t["kind"], "text_hash": t["sha256"], "agreed": True}
                   for t in texts["texts"]]
        session = await self.client.call("POST", "/customer/consent", token=self.token,
                                         json_body={"answers": answers})
        assert self.feed is not None
        self.feed.update(session)
        titles = "、".join(f"《{t['title']}》" for t in texts["texts"])
        self._say(f"read and agreed to {titles}, each on its own")

    async def _verify_identity(self) -> None:
        o = self.options
        if not (o.name and o.id_number):
            raise RehearsalError("the identity check needs --customer-name and "
                                 "--customer-id-number (the name and ID number on the order)")
        assert self._face is not None and self.feed is not None
        face = await self._face
        info = await self.client.call("GET", "/customer/identity", token=self.token)
        if not info["pending"]:
            identity = faces.card_identity(o.name, o.id_number, date.today())
            front, back = await asyncio.to_thread(faces.card_photos, identity, face)
            for kind, photo in (("id_front", front), ("id_back", back)):
                await self.client.call("POST", f"/customer/identity/uploads/{kind}",
                                       token=self.token, data=photo, content_type="image/jpeg")
            challenges = [Challenge(c["code"]) for c in info["challenges"]]
            prompt_s = min(float(info["time_limit_s"]), faces.PAGE_PROMPT_S)
            self._say(f"uploaded both sides of the ID card; recording the liveness clip: "
                      f"{'，'.join(c.prompt for c in challenges)}")
            cache = faces.ClipCache(o.cache_dir)
            photo_path = faces.face_photo(o.face_photo)
            clip_path = cache.path("liveness", faces.photo_key(photo_path),
                                   [c.value for c in challenges], prompt_s)
            clip = await asyncio.to_thread(
                cache.get, clip_path,
                lambda: faces.liveness_frames(face, challenges, prompt_s))
            await self.client.call("POST", "/customer/identity/uploads/liveness",
                                   token=self.token, data=clip.read_bytes(),
                                   content_type="video/webm")
            await self.client.call("POST", "/customer/identity/submit", token=self.token)
            self._say(f"submitted attempt {info['attempt']}; the engines are checking")
        attempt = int(info["attempt"])
        started = self.progress.clock()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + o.identity_timeout_s
        while self.feed.snapshot.get("state") == "consented":
            if loop.time() > deadline:
                raise RehearsalError(f"no identity verdict within {o.identity_timeout_s:.0f} s "
                                     "(are the server's jobs running?)")
            if not await self.feed.next_change(3.0):
                now = await self.client.call("GET", "/customer/identity", token=self.token)
                last = now.get("last_check") or {}
                if not now["pending"] and last.get("attempt") == attempt \
                        and not last.get("passed"):
                    raise RehearsalError(
                        f"identity attempt {attempt} failed:「{'；'.join(last['reasons'])}」 "
                        f"({now['attempts_left']} attempts left)")
        if self.feed.snapshot.get("state") == "identity_verified":
            self._say(f"identity verified by the engines (attempt {attempt}, "
                      f"{self.progress.clock() - started:.0f} s)")

    # -- the call ----------------------------------------------------------------------------

    async def _camera(self) -> EncodedMedia:
        assert self._face is not None
        face = await self._face
        cache = faces.ClipCache(self.options.cache_dir)
        path = cache.path("call", faces.photo_key(faces.face_photo(self.options.face_photo)))
        clip = await asyncio.to_thread(cache.get, path, lambda: faces.call_frames(face))
        return await asyncio.to_thread(EncodedMedia.load, clip)

    async def _join(self) -> None:
        assert self._call_camera is not None
        if self.line is None:
            self.line = CallLine(self.client, f"/calls/{self.session_id}/customer/offer",
                                 self.token,
                                 await self._call_camera, self.voice)
        elif self.line.joins >= MAX_JOINS:
            raise RehearsalError(f"the customer's call dropped {self.line.joins} times")
        self._dropped = False
        await self.line.join()
        self._say("joined the call (camera: the verified face; microphone: the customer's "
                  "voice)" if self.line.joins == 1 else "joined the call again")
        if self.line.joins == 1:
            await self.line.say(GREETING_REPLY)

    async def _step(self, step: dict[str, Any], step_count: int) -> None:
        """One step: listen until the server opens its answer, then answer as the step asks
        (returns early when the step moved on without us: interrupted, or no answer needed)."""
        assert self.feed is not None and self.line is not None
        key = self._key(step)
        tries = self._done[key] = self._done.get(key, 0) + 1
        if tries > MAX_TRIES:
            raise RehearsalError(f"step {step['id']} could not be answered in {MAX_TRIES} tries")
        record = self.progress.step_started(step, step_count)
        heard_before = self.line.speech_heard_ms
        reading = (asyncio.create_task(self._read(step))
                   if (step.get("document_pages") or {}).get("page_count") else None)
        try:
            speech_s = int((step.get("audio") or {}).get("duration_ms") or 0) / 1000
            s = await self.feed.wait_for(
                f"the answer to step {step['id']} to open",
                lambda s: not _same_step(s, step) or bool(s.get("answer_open")),
                speech_s + self.options.step_timeout_s)
            record.heard_ms = self.line.speech_heard_ms - heard_before
            if not _same_step(s, step):
                if step["answer"] == "none":
                    self._answered.add(key)
                    self.progress.step_done(record, "no answer needed: moved on by itself "
                                            "after its speech", "played in full")
                return  # interrupted or paused: played again later
            answered = await self._answer(step, reading)
            if answered:
                self._answered.add(key)
                self.progress.step_done(record, answered, "answer opened (answer_open)")
        finally:
            if reading is not None and not reading.done():
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError, Refused):
                    await reading

    async def _answer(self, step: dict[str, Any], reading: asyncio.Task[str] | None) -> str:
        """Answers the open step; the description of the answer, or "" when it was refused
        (the step is tried again)."""
        assert self.feed is not None and self.line is not None
        kind = step["answer"]
        if step.get("speaker") == "agent":
            await self._hear_out(step)
        try:
            if kind == "none":  # an agent's step without an answer: the agent moves on
                await self.feed.wait_for(f"the agent to move past step {step['id']}",
                                         lambda s: not _same_step(s, step),
                                         self.options.step_timeout_s)
                return "no answer needed: the agent moved on"
            if kind in WRITTEN:
                return await self._write(step)
            if kind == "show_document":
                # A step of an old script version names its document without pages.
                pages = await reading if reading is not None else f"《{step.get('document')}》"
                await self._acknowledge(step, "document", "")
                return f"read {pages}, then confirmed (button)"
            if kind == "spoken_answer":
                return await self._answer_aloud(step, asked_word(str(step.get("text", ""))))
            words = spoken_answer(str(step.get("text", "")))
            await self.line.say(words, self.answering_voice)
            voice = self.options.answers == "voice"
            await self._acknowledge(step, "speech" if voice else "button",
                                    words if voice else "")
            return (f"said「{words}」" + ("; answer posted as speech" if voice
                                         else " and tapped 是的，我已清楚"))
        except Refused as refusal:
            if refusal.status != 409:
                raise
            self._say(f"step {step['id']}: the server refused the answer:「{refusal.detail}」; "
                      "trying again")
            await self.feed.next_change(2.0)
            return ""

    async def _hear_out(self, step: dict[str, Any]) -> None:
        """A step the agent reads: the customer lets the agent finish before answering (the
        answer opens once the agent was heard long enough, not at the end of the reading)."""
        assert self.feed is not None and self.line is not None
        for _ in range(600):  # the line is sampled every 0.2 s, for two minutes at most
            if self.line.other_quiet_s >= 1.5 or not _same_step(self.feed.snapshot, step):
                return
            await asyncio.sleep(0.2)

    async def _answer_aloud(self, step: dict[str, Any], words: str) -> str:
        """A spoken-answer step (R-24): the server listens and recognises the answer itself;
        said again when it did not understand, the button tapped once the page offers it."""
        assert self.feed is not None and self.line is not None
        heard = 0
        for _ in range(3):
            await self.line.say(words, self.answering_voice)

            def decided(s: Snapshot, heard: int = heard) -> bool:
                spoken = s.get("spoken") or {}
                return (not _same_step(s, step) or bool(s.get("paused"))
                        or bool(spoken.get("buttons")) or int(spoken.get("attempts", 0)) > heard)

            s = await self.feed.wait_for(f"the server to hear the answer to step {step['id']}",
                                         decided, self.options.step_timeout_s)
            spoken = s.get("spoken") or {}
            if not _same_step(s, step):
                moved_on = s.get("state") == "signing" or (
                    s.get("state") == "disclosing"
                    and int((s.get("current_step") or {}).get("index", -1)) > step["index"])
                return f"said「{words}」; the server recognised it (voice)" if moved_on else ""
            if s.get("paused"):
                return ""  # heard as a no: the agent explains and the step is played again
            if spoken.get("buttons"):
                await self._acknowledge(step, "button", "")
                return (f"said「{words}」; not understood (heard「{spoken.get('heard', '')}」), "
                        "so tapped the button the page then offered")
            heard = int(spoken.get("attempts", 0))
            self._say(f"step {step['id']}: the server did not understand "
                      f"「{spoken.get('heard', '')}」; saying it again")
        raise RehearsalError(f"step {step['id']}: the spoken answer was not taken")

    async def _acknowledge(self, step: dict[str, Any], kind: str, text: str) -> None:
        assert self.feed is not None
        result = await self.client.call("POST", "/customer/acknowledgements", token=self.token,
                                        json_body={"step_id": step["id"],
                                                   "answer": "affirmative",
                                                   "answer_kind": kind, "text": text,
                                                   "client_event_id": uuid.uuid4().hex})
        self.feed.update(result["session"])

    async def _read(self, step: dict[str, Any]) -> str:
        """Every page of the step's document on screen for its minimum time (the server times
        the views by its own clock), then off screen."""
        document = step["document_pages"]
        count = int(document["page_count"])
        hold = float(document.get("min_page_seconds", 0)) + 0.5
        for page in [*range(1, count + 1), 0]:
            if page:  # the page brings the picture on screen, then reports the view
                sha = document["pages"][page - 1]["sha256"]
                await self.client.get_bytes(f"/customer/documents/pages/{sha}",
                                            token=self.token)
            await self.client.call("POST", "/customer/documents/views", token=self.token,
                                   json_body={"step_id": step["id"], "page": page})
            if page:
                await asyncio.sleep(hold)
        return f"《{document.get('title', '')}》 page by page ({count} × {hold:.1f} s)"

    def _strokes_name(self) -> str:
        """The signature's characters: the customer's name where the synthetic hand knows
        every character of it, else its sample name."""
        name = self.options.name or ""
        known = handwriting.medians()
        return name if name and all(c in known for c in name) else "张三丰"

    async def _post_writing(self, copy_text: str | None, signature: bool) -> dict[str, Any]:
        """What the pads send: strokes per box and/or the signature's strokes, with the image
        drawn from them (never the text). A misread hand-copy is written again."""
        for attempt in range(3):
            self._seed += 1
            copy = handwriting.grid(copy_text, seed=self._seed) if copy_text else None
            pad = handwriting.pad(self._strokes_name(), seed=self._seed) if signature else None
            try:
                result: dict[str, Any] = await self.client.call(
                    "POST", "/customer/signature", token=self.token,
                    json_body=handwriting.sign_body(copy, pad))
                return result
            except Refused as refusal:
                if refusal.code not in ("handwriting_mismatch", "handwriting_unclear") \
                        or attempt == 2:
                    raise
                self._say(f"the server could not read the hand-copy:「{refusal.detail}」; "
                          "writing it again")
        raise AssertionError("unreachable")

    async def _write(self, step: dict[str, Any]) -> str:
        if step["answer"] == "handwritten_copy":
            result = await self._post_writing(str(step["copy_text"]), signature=False)
            return (f"hand-copied「{step['copy_text']}」 box by box (read back as "
                    f"「{result.get('recognised_text')}」, CER {result.get('cer')})")
        await self._post_writing(None, signature=True)
        return f"signed on the pad (strokes of「{self._strokes_name()}」)"

    async def _sign_final(self) -> None:
        """The signing state after the script: a signature, with the risk sentence copied
        where the product needs it (the server says so: 422 copy_missing)."""
        assert self.feed is not None
        try:
            await self._post_writing(None, signature=True)
            self._say("signed after the script")
        except Refused as refusal:
            if refusal.code != "copy_missing":
                raise
            risk = (await self.client.call("GET", "/consent-texts"))["risk_sentence"]
            result = await self._post_writing(risk, signature=True)
            self._say(f"hand-copied the risk sentence (read back as "
                      f"「{result.get('recognised_text')}」) and signed")
        self._signed_final = True
        self.feed.update(await self.client.call("GET", "/customer/session", token=self.token))
