"""Decoding an uploaded liveness clip (R-12): a browser's 15 fps WebM (whole-millisecond
timestamps, 66/67 ms apart) keeps every frame; faster clips are thinned to about 15 fps."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import numpy as np
import pytest

from media.identity.liveness import frames_from_video


def _webm(fps: float, seconds: float) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=round(fps))
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        for n in range(round(fps * seconds)):
            image = np.full((120, 160, 3), (n * 7) % 255, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = round(n * 1000 / fps)  # whole milliseconds, as MediaRecorder writes
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


@pytest.mark.parametrize(("fps", "kept"), [(15, (44, 45)), (30, (44, 46))])
def test_a_browser_clip_keeps_about_15_frames_a_second_R12(
    fps: float, kept: tuple[int, int]
) -> None:
    frames = frames_from_video(_webm(fps, 3.0), suffix=".webm")
    assert kept[0] <= len(frames) <= kept[1], len(frames)
    gaps = np.diff([f.t for f in frames])
    assert gaps.max() < 0.1  # no frame of a 15 fps clip is dropped
