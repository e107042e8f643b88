"""R-13: presence during the call: timeline marks and the share of time the customer is in view."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from media.identity import IdentityService
from media.identity import synthetic as synth
from media.identity.imaging import Frame


def _empty_room(shape: tuple[int, ...]) -> Frame:
    rng = np.random.default_rng(0)
    wall = np.full(shape, (168, 176, 182), np.uint8)
    return np.clip(wall + rng.normal(0, 3, shape), 0, 255).astype(np.uint8)


def test_r13_second_face_absence_and_face_change_are_marked_on_the_timeline(
    service: IdentityService, selfie: Callable[[str], Frame]
) -> None:
    customer, other = selfie("obama.jpg"), selfie("astronaut.png")
    intruder = cv2.resize(other, (160, 213))
    rng = np.random.default_rng(1)
    script = (
        [customer] * 6  # 0–5 s alone
        + [synth.paste(customer, intruder, (0, 0), 213)] * 5  # 6–10 s someone joins
        + [_empty_room(customer.shape)] * 4  # 11–14 s nobody
        + [customer] * 5  # 15–19 s back
        + [other] * 4  # 20–23 s another person sits in
        + [customer] * 4  # 24–27 s back
    )
    monitor = service.presence_monitor(customer)
    live_marks = []
    for second, frame in enumerate(script):
        # The call hub delivers ~15 fps; the monitor keeps one frame a second.
        for k in range(3):
            live_marks += monitor.add_frame(second + k / 15, synth.jitter(frame, rng))
    report = monitor.finish(end_t=len(script))
    # The costly face comparison ran when something changed (first face, second face,
    # nobody → someone, another person), not on every one of the 28 samples.
    assert monitor.identity_checks <= 8, monitor.identity_checks

    marks = [(m.type, m.at_s) for m in report.marks]
    assert marks == [
        ("second_face_appeared", 6.0),
        ("customer_left", 11.0),
        ("second_face_gone", 11.0),
        ("customer_returned", 15.0),
        ("face_changed", 20.0),
        ("face_restored", 24.0),
    ]
    assert [m.type for m in live_marks] == [m[0] for m in marks]  # emitted as they happen
    assert report.samples == len(script)
    assert report.max_faces == 2
    assert abs(report.in_view_share - 20 / 28) < 1e-3  # obama in view 20 s of 28
    assert not report.passed and report.reason_code == "face_changed"
    assert all(m.message for m in report.marks)


def test_r13_customer_in_view_all_call_passes(
    service: IdentityService, selfie: Callable[[str], Frame]
) -> None:
    customer = selfie("obama2.jpg")
    monitor = service.presence_monitor(selfie("obama.jpg"))  # reference from another photo
    rng = np.random.default_rng(2)
    for second in range(8):
        monitor.add_frame(float(second), synth.jitter(customer, rng))
    report = monitor.finish(end_t=8.0)
    assert monitor.identity_checks <= 3  # the first sample and the periodic re-check
    assert report.passed, report
    assert report.marks == [] and report.in_view_share == 1.0
