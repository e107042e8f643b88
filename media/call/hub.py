"""The call hub (R-20, R-23, R-24, R-30): one room per session, the customer and the agent each
connected to the server by an RTCPeerConnection.

The server relays each party's audio and video to the other as encoded frames (no decoding, no
re-encoding), sends the TTS clips on a third track to both, records everything through
:mod:`media.recording`, carries JSON messages on a "control" data channel and watches each party
with a keep-alive. Signalling is one offer/answer over HTTP: aiortc has no trickle ICE, so the
client sends its offer after ICE gathering completes and the answer returned by :meth:`join`
already holds the server's candidates.

What a client offers (browser or Python), in this order::

    pc.addTransceiver(micTrack,    {direction: "sendrecv"})  // conversation audio (1st audio)
    pc.addTransceiver(cameraTrack, {direction: "sendrecv"})  // conversation video
    pc.addTransceiver("audio",     {direction: "recvonly"})  // TTS (2nd audio)
    pc.createDataChannel("control")
    // createOffer, setLocalDescription, wait for iceGatheringState == "complete", POST the offer

Video is VP8, audio Opus (the recording stores them as received). On the control channel the
client answers ``{"type":"ping","seq":n}`` with ``{"type":"pong","seq":n}`` (and may ping the
server to detect a dead server).

The hub decodes nothing for the relay or the recording; :meth:`CallHub.watch_video` samples a
party's video at a low rate (one key frame a second, decoded in a worker thread) for whoever
needs to look at it: the presence monitor (R-13, :mod:`media.call.presence`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import inspect
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from aiortc import (
    RTCDataChannel,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from pydantic import BaseModel

from media.call import messages
from media.call.admission import Admission, AdmissionConfig, Headroom
from media.call.events import (
    ROLES,
    ClipFinished,
    LostReason,
    PartyConnected,
    PartyLost,
    PartyMessage,
    Role,
)
from media.call.ice import (
    enlarge_receive_buffers,
    include_loopback_candidates,
    rtc_configuration,
)
from media.call.listen import AudioListener, Samples
from media.call.node_cpu import NodeCpu
from media.call.passthrough import forward_keyframe_requests, request_keyframe, tap_receiver
from media.call.presence import Frame, VideoSampler
from media.call.relay import PacketFanout, RelayTrack
from media.call.sampling import SamplingPool
from media.call.tts import TtsPlayer
from media.recording import (
    EncodedPacket,
    MediaKind,
    RecordingKind,
    SegmentWritten,
    SessionRecorder,
    check_session_id,
    vp8_is_keyframe,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
CONTROL_CHANNEL = "control"
PC_CLOSE_TIMEOUT_SECONDS = 5.0


class SignallingError(ValueError):
    """The offer cannot be answered (wrong type, missing m-lines, no VP8/Opus, bad SDP)."""


class UnknownSession(LookupError):
    """No room is open for this session (nobody joined yet, or it was closed)."""


@dataclass(frozen=True)
class CallHubConfig:
    """Settings of a hub. Times in seconds.

    ``include_loopback`` adds 127.0.0.1 to the server's ICE candidates (process-wide, see
    :mod:`media.call.ice`): for tests and browsers on the same machine only.
    ``socket_receive_buffer`` absorbs event-loop stalls without kernel drops (see there).
    """

    storage_root: Path
    record: bool = True
    segment_seconds: float = 60.0
    keepalive_interval: float = 2.0
    keepalive_timeout: float = 10.0
    connect_timeout: float = 20.0
    include_loopback: bool = False
    ice_servers: tuple[str | RTCIceServer, ...] = ()
    announce_clips: bool = True
    max_pending_messages: int = 100
    socket_receive_buffer: int = 1 << 20  # bytes per UDP socket; 0 keeps the OS default
    # Worker threads shared by all rooms' video samplers (decode + analysis, R-13); a sample
    # that finds them all busy waits, and the room whose sample fell due first goes next
    # (media/call/sampling.py): one sample per room at most, no room starved.
    sample_workers: int = 1
    # Admission control (media/call/admission.py): None admits every room.
    admission: AdmissionConfig | None = None


@dataclass(frozen=True, slots=True)
class RoomClosed:
    """A room was closed: both connections, the recording and the video samplers are finished
    (reported after every segment and every sampler result)."""

    session_id: str


@dataclass(eq=False)
class _Party:
    role: Role
    pc: RTCPeerConnection
    epoch: int
    joined_at: float
    last_seen: float
    tracks: list[RelayTrack]
    channel: RTCDataChannel | None = None
    pending: list[str] = field(default_factory=list)
    watchdog: asyncio.Task[None] | None = None
    closing: bool = False

    @property
    def media_connected(self) -> bool:
        return self.pc.connectionState == "connected"


@dataclass(eq=False)
class _Room:
    session_id: str
    sources: dict[tuple[Role, MediaKind], PacketFanout]
    tts_fanout: PacketFanout
    tts: TtsPlayer | None = None
    recorder: SessionRecorder | None = None
    parties: dict[Role, _Party] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    samplers: list[VideoSampler[Any]] = field(default_factory=list)
    listeners: list[AudioListener[Any]] = field(default_factory=list)


def _other(role: Role) -> Role:
    return "agent" if role == "customer" else "customer"


def _prefer(transceiver: RTCRtpTransceiver, mime_type: str) -> None:
    kind = mime_type.split("/")[0]
    wanted = {mime_type.lower(), f"{kind}/rtx"}
    codecs = RTCRtpSender.getCapabilities(kind).codecs
    transceiver.setCodecPreferences([c for c in codecs if c.mimeType.lower() in wanted])


class CallHub:
    """Rooms of two parties; see the module docstring for the client contract.

    Callbacks take one event object and may be coroutine functions; they run as tasks and
    their exceptions are logged. ``on_segment`` is awaited before a room's :meth:`close`
    returns, so every segment is registered by then.
    """

    def __init__(
        self,
        config: CallHubConfig,
        *,
        on_segment: Callable[[SegmentWritten], Awaitable[None] | None] | None = None,
        on_clip_finished: Callable[[ClipFinished], Awaitable[None] | None] | None = None,
        on_party_lost: Callable[[PartyLost], Awaitable[None] | None] | None = None,
        on_party_connected: Callable[[PartyConnected], Awaitable[None] | None] | None = None,
        on_message: Callable[[PartyMessage], Awaitable[None] | None] | None = None,
        on_room_closed: Callable[[RoomClosed], Awaitable[None] | None] | None = None,
    ) -> None:
        self.config = config
        self._on_segment = on_segment
        self._on_clip_finished = on_clip_finished
        self._on_party_lost = on_party_lost
        self._on_party_connected = on_party_connected
        self._on_message = on_message
        self._on_room_closed = on_room_closed
        self._sampling_pool = SamplingPool(config.sample_workers)
        self._listen_executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._rooms: dict[str, _Room] = {}
        self._epochs = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        # The node's CPU as admission control counts it: this process and its helpers.
        self._node_cpu = NodeCpu()
        self.admission = (Admission(config.admission, rooms=lambda: len(self._rooms),
                                    cpu=self._node_cpu)
                          if config.admission is not None else None)
        self._admission_task: asyncio.Task[None] | None = None
        if config.include_loopback:
            include_loopback_candidates()

    # -- public API --------------------------------------------------------------------------

    async def join(
        self, session_id: str, role: Literal["customer", "agent"], sdp: str, type_: str
    ) -> tuple[str, str]:
        """Answer a party's offer; returns ``(sdp, type)`` of the answer (R-20).

        A party that joins again (after a network drop) replaces its previous connection; its
        recording continues in new segments (R-30).

        A new room is refused with :class:`media.call.admission.CallRefused` when the hub has
        no headroom for one more call (admission control); a party joining a room already open
        (the second party, or a rejoin) is always admitted.
        """
        check_session_id(session_id)
        if role not in ROLES:
            raise SignallingError(f"unknown role {role!r}")
        if type_ != "offer":
            raise SignallingError(f"expected an SDP offer, got {type_!r}")
        room = self._rooms.get(session_id)
        if room is None:
            if self.admission is not None:
                self._measure_load()
                self.admission.check()  # no await before the room is opened
            room = self._open_room(session_id)
        async with room.lock:
            if self._rooms.get(session_id) is not room:
                raise UnknownSession(f"{session_id} was closed while joining")
            old = room.parties.get(role)
            if old is not None:
                await self._drop(room, old, reason=None)
            party = await self._connect(room, role, sdp)
            room.parties[role] = party
            for sampler in room.samplers:
                if sampler.role == role:
                    sampler.attach(room.sources[(role, "video")], party.epoch)
            for listener in room.listeners:
                if listener.role == role:
                    listener.attach(room.sources[(role, "audio")], party.epoch)
            party.watchdog = asyncio.get_running_loop().create_task(self._watch(room, party))
            party.watchdog.add_done_callback(self._log_failure)
        description = party.pc.localDescription
        return description.sdp, description.type

    async def play(self, session_id: str, clip_id: str, wav_path: Path) -> None:
        """Play a 48 kHz mono 16-bit WAV to both parties now, cutting any clip still playing
        (R-23). How it ended is reported as :class:`ClipFinished`."""
        tts = self._room(session_id).tts
        assert tts is not None
        await tts.play(clip_id, wav_path)

    async def stop_clip(self, session_id: str) -> None:
        """Cut the clip that is playing (reported as incomplete)."""
        tts = self._room(session_id).tts
        assert tts is not None
        tts.stop_clip()

    async def push(
        self,
        session_id: str,
        message: dict[str, Any] | BaseModel,
        role: Literal["customer", "agent"] | None = None,
    ) -> int:
        """Send a JSON message (with a string ``type``) to one party or both.

        Queued until the party's control channel opens. Returns how many parties it went to.
        """
        room = self._room(session_id)
        text = messages.encode(message)
        sent = 0
        for target in (role,) if role else ROLES:
            party = room.parties.get(target)
            if party is not None:
                self._send(party, text)
                sent += 1
        return sent

    def watch_video(
        self,
        session_id: str,
        role: Literal["customer", "agent"],
        analyse: Callable[[float, Frame], T],
        *,
        sample_fps: float,
        origin: float,
        on_result: Callable[[T], Awaitable[None] | None] | None = None,
    ) -> VideoSampler[T]:
        """Sample ``role``'s video about ``sample_fps`` times a second for the rest of the room
        (R-13): each sample is a key frame asked for and decoded alone, ``analyse(t, bgr)`` runs
        in a worker thread with ``t`` in seconds from ``origin`` (POSIX time), and its result
        goes to ``on_result`` in the loop. Follows the party across rejoins; closed with the
        room. See :mod:`media.call.presence`."""
        room = self._room(session_id)
        sampler = VideoSampler(role, analyse, pool=self._sampling_pool, sample_fps=sample_fps,
                               origin=origin, on_result=on_result,
                               name=f"{session_id}/{role}/video sampler")
        room.samplers.append(sampler)
        party = room.parties.get(role)
        if party is not None and not party.closing:
            sampler.attach(room.sources[(role, "video")], party.epoch)
        return sampler

    def listen_audio(
        self,
        session_id: str,
        role: Literal["customer", "agent"],
        consume: Callable[[float, Samples], T],
        *,
        on_result: Callable[[T], Awaitable[None] | None] | None = None,
        block_seconds: float = 1.0,
    ) -> AudioListener[T]:
        """Decode ``role``'s voice until :meth:`stop_listening` (or the room closes): every
        ``block_seconds`` the 16 kHz samples go to ``consume(t, samples)`` in a worker thread
        and its result to ``on_result`` in the loop. Follows the party across rejoins. See
        :mod:`media.call.listen`."""
        room = self._room(session_id)
        if self._listen_executor is None:
            self._listen_executor = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="audio-listener")
        listener = AudioListener(role, consume, executor=self._listen_executor,
                                 on_result=on_result, block_seconds=block_seconds,
                                 name=f"{session_id}/{role}/audio listener")
        room.listeners.append(listener)
        party = room.parties.get(role)
        if party is not None and not party.closing:
            listener.attach(room.sources[(role, "audio")], party.epoch)
        return listener

    async def stop_listening(self, session_id: str, listener: AudioListener[Any]) -> None:
        room = self._rooms.get(session_id)
        if room is not None and listener in room.listeners:
            room.listeners.remove(listener)
        await listener.close()

    def video_source(self, session_id: str, role: Literal["customer", "agent"]) -> PacketFanout:
        """The room's stream of ``role``'s encoded video (it follows rejoins): for whoever
        decodes it for a while, e.g. a live liveness challenge (media/call/live_liveness.py).
        A subscriber must unsubscribe when done."""
        return self._room(session_id).sources[(role, "video")]

    async def inbound_video_counts(
        self, session_id: str, role: Literal["customer", "agent"]
    ) -> tuple[int, int] | None:
        """(packets received, packets lost) of ``role``'s video as this hub receives it (aiortc
        getStats, inbound-rtp); None without a connected party here. The counters restart
        when the party rejoins (a new connection)."""
        room = self._rooms.get(session_id)
        party = room.parties.get(role) if room is not None else None
        if party is None or not party.media_connected:
            return None
        for stats in (await party.pc.getStats()).values():
            if stats.type == "inbound-rtp" and getattr(stats, "kind", "") == "video":
                return int(stats.packetsReceived), max(int(stats.packetsLost), 0)
        return None

    def video_samplers(self, session_id: str) -> list[VideoSampler[Any]]:
        """The samplers watching the room's video (for monitoring and tests)."""
        return list(self._room(session_id).samplers)

    async def leave(self, session_id: str, role: Literal["customer", "agent"]) -> None:
        """A party hung up on purpose: close its connection and its open segment."""
        room = self._rooms.get(session_id)
        if room is None:
            return
        async with room.lock:
            party = room.parties.get(role)
            if party is not None:
                await self._drop(room, party, reason=None)

    async def close(self, session_id: str) -> None:
        """End the room: cut the clip, close both connections, finish and report all segments."""
        room = self._rooms.pop(session_id, None)
        if room is None:
            return
        async with room.lock:
            if room.tts is not None:
                await room.tts.close()
            for party in list(room.parties.values()):
                await self._drop(room, party, reason=None)
            if room.recorder is not None:
                await room.recorder.finish()
            for sampler in room.samplers:
                await sampler.close()
            for listener in room.listeners:
                await listener.close()
        self._emit(self._on_room_closed, RoomClosed(session_id))
        await self._settle()

    async def shutdown(self) -> None:
        """Close every room (on process exit)."""
        for session_id in list(self._rooms):
            await self.close(session_id)
        await self._settle()
        if self._admission_task is not None:
            self._admission_task.cancel()
            self._admission_task = None
        await asyncio.to_thread(self._sampling_pool.shutdown)
        if self._listen_executor is not None:
            await asyncio.to_thread(self._listen_executor.shutdown)

    def count_helper_process(self, pid: Callable[[], int | None]) -> None:
        """Admission control counts the CPU of the process ``pid()`` names (None: not running
        now) as this node's: a helper doing the calls' work elsewhere, e.g. the presence
        monitor's child process."""
        self._node_cpu.add_helper(pid)

    def headroom(self) -> Headroom | None:
        """What admission control measured and would decide for a new room now (None when
        admission control is off)."""
        return self.admission.headroom() if self.admission is not None else None

    def _measure_load(self) -> None:
        """Start sampling CPU and loop lag (in the loop the rooms run in) on the first join."""
        if self.admission is not None and self._admission_task is None:
            self._admission_task = asyncio.get_running_loop().create_task(self.admission.run())
            self._admission_task.add_done_callback(self._log_failure)

    def room_ids(self) -> list[str]:
        """The sessions with a room open in this hub."""
        return list(self._rooms)

    def has_room(self, session_id: str) -> bool:
        """Whether a room is open for the session in this hub (someone joined here)."""
        return session_id in self._rooms

    def connected_roles(self, session_id: str) -> set[Role]:
        """Roles whose media connection is up right now."""
        room = self._rooms.get(session_id)
        if room is None:
            return set()
        return {role for role, party in room.parties.items() if party.media_connected}

    def recorder(self, session_id: str) -> SessionRecorder | None:
        return self._room(session_id).recorder

    # -- rooms ---------------------------------------------------------------------------------

    def _room(self, session_id: str) -> _Room:
        try:
            return self._rooms[session_id]
        except KeyError:
            raise UnknownSession(session_id) from None

    def _open_room(self, session_id: str) -> _Room:
        kinds: tuple[MediaKind, ...] = ("audio", "video")
        sources = {
            (role, kind): PacketFanout(f"{session_id}/{role}/{kind}", kind)
            for role in ROLES
            for kind in kinds
        }
        room = _Room(session_id, sources, PacketFanout(f"{session_id}/tts", "audio"))
        room.tts = TtsPlayer(
            session_id,
            room.tts_fanout,
            epoch=next(self._epochs),
            customer_listening=lambda: self._customer_listening(room),
            on_started=lambda clip_id, ms: self._clip_started(room, clip_id, ms),
            on_finished=lambda event: self._clip_finished(room, event),
        )
        if self.config.record:
            recorder = SessionRecorder(
                self.config.storage_root,
                session_id,
                segment_seconds=self.config.segment_seconds,
                on_segment=self._on_segment,
                request_keyframe=lambda kind: self._keyframe_for_recording(room, kind),
            )
            room.recorder = recorder
            for role in ROLES:
                writer = recorder[f"{role}_av"]  # type: ignore[index]
                sources[(role, "audio")].subscribe(writer.write)
                sources[(role, "video")].subscribe(writer.write)

            def record_tts(packet: EncodedPacket) -> None:
                if room.parties:  # the TTS "played" only while someone is connected
                    recorder["tts"].write(packet)

            room.tts_fanout.subscribe(record_tts)
        self._rooms[session_id] = room
        room.tts.start()
        return room

    @staticmethod
    def _keyframe_for_recording(room: _Room, kind: RecordingKind) -> None:
        if kind != "tts":
            room.sources[("customer" if kind == "customer_av" else "agent", "video")] \
                .request_keyframe()

    # -- parties -------------------------------------------------------------------------------

    async def _connect(self, room: _Room, role: Role, sdp: str) -> _Party:
        pc = RTCPeerConnection(rtc_configuration(self.config.ice_servers))
        other = _other(role)
        tracks = [
            RelayTrack(room.sources[(other, "audio")]),
            RelayTrack(room.sources[(other, "video")]),
            RelayTrack(room.tts_fanout),
        ]
        # Created before the offer is applied, so aiortc matches the offer's m-lines to them in
        # order (1st audio, video, 2nd audio) and negotiates only the codecs we record.
        conversation_audio = pc.addTransceiver(tracks[0], direction="sendrecv")
        video = pc.addTransceiver(tracks[1], direction="sendrecv")
        tts = pc.addTransceiver(tracks[2], direction="sendonly")
        _prefer(conversation_audio, "audio/opus")
        _prefer(video, "video/VP8")
        _prefer(tts, "audio/opus")
        now = asyncio.get_running_loop().time()
        party = _Party(role, pc, next(self._epochs), joined_at=now, last_seen=now, tracks=tracks)
        forward_keyframe_requests(video.sender, room.sources[(other, "video")].request_keyframe)

        @pc.on("datachannel")
        def on_datachannel(channel: RTCDataChannel) -> None:
            if channel.label == CONTROL_CHANNEL and party.channel is None:
                self._channel_open(room, party, channel)

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if party.closing:
                return
            if pc.connectionState == "failed":
                self._spawn(self._lose(room, party, "connection_failed"))
            elif pc.connectionState == "closed":
                self._spawn(self._lose(room, party, "connection_closed"))

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            missing = [
                name
                for name, transceiver in (
                    ("1st audio (conversation)", conversation_audio),
                    ("video", video),
                    ("2nd audio (TTS)", tts),
                )
                if transceiver.mid is None
            ]
            if missing or pc.sctp is None:
                raise SignallingError(
                    "the offer lacks " + ", ".join(missing + (["a data channel"] if pc.sctp is
                                                           None else []))
                )
            self._tap(room, party, conversation_audio, video)
            await pc.setLocalDescription(await pc.createAnswer())
            if self.config.socket_receive_buffer:
                enlarge_receive_buffers(pc, self.config.socket_receive_buffer)
        except SignallingError:
            party.closing = True
            await pc.close()
            raise
        except Exception as error:
            party.closing = True
            await pc.close()
            raise SignallingError(f"cannot answer the offer: {error}") from error
        return party

    def _tap(
        self,
        room: _Room,
        party: _Party,
        conversation_audio: RTCRtpTransceiver,
        video: RTCRtpTransceiver,
    ) -> None:
        """Wire every receiver to a fanout, or to nothing: every received track is consumed."""
        for transceiver in party.pc.getTransceivers():
            receiver = transceiver.receiver
            if receiver.track is None:
                continue
            fanout: PacketFanout | None = None
            if transceiver is conversation_audio:
                fanout = room.sources[(party.role, "audio")]
            elif transceiver is video:
                fanout = room.sources[(party.role, "video")]
                fanout.set_keyframe_source(
                    functools.partial(request_keyframe, receiver), owner=party.epoch
                )
            tap_receiver(receiver, self._frame_handler(fanout, transceiver.kind, party.epoch))
        if room.recorder is not None:
            room.recorder[f"{party.role}_av"].expect(  # type: ignore[index]
                audio=conversation_audio.receiver.track is not None,
                video=video.receiver.track is not None,
            )

    @staticmethod
    def _frame_handler(
        fanout: PacketFanout | None, kind: str, epoch: int
    ) -> Callable[[Any, Any], None]:
        def on_frame(codec: Any, frame: Any) -> None:
            if fanout is None:
                return  # e.g. media on the TTS line: read and dropped
            data: bytes = frame.data
            fanout.publish(
                EncodedPacket(
                    kind="video" if kind == "video" else "audio",
                    data=data,
                    timestamp=frame.timestamp,
                    clock_rate=codec.clockRate,
                    keyframe=vp8_is_keyframe(data) if kind == "video" else True,
                    received_at=time.time(),
                    epoch=epoch,
                )
            )

        return on_frame

    def _channel_open(self, room: _Room, party: _Party, channel: RTCDataChannel) -> None:
        party.channel = channel
        party.last_seen = asyncio.get_running_loop().time()

        @channel.on("message")
        def on_message(raw: str | bytes) -> None:
            party.last_seen = asyncio.get_running_loop().time()
            try:
                message = messages.parse_incoming(raw)
            except messages.InvalidMessage as error:
                logger.warning("%s/%s: dropped message: %s", room.session_id, party.role, error)
                return
            if isinstance(message, messages.Ping):
                self._send(party, messages.Pong(seq=message.seq).model_dump_json())
            elif isinstance(message, dict):
                self._emit(self._on_message, PartyMessage(room.session_id, party.role, message))

        pending, party.pending = party.pending, []
        for text in pending:
            self._send(party, text)
        self._emit(self._on_party_connected, PartyConnected(room.session_id, party.role))

    def _send(self, party: _Party, text: str) -> None:
        channel = party.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
            return
        if len(party.pending) >= self.config.max_pending_messages:
            logger.warning("%s: control channel not open, oldest message dropped", party.role)
            party.pending.pop(0)
        party.pending.append(text)

    async def _watch(self, room: _Room, party: _Party) -> None:
        """Keep-alive: aiortc has no "disconnected" state, a vanished peer just goes quiet."""
        loop = asyncio.get_running_loop()
        config = self.config
        for seq in itertools.count(1):
            await asyncio.sleep(config.keepalive_interval)
            now = loop.time()
            channel = party.channel
            if channel is None or channel.readyState != "open":
                if now - party.joined_at > config.connect_timeout:
                    self._spawn(self._lose(room, party, "connect_timeout"))
                    return
                continue
            if now - party.last_seen > config.keepalive_timeout:
                self._spawn(self._lose(room, party, "keepalive_timeout"))
                return
            self._send(party, messages.Ping(seq=seq, sent_at=time.time()).model_dump_json())

    async def _lose(self, room: _Room, party: _Party, reason: LostReason) -> None:
        async with room.lock:
            if room.parties.get(party.role) is party:
                await self._drop(room, party, reason)

    async def _drop(self, room: _Room, party: _Party, reason: LostReason | None) -> None:
        if room.parties.get(party.role) is party:
            del room.parties[party.role]
        if party.closing:
            return
        party.closing = True
        watchdog = party.watchdog
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
        for track in party.tracks:
            track.stop()
        for sampler in room.samplers:
            if sampler.role == party.role:
                sampler.detach(party.epoch)
        for listener in room.listeners:
            if listener.role == party.role:
                listener.detach(party.epoch)
        for kind in ("audio", "video"):
            room.sources[(party.role, kind)].clear_keyframe_source(party.epoch)  # type: ignore[index]
        try:
            # aiortc's close() has been seen not to return when tracks were stopped first
            # (aiortc#283); a hung close must not hold the room, the recording or shutdown.
            await asyncio.wait_for(party.pc.close(), PC_CLOSE_TIMEOUT_SECONDS)
        except TimeoutError:
            logger.warning("%s/%s: closing the connection took over %s s; left behind",
                           room.session_id, party.role, PC_CLOSE_TIMEOUT_SECONDS)
        except Exception:  # the recording must still be finished below
            logger.exception("%s/%s: closing the connection failed", room.session_id, party.role)
        if room.recorder is not None:
            await room.recorder[f"{party.role}_av"].finish()  # type: ignore[index]
            if not room.parties:
                await room.recorder["tts"].finish()
        if reason is not None:
            logger.info("%s/%s lost: %s", room.session_id, party.role, reason)
            self._emit(self._on_party_lost, PartyLost(room.session_id, party.role, reason))

    # -- TTS -----------------------------------------------------------------------------------

    @staticmethod
    def _customer_listening(room: _Room) -> bool:
        customer = room.parties.get("customer")
        return customer is not None and customer.media_connected

    def _clip_started(self, room: _Room, clip_id: str, duration_ms: int) -> None:
        if self.config.announce_clips:
            text = messages.TtsStarted(clip_id=clip_id, duration_ms=duration_ms).model_dump_json()
            for party in room.parties.values():
                self._send(party, text)

    def _clip_finished(self, room: _Room, event: ClipFinished) -> None:
        if self.config.announce_clips:
            text = messages.TtsFinished(
                clip_id=event.clip_id,
                played_ms=event.played_ms,
                duration_ms=event.duration_ms,
                complete=event.complete,
            ).model_dump_json()
            for party in room.parties.values():
                self._send(party, text)
        if event.complete:
            self._spawn(self._confirm_clip(room, event))
        else:
            self._emit(self._on_clip_finished, event)

    async def _confirm_clip(self, room: _Room, event: ClipFinished) -> None:
        """Report a clip complete only once the customer is heard from after its last packet.

        Without a "disconnected" state a customer who vanished during the last seconds of a
        clip still looks connected; any message (a pong to the ping sent now) proves the page
        was alive when the clip ended. Not heard within the keep-alive timeout: incomplete.
        """
        loop = asyncio.get_running_loop()
        ended = loop.time()
        customer = room.parties.get("customer")
        confirmed = False
        if customer is not None:
            self._send(customer, messages.Ping(seq=0, sent_at=time.time()).model_dump_json())
            deadline = ended + self.config.keepalive_timeout
            while not customer.closing and loop.time() < deadline:
                if customer.last_seen >= ended:
                    confirmed = True
                    break
                await asyncio.sleep(0.05)
        self._emit(self._on_clip_finished,
                   event if confirmed else dataclasses.replace(event, complete=False))

    # -- callbacks -----------------------------------------------------------------------------

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        self._log_failure(task)

    @staticmethod
    def _log_failure(task: asyncio.Task[Any]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("call hub task failed", exc_info=task.exception())

    def _emit(self, callback: Callable[[Any], Awaitable[None] | None] | None, event: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(event)
        except Exception:
            logger.exception("callback failed for %r", event)
            return
        if inspect.isawaitable(result):
            self._spawn(result)

    async def _settle(self) -> None:
        """Wait for the callback tasks started so far (and those they start)."""
        current = asyncio.current_task()
        for _ in range(10):
            pending = [t for t in self._tasks if t is not current and not t.done()]
            if not pending:
                return
            await asyncio.wait(pending, timeout=5)
