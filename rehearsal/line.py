"""One party's line into the call (R-20): the WebRTC connection to the server's call hub that
h5/static/call.js opens (media/call/client.py speaks the same contract), with the party's camera
(a pre-encoded clip, looped) and microphone (its voice, media/voice)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import av
import numpy as np

from media.call.client import CallClient
from rehearsal.api import ApiClient, Refused, RehearsalError
from rehearsal.voice import Microphone, Voice
from testing.call_media import EncodedMedia, PrerecordedTrack

# Offers refused with 503 while a dead node's room is recovered, tried again a second apart.
NODE_CHANGE_TRIES = 30

log = logging.getLogger(__name__)
TTS_FRAME_MS = 20  # the hub sends the script's speech in 20 ms Opus frames
VOICE_RMS = 10 ** (-45 / 20)  # louder than this is someone talking (QA's silence level)


class CallLine:
    def __init__(self, client: ApiClient, offer_path: str, token: str, camera: EncodedMedia,
                 voice: Voice) -> None:
        self._client = client
        self._offer_path = offer_path
        self._token = token
        self._camera = camera
        self.voice = voice
        self.microphone: Microphone | None = None
        self.call: CallClient | None = None
        self.joins = 0
        self.joined_at = 0.0  # loop time of the last join
        self._heard = 0
        self._last_voice = float("-inf")  # loop time the other party was last heard
        self._listening: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """Joined, and the connection has not failed or closed."""
        return self.call is not None and self.call.pc.connectionState not in ("failed", "closed")

    @property
    def speech_heard_ms(self) -> int:
        """The script's speech received on the TTS line so far (all joins)."""
        return self._heard + (self.call.frames["tts"] * TTS_FRAME_MS if self.call else 0)

    @property
    def other_quiet_s(self) -> float:
        """How long the other party has been silent on the line (the ear of the page)."""
        return asyncio.get_running_loop().time() - self._last_voice

    async def _listen(self, call: CallClient) -> None:
        """Decodes what the other party says (only its loudness is kept); the other lines'
        frames are dropped as they come, as a page that plays them."""
        decoder = av.CodecContext.create("opus", "r")
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.2)
            packets = call.packets["audio"]
            call.packets["audio"], call.packets["video"], call.packets["tts"] = [], [], []
            for packet in packets:
                try:
                    frames = decoder.decode(av.Packet(packet.data))
                except (av.error.FFmpegError, ValueError):
                    continue
                for frame in frames:
                    samples = frame.to_ndarray().astype(np.float32)
                    if frame.format.name.startswith("s16"):
                        samples /= 32768.0
                    if samples.size and float(np.sqrt(np.mean(samples ** 2))) >= VOICE_RMS:
                        self._last_voice = loop.time()

    async def join(self, timeout_s: float = 60.0) -> None:
        """Offer (after ICE gathering: the hub has no trickle ICE), get the answer, wait for the
        control channel. A second join replaces the first connection, as a page's rejoin."""
        await self.leave()
        self.microphone = Microphone()
        self.call = CallClient(audio=self.microphone,
                               video=PrerecordedTrack(self._camera, "video"), keep_packets=True)
        call = self.call

        async def signal(sdp: str, type_: str) -> tuple[str, str]:
            for attempt in range(1, NODE_CHANGE_TRIES + 1):
                try:
                    answer = await self._client.call("POST", self._offer_path,
                                                     token=self._token,
                                                     json_body={"sdp": sdp, "type": type_})
                    break
                except Refused as refusal:
                    # 503: the node that held the call died and its room is being recovered;
                    # the page tries again in a moment, so does the rehearsal.
                    if refusal.status != 503 or attempt == NODE_CHANGE_TRIES:
                        raise
                    await asyncio.sleep(1.0)
            return str(answer["sdp"]), str(answer["type"])

        try:
            async with asyncio.timeout(timeout_s):
                await call.connect(signal)
                await call.opened.wait()
        except TimeoutError as error:
            raise RehearsalError(f"the call did not connect within {timeout_s:.0f} s "
                                 f"(WebRTC state {call.pc.connectionState})") from error
        self.joins += 1
        self.joined_at = asyncio.get_running_loop().time()
        self._listening = asyncio.create_task(self._listen(call))

    async def say(self, text: str, voice: Voice | None = None) -> float:
        """Speaks `text` into the call; returns once it has been sent (its length in s)."""
        if self.microphone is None:
            raise RehearsalError("not in the call")
        pcm = await (voice or self.voice).render(text)
        seconds = len(pcm) / 48_000
        done = self.microphone.say(pcm)
        try:
            async with asyncio.timeout(seconds + 10):
                await done
        except TimeoutError as error:
            raise RehearsalError("the microphone track stopped sending") from error
        return seconds

    def hush(self) -> None:
        if self.microphone is not None:
            self.microphone.hush()

    async def leave(self) -> None:
        """Hang up (the hub notices the closed connection)."""
        call, self.call = self.call, None
        if self._listening is not None:
            self._listening.cancel()
            self._listening = None
        if call is None:
            return
        self._heard += call.frames["tts"] * TTS_FRAME_MS
        if self.microphone is not None:
            self.microphone.stop()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await call.close()
