"""The agent, as the console (h5/static/console.js) plays a session: logs in, waits for the
customer's identity and the session's speech, starts the call on the premises (R-03), joins it
with a camera and a voice, starts the script once both parties are connected and recorded
(R-30), reads aloud the steps the agent reads in person (R-24: the server listens for the
agent's voice), moves past steps that need no answer when the server allows, resumes a dropped
call (R-30) and completes the session after the signature."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearsal import face as faces
from rehearsal.api import ApiClient, LiveFeed, Refused, RehearsalError, Snapshot
from rehearsal.customer import CALL, DONE, ENDED
from rehearsal.line import CallLine
from rehearsal.progress import Progress, StepRecord
from rehearsal.voice import SpeechEngine, Voice
from testing.call_media import EncodedMedia

WHO = "agent"
BEFORE_IDENTITY = frozenset({"created", "invited", "opened", "consented"})
# Inside the demo premises' geofence (app/seed.py); the premises' network is loopback.
DEMO_LOCATION = {"lat": 29.8685, "lng": 121.5442, "accuracy_m": 20.0}
MAX_RESUMES = 3
MAX_JOINS = 4
MAX_READINGS = 3
PLEASE_WAIT = "请您稍等，视频正在接通。"


@dataclass(frozen=True)
class AgentOptions:
    username: str
    password: str
    location: dict[str, float] = field(default_factory=lambda: dict(DEMO_LOCATION))
    cache_dir: Path = Path.home() / ".cache" / "shuanglu-rehearsal"
    wait_customer_s: float = 1200.0  # for the customer's consent and identity
    speech_timeout_s: float = 1200.0  # for the session's speech to be rendered
    start_timeout_s: float = 120.0  # for both parties' media to be connected and recorded


def _same_step(s: Snapshot, step: dict[str, Any]) -> bool:
    current = s.get("current_step") or {}
    return (s.get("state") == "disclosing" and not s.get("paused")
            and current.get("id") == step["id"] and current.get("index") == step["index"])


class Agent:
    def __init__(self, client: ApiClient, session_id: str, options: AgentOptions,
                 progress: Progress, speech: SpeechEngine) -> None:
        self.client = client
        self.session_id = session_id
        self.options = options
        self.progress = progress
        self.voice = Voice(speech, speech.speech_rate)
        self.reading_voice = Voice(speech, speech.reading_rate)
        self.token = ""
        self.name = ""
        self.feed: LiveFeed | None = None
        self.line: CallLine | None = None
        self.signed = False
        self._signed_checked = False
        self.resumes = 0
        self._media: EncodedMedia | None = None
        self._reading: tuple[tuple[int, str], asyncio.Task[None]] | None = None
        self._read: set[tuple[int, str]] = set()  # agent steps read in this play of them
        self._advanced: set[tuple[int, str]] = set()
        self._narrating = False  # no customer party here: the agent prints the step lines
        self._narrated: dict[tuple[int, str], StepRecord | None] = {}

    def _say(self, message: str) -> None:
        self.progress.say(WHO, message)

    @property
    def _path(self) -> str:
        return f"/sessions/{self.session_id}"

    async def run(self, narrate_steps: bool = False) -> str:
        """Plays the agent until the session is completed; returns its state."""
        self._narrating = narrate_steps
        login = await self.client.call("POST", "/auth/login", json_body={
            "username": self.options.username, "password": self.options.password})
        self.token = login["token"]
        me = await self.client.call("GET", "/auth/me", token=self.token)
        self.name = str(me.get("display_name") or self.options.username)
        self._say(f"logged in as {self.options.username} ({self.name})")
        self.feed = LiveFeed(
            self.client, {"role": "staff", "token": self.token, "session_id": self.session_id},
            lambda: self.client.call("GET", self._path, token=self.token),
            on_event=self._on_event)
        warm = asyncio.create_task(self._prepare_speech())
        try:
            await self.feed.start()
            return await self._play()
        finally:
            warm.cancel()
            await self._stop_reading()
            if self.line is not None:
                await self.line.leave()
            await self.feed.close()

    @property
    def _greeting(self) -> str:
        return f"您好，我是销售人员{self.name}，现在开始远程双录，请问您能听到我说话吗？"

    async def _prepare_speech(self) -> None:
        """What the agent will say, rendered while waiting for the customer: the greeting and
        every step the agent reads (a neural voice takes seconds to load and to speak a step;
        the recording must not fall silent meanwhile)."""
        await self.voice.render(self._greeting)
        await self.voice.render(PLEASE_WAIT)
        session = await self.client.call("GET", self._path, token=self.token)
        for step in session["steps"]:
            if step.get("speaker") == "agent":
                await self.reading_voice.render(str(step["text"]))

    def _on_event(self, event: dict[str, Any]) -> None:
        data = event.get("data") or {}
        if event.get("type") == "answer_opened" and data.get("step_id"):
            self.progress.opened_by[str(data["step_id"])] = data
        elif event.get("type") == "signed":
            self.signed = True

    async def _play(self) -> str:
        assert self.feed is not None
        while True:
            s = self.feed.snapshot
            state = str(s.get("state"))
            if state in DONE:
                return state
            if state in ENDED:
                raise RehearsalError(f"the session ended:「{s.get('state_label')}」")
            if state in BEFORE_IDENTITY:
                self._say(f"waiting for the customer (the session is「{s.get('state_label')}」)")
                await self.feed.wait_for("the customer's consent and identity check",
                                         lambda s: s.get("state") == "identity_verified"
                                         or s.get("state") not in BEFORE_IDENTITY,
                                         self.options.wait_customer_s)
            elif state == "identity_verified":
                await self._speech_ready()
                await self._start_call()
            elif state == "interrupted":
                await self._resume()
            elif state in CALL and self._must_join(s):
                await self._join()
            elif state == "in_call":
                await self._start_script()
            elif state == "disclosing":
                await self._disclosing(s)
            elif state == "signing":
                await self._complete()
            elif not await self.feed.next_change(60.0):
                self.feed.update(await self.client.call("GET", self._path, token=self.token))

    # -- before the script -------------------------------------------------------------------

    async def _speech_ready(self) -> None:
        """The script starts only with every step's speech rendered (R-23): wait for the
        session's speech job (the first start of a server renders everything)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.speech_timeout_s
        last_said = 0.0
        while True:
            session = await self.client.call("GET", self._path, token=self.token)
            spoken = [s for s in session["steps"] if s.get("speaker") == "tts"]
            ready = sum(1 for s in spoken if s.get("audio"))
            if ready == len(spoken):
                self._say(f"the script's speech is ready ({len(spoken)} steps, "
                          f"{sum(s['audio']['duration_ms'] for s in spoken) / 1000:.0f} s)")
                return
            if loop.time() > deadline:
                raise RehearsalError(f"the session's speech was not rendered within "
                                     f"{self.options.speech_timeout_s:.0f} s ({ready}/"
                                     f"{len(spoken)} steps)")
            if loop.time() - last_said > 15:
                self._say(f"waiting for the session's speech: {ready}/{len(spoken)} steps "
                          "rendered")
                last_said = loop.time()
            await asyncio.sleep(2.0)

    async def _start_call(self) -> None:
        assert self.feed is not None
        # The camera is made first: the customer's recording runs from the call's start.
        await self._camera()
        summary = await self.client.call("POST", f"{self._path}/call/start", token=self.token,
                                         json_body={"location": self.options.location})
        self.feed.update(summary)
        self._say("started the call on the premises (licence, geofence and network passed)")

    async def _camera(self) -> EncodedMedia:
        if self._media is None:
            cache = faces.ClipCache(self.options.cache_dir)
            clip = await asyncio.to_thread(cache.get, cache.path("agent"),
                                           faces.agent_picture_frames)
            self._media = await asyncio.to_thread(EncodedMedia.load, clip)
        return self._media

    def _must_join(self, s: Snapshot) -> bool:
        """Not joined, our connection failed, or the server no longer counts us in the call
        (it dropped us: a peer connection can take long to notice that itself)."""
        line = self.line
        if line is None or not line.up:
            return True
        settled = asyncio.get_running_loop().time() - line.joined_at > 5.0
        return settled and "agent" not in (s.get("call_parties") or {})

    async def _join(self) -> None:
        if self.line is None:
            self.line = CallLine(self.client, f"/calls/{self.session_id}/agent/offer", self.token,
                                 await self._camera(), self.voice)
        elif self.line.joins >= MAX_JOINS:
            raise RehearsalError(f"the agent's call dropped {self.line.joins} times")
        try:
            await self.line.join()
        except Refused as refusal:
            if refusal.status != 409:
                raise
            # The line failed because the call's node died, and the server interrupted the
            # session before this offer arrived (409 call_not_started): resume, then rejoin.
            await self.line.leave()
            self._say(f"the server refused the offer:「{refusal.detail}」; looking again")
            assert self.feed is not None
            self.feed.update(await self.client.call("GET", self._path, token=self.token))
            return
        if self.line.joins == 1:
            self._say("joined the call (camera: a test picture; microphone: the agent's voice)")
            await self.line.say(self._greeting)
        else:
            self._say("joined the call again")

    async def _start_script(self) -> None:
        """Once both parties' media is connected and recorded (the console's rule, R-30)."""
        assert self.feed is not None

        def both(s: Snapshot) -> bool:
            parties = s.get("call_parties") or {}
            return s.get("state") != "in_call" or all(
                (parties.get(role) or {}).get("recording") for role in ("customer", "agent"))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.options.start_timeout_s
        while not both(self.feed.snapshot):
            if loop.time() > deadline:
                raise RehearsalError(f"the parties' media was not connected and recorded within "
                                     f"{self.options.start_timeout_s:.0f} s")
            if self.line is not None and self.line.up:
                # As an agent does while the customer's video comes up: the recording has no
                # long silence before the script.
                await self.line.say(PLEASE_WAIT)
            await self.feed.next_change(1.0)
        if self.feed.snapshot.get("state") != "in_call":
            return
        try:
            summary = await self.client.call("POST", f"{self._path}/script/start",
                                             token=self.token)
        except Refused as refusal:
            if refusal.code != "call_not_ready":
                raise
            self._say(f"the script cannot start yet:「{refusal.detail}」")
            await self.feed.next_change(5.0)
            return
        self.feed.update(summary)
        self._say(f"started the script ({summary['step_count']} steps)")

    # -- the script --------------------------------------------------------------------------

    async def _disclosing(self, s: Snapshot) -> None:
        assert self.feed is not None
        step = s.get("current_step")
        if s.get("paused"):
            await self._explain(s)
            return
        if step is None:
            await self.feed.next_change(10.0)
            return
        key = (int(step["index"]), str(step["id"]))
        if self._narrating and key not in self._narrated:
            self._narrate_previous()
            self._narrated[key] = self.progress.step_started(step, int(s["step_count"]))
        reading = self._reading
        if reading is not None and (reading[0] != key or reading[1].done()):
            await self._stop_reading()
        if step.get("speaker") == "agent" and self._reading is None \
                and not s.get("answer_open") and key not in self._read:
            self._read.add(key)
            self._reading = (key, asyncio.create_task(self._read_aloud(step)))
        if step.get("answer") == "none" and step.get("speaker") == "agent" \
                and s.get("answer_open") and key not in self._advanced:
            summary = await self.client.call("POST", f"{self._path}/script/advance",
                                             token=self.token, json_body={"step_id": step["id"]})
            self._advanced.add(key)
            self._say(f"moved past step {step['id']} (no answer needed)")
            self.feed.update(summary)
            return
        await self.feed.next_change(30.0)

    async def _read_aloud(self, step: dict[str, Any]) -> None:
        """Reads the step's text into the microphone; again when the server has not heard
        enough of it (as an agent repeats what the customer may have missed)."""
        assert self.feed is not None and self.line is not None
        for reading in range(1, MAX_READINGS + 1):
            seconds = await self.line.say(str(step["text"]), self.reading_voice)
            self._say(f"read step {step['id']} aloud ({seconds:.1f} s)"
                      + (f", reading {reading}" if reading > 1 else ""))
            with contextlib.suppress(RehearsalError):
                await self.feed.wait_for(
                    f"the server to hear step {step['id']}",
                    lambda s: not _same_step(s, step) or bool(s.get("answer_open")), 6.0)
                return
        self._say(f"read step {step['id']} {MAX_READINGS} times and its answer did not open")

    async def _stop_reading(self) -> None:
        reading, self._reading = self._reading, None
        if reading is None:
            return
        if self.line is not None:
            self.line.hush()
        reading[1].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading[1]

    async def _explain(self, s: Snapshot) -> None:
        """After a negative answer the agent explains and the step is played again (R-24)."""
        assert self.feed is not None and self.line is not None
        note = "已向客户解释说明该项内容，客户表示理解"
        self._read.clear()  # the step is played again: an agent's step is read again
        await self.line.say("我来为您解释一下这一项的内容。")
        summary = await self.client.call("POST", f"{self._path}/script/resume",
                                         token=self.token, json_body={"note": note})
        self._say(f"explained after「{s.get('pause_reason')}」and resumed the script")
        self.feed.update(summary)

    def _narrate_previous(self) -> None:
        """Agent alone (the customer is a person): a line for each step that moved on."""
        for key, record in list(self._narrated.items()):
            if record is not None:
                self.progress.step_done(record, "moved on", "—")
                self._narrated[key] = None

    # -- the end -----------------------------------------------------------------------------

    async def _complete(self) -> None:
        assert self.feed is not None
        await self._stop_reading()
        if self._narrating:
            self._narrate_previous()
        if not self.signed and not self._signed_checked:
            # Signed before this feed started (a rerun): the timeline says so.
            events = await self.client.call("GET", f"{self._path}/events", token=self.token)
            self.signed = any(e["type"] == "signed" for e in events["events"])
            self._signed_checked = True
        if not self.signed:
            await self.feed.next_change(10.0)
            return
        try:
            summary = await self.client.call("POST", f"{self._path}/complete", token=self.token)
        except Refused as refusal:
            if refusal.code == "signature_missing":
                self.signed = False
                return
            self._say(f"complete refused: {refusal.status} {refusal.code}「{refusal.detail}」")
            raise
        self._say("completed the session (the server closed the call and checked the "
                  "recording is whole)")
        self.feed.update(summary)

    async def _resume(self) -> None:
        """断点续录 (R-30): within the window, back where it left off."""
        assert self.feed is not None
        await self._stop_reading()
        self._read.clear()  # the interrupted step is played again from its start
        self.resumes += 1
        if self.resumes > MAX_RESUMES:
            raise RehearsalError(f"the call dropped {MAX_RESUMES} times; giving up")
        self._say("the call was interrupted (a party's media was lost); resuming it")
        summary = await self.client.call("POST", f"{self._path}/call/resume", token=self.token,
                                         json_body={"location": self.options.location})
        self.feed.update(summary)
