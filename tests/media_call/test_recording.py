"""Recording of the call in segments without re-encoding: streams, durations, hashes, the
timeline, interruption and rejoin, and a crash mid-segment (R-30, R-31, R-32)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from media.call import PartyLost, SegmentWritten
from media.recording import SegmentWriter, probe_segment, vp8_is_keyframe, vp8_picture_size
from media.recording.packets import EncodedPacket
from tests.media_call.conftest import SESSION, CallRig, write_wav

REPO = Path(__file__).resolve().parents[2]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def segments(events: list[SegmentWritten], kind: str) -> list[SegmentWritten]:
    return sorted((e for e in events if e.kind == kind), key=lambda e: e.segment)


async def test_r31_r32_segments_decode_with_the_expected_streams_and_duration(
    make_rig: Callable[..., CallRig], tmp_path: Path
) -> None:
    rig = make_rig(segment_seconds=1.5)
    await rig.join("customer")
    await rig.join("agent")
    await rig.hub.play(SESSION, "step-1", write_wav(tmp_path / "c.wav", 1.0, 800.0))
    await asyncio.sleep(4.2)
    await rig.hub.close(SESSION)
    written = rig.events.of(SegmentWritten)

    for kind in ("customer_av", "agent_av"):
        parts = segments(written, kind)
        assert [p.segment for p in parts] == list(range(1, len(parts) + 1))
        assert len(parts) >= 3
        for part in parts:
            path = rig.storage / part.path
            assert part.path == f"{SESSION}/{kind}/{part.segment:05d}.webm"
            assert sha256(path) == part.sha256 and path.stat().st_size == part.size_bytes
            probe = probe_segment(path, decode_video=True)
            assert (probe.video_codec, probe.audio_codec) == ("vp8", "opus")
            assert (probe.width, probe.height) == (320, 240)
            assert probe.has_audio and probe.audio_rms_dbfs > -30
            assert probe.decoded_video_frames == probe.video_frames  # every frame decodes
            assert abs(probe.duration_ms - part.duration_ms) <= 100
            assert part.ended_at - part.started_at == timedelta(milliseconds=part.duration_ms) \
                or abs((part.ended_at - part.started_at).total_seconds() * 1000
                       - part.duration_ms) <= 1
            if part is not parts[-1]:
                # segments end on the key frame after the due time (one a second here)
                assert 1400 <= part.duration_ms <= 2700
                assert 14 <= probe.frame_rate <= 16
                assert probe.longest_video_gap_ms < 150
        for earlier, later in itertools.pairwise(parts):
            # one continuous timeline: a segment starts where the previous one ended
            gap = (later.started_at - earlier.ended_at).total_seconds()
            assert -0.1 <= gap <= 0.1

    tts = segments(written, "tts")
    assert tts
    first = probe_segment(rig.storage / tts[0].path)
    assert not first.has_video and first.has_audio and first.audio_codec == "opus"
    # the clip is in the first segment; silence before and after is sent and recorded too
    assert first.audio_rms_dbfs > -40
    assert sum(p.duration_ms for p in tts) >= 4000


async def test_r30_interruption_and_rejoin_continue_in_new_segments(
    make_rig: Callable[..., CallRig],
) -> None:
    rig = make_rig(segment_seconds=60)
    customer = await rig.join("customer")
    agent = await rig.join("agent")
    await asyncio.sleep(1.5)
    await customer.close()  # network gone
    await rig.events.wait_for(PartyLost)
    before = {e.path: e.sha256 for e in rig.events.of(SegmentWritten)}
    assert f"{SESSION}/customer_av/00001.webm" in before
    frames_before = agent.frames["video"]

    await asyncio.sleep(0.5)
    await rig.join("customer")  # 断点续录: the customer comes back
    await asyncio.sleep(2.0)
    assert agent.frames["video"] >= frames_before + 20  # the agent sees the new connection
    await rig.hub.close(SESSION)

    customer_parts = segments(rig.events.of(SegmentWritten), "customer_av")
    assert [p.segment for p in customer_parts] == [1, 2]
    assert customer_parts[1].started_at > customer_parts[0].ended_at  # the gap shows
    for path, digest in before.items():
        assert sha256(rig.storage / path) == digest  # earlier segments untouched
    assert probe_segment(rig.storage / customer_parts[1].path, decode_video=True).has_video
    agent_parts = segments(rig.events.of(SegmentWritten), "agent_av")
    assert len(agent_parts) == 1  # the agent stayed: one continuous segment


def test_r30_a_crash_mid_segment_keeps_every_finished_segment(
    tmp_path: Path, party_media_files: dict[str, Path]
) -> None:
    root = tmp_path / "recordings"
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.media_call.crash_worker", str(root),
         str(party_media_files["customer"]), str(party_media_files["agent"])],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    reported: dict[str, str] = {}
    deadline = time.monotonic() + 40
    try:
        assert worker.stdout is not None
        while time.monotonic() < deadline:
            line = worker.stdout.readline()
            if line.startswith("SEGMENT"):
                _, path, digest = line.split()
                reported[path] = digest
            if sum("customer_av" in p for p in reported) >= 2:
                break
        time.sleep(0.4)  # well inside the next segment
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()

    customer_done = sorted(p for p in reported if "customer_av" in p)
    assert len(customer_done) >= 2
    for path, digest in reported.items():
        assert sha256(root / path) == digest
        assert probe_segment(root / path).duration_ms > 0
    open_parts = list((root / "crash-1" / "customer_av").glob("*.webm.part"))
    assert open_parts, "the segment open at the crash is left as .part, never under a final name"

    # A restarted recorder continues after the highest number, finished or not.
    restarted = SegmentWriter(root, "crash-1", "customer_av")
    highest = max(int(p.name[:5]) for p in (root / "crash-1" / "customer_av").iterdir())
    assert restarted._next_number == highest + 1


async def test_r30_segment_writer_never_reuses_a_file_name(tmp_path: Path) -> None:
    folder = tmp_path / "s-9" / "tts"
    folder.mkdir(parents=True)
    (folder / "00001.webm").write_bytes(b"evidence")
    (folder / "00003.webm.part").write_bytes(b"crashed")
    written: list[SegmentWritten] = []
    writer = SegmentWriter(tmp_path, "s-9", "tts", segment_seconds=0.2, on_segment=written.append)

    now = time.time()
    silence = bytes.fromhex("f8fffe")  # an Opus packet of silence
    for index in range(30):
        writer.write(EncodedPacket("audio", silence, index * 960, 48_000, True,
                                   now + index * 0.02, epoch=1))
    await writer.finish()

    assert [w.segment for w in written] == [4, 5, 6]
    assert (folder / "00001.webm").read_bytes() == b"evidence"
    assert (folder / "00003.webm.part").read_bytes() == b"crashed"
    assert sum(w.duration_ms for w in written) == 600


def test_vp8_key_frame_header() -> None:
    key = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
    assert vp8_is_keyframe(key) and vp8_picture_size(key) == (640, 480)
    inter = bytes([0x51]) + key[1:]
    assert not vp8_is_keyframe(inter) and vp8_picture_size(inter) is None


async def test_r32_a_due_segment_waits_for_a_key_frame_and_asks_for_one(tmp_path: Path) -> None:
    requests: list[float] = []
    written: list[SegmentWritten] = []
    writer = SegmentWriter(tmp_path, "s-kf", "customer_av", segment_seconds=1.0,
                           on_segment=written.append, keyframe_wait_seconds=1.0,
                           request_keyframe=lambda: requests.append(time.monotonic()))
    writer.expect(audio=False, video=True)
    key = bytes([0x50, 0x42, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes(50)
    inter = bytes([0x51]) + bytes(59)
    now = time.time()

    def frame(index: int, keyframe: bool) -> EncodedPacket:
        return EncodedPacket("video", key if keyframe else inter, index * 6000, 90_000,
                             keyframe, now + index / 15, epoch=1)

    writer.write(frame(0, False))  # no key frame yet: dropped, one asked for
    assert len(requests) == 1
    for index in range(1, 45):  # 3 s of video with a single key frame at the start
        writer.write(frame(index, index == 1))
    await writer.finish()

    # due at 1 s; no key frame came, so the segment was cut after the 1 s grace and the
    # following inter frames were dropped until a key frame (which never came)
    assert [w.segment for w in written] == [1]
    assert 1900 <= written[0].duration_ms <= 2100
    assert len(requests) >= 2
    probe = probe_segment(tmp_path / written[0].path)
    assert (probe.width, probe.height) == (320, 240) and probe.video_frames == 30
