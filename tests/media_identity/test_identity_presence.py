"""R-13: presence during the call: timeline marks and the share of time the customer is in view."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest

from media.identity import IdentityService
from media.identity.imaging import Frame
from testing import identity_material as synth


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
    # Between detections the face is followed by its template: the detector ran once.
    assert monitor.detections == 1, monitor.detections
    assert report.passed, report
    assert report.marks == [] and report.in_view_share == 1.0


def _face_of(service: IdentityService, frame: Frame, pad: float = 0.15) -> Frame:
    b = service.matcher.detect(frame)[0]
    px, py = int(b.w * pad), int(b.h * pad)
    return frame[max(0, b.y - py): b.y + b.h + py, max(0, b.x - px): b.x + b.w + px]


def test_r13_a_face_swapped_in_place_is_caught_while_the_customer_is_followed(
    service: IdentityService, selfie: Callable[[str], Frame]
) -> None:
    """Tracking follows the face between detections; another face put exactly where the
    customer's was (same place, same size) is still compared and marked at its first sample."""
    customer = selfie("obama.jpg")
    box = service.matcher.detect(customer)[0]
    px, py = int(box.w * 0.15), int(box.h * 0.15)
    swapped = customer.copy()
    swapped[box.y - py: box.y + box.h + py, box.x - px: box.x + box.w + px] = cv2.resize(
        _face_of(service, selfie("astronaut.png")), (box.w + 2 * px, box.h + 2 * py))
    rng = np.random.default_rng(3)
    monitor = service.presence_monitor(selfie("obama2.jpg"))
    for second in range(12):
        monitor.add_frame(float(second), synth.jitter(customer if second < 7 else swapped, rng))
    assert [(m.type, m.at_s) for m in monitor.marks] == [("face_changed", 7.0)]
    # The face changing slowly (a cross-fade over 12 s) is compared with the last check, not
    # the previous sample, so it is caught too.
    other = selfie("astronaut.png")
    monitor = service.presence_monitor(selfie("obama2.jpg"))
    for second in range(20):
        blend = min(1.0, max(0.0, (second - 4) / 12))
        frame = cv2.addWeighted(customer, 1 - blend, other, blend, 0)
        monitor.add_frame(float(second), synth.jitter(frame, rng))
    assert [m.type for m in monitor.marks] == ["face_changed"]


def test_r13_a_small_second_face_beside_or_behind_the_customer_is_seen_at_once(
    service: IdentityService, selfie: Callable[[str], Frame]
) -> None:
    """Between detections something that changes outside the customer's face makes the detector
    run: a second face of ~70 px (the smallest the detector finds) is counted at the first
    sample it is in, whether at the back or right beside the customer's head."""
    customer = selfie("obama.jpg")
    face = _face_of(service, selfie("astronaut.png"))
    rng = np.random.default_rng(4)
    for at in [(10, 10), (330, 20), (360, 300), (5, 330)]:  # (360, 300): by the right ear
        crowded = synth.paste(customer, face, at, 70)
        assert len(service.matcher.detect(crowded)) == 2  # the detector alone finds it
        monitor = service.presence_monitor(selfie("obama2.jpg"))
        for second in range(8):
            monitor.add_frame(float(second), synth.jitter(customer if second < 5 else crowded, rng))
        assert [(m.type, m.at_s) for m in monitor.marks] == [("second_face_appeared", 5.0)], at
        assert monitor.detections == 2, at  # the first sample and the one the face came in


def test_r13_a_better_reference_replaces_the_old_one_and_the_breaches_go_on(
    service: IdentityService, selfie: Callable[[str], Frame]
) -> None:
    """Issue 15: the live call's frame matched against the card portrait becomes the reference
    in the running monitor. Here the first reference is another person's face: the customer
    is "another face" until the reference is replaced, then the face is restored (the breach
    so far is kept and ended, not forgotten)."""
    customer, wrong = selfie("obama.jpg"), selfie("astronaut.png")
    monitor = service.presence_monitor(wrong)
    rng = np.random.default_rng(3)
    marks = []
    for second in range(4):
        marks += monitor.add_frame(float(second), synth.jitter(customer, rng))
    assert [m.type for m in marks] == ["face_changed"]
    monitor.replace_reference(selfie("obama2.jpg"))  # the same person, another picture
    for second in range(4, 8):
        marks += monitor.add_frame(float(second), synth.jitter(customer, rng))
    assert [(m.type, m.at_s) for m in marks] == [("face_changed", 0.0), ("face_restored", 4.0)]
    report = monitor.finish(end_t=8.0)
    assert report.samples == 8 and report.marks[-1].type == "face_restored"
    with pytest.raises(ValueError, match="no face"):
        monitor.replace_reference(_empty_room(customer.shape))
