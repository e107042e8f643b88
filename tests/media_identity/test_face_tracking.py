"""Face tracking within a liveness run (issue 15 item 3, media/identity/landmarks.py): the face is
looked for near its place in the previous frame instead of by a full-frame detection on every
frame. It must see what a full scan sees: the same landmarks, a second face within
``rescan_every`` frames, a face that jumped elsewhere (found again on a small copy), and no face
when there is none. (That every attack is still refused: test_liveness_attacks.py and
test_identity_liveness.py, which run through the tracking LivenessRun.)"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from media.identity.imaging import Frame
from media.identity.landmarks import Dlib68Landmarker, FaceTrack
from testing import identity_material as synth
from testing.face_photos import load_sample

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def landmarker() -> Dlib68Landmarker:
    return Dlib68Landmarker(480, rescan_every=5, reacquire_width=320)


@pytest.fixture(scope="module")
def selfie(landmarker: Dlib68Landmarker) -> Frame:
    from media.identity.service import IdentityService

    photo = load_sample("obama.jpg")
    box = IdentityService().matcher.detect(photo)[0]
    return synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))


def test_tracked_frames_give_the_full_scans_landmarks(
        landmarker: Dlib68Landmarker, selfie: Frame) -> None:
    """The detector's box differs a little between a crop and the whole frame (its grid), and
    the 68 landmarks with it, by as much as from one jittered frame to the next (measured on
    obama, biden, t1: medians of yaw, EAR within 0.01, the same spread): what the actions are
    measured against (the baseline's medians) does not move."""
    clip = [f for _, f in synth.still_clip(selfie, 2.0, fps=10, seed=3)]
    track = FaceTrack()
    tracked_m, full_m = [], []
    for frame in clip:
        tracked = landmarker.observe(frame, track)
        full = landmarker.observe(frame)
        assert tracked.faces == full.faces == 1
        assert tracked.landmarks is not None and full.landmarks is not None
        # The same face found: landmarks within a few pixels (a 216 px face).
        assert float(np.abs(tracked.landmarks - full.landmarks).mean()) < 3.0
        tracked_m.append((tracked.yaw, tracked.ear, tracked.mar))
        full_m.append((full.yaw, full.ear, full.mar))
    t, f = np.array(tracked_m), np.array(full_m)
    assert np.abs(np.median(t, axis=0) - np.median(f, axis=0)).max() < 0.015
    assert (t.std(axis=0) <= 1.5 * f.std(axis=0) + 0.005).all(), (t.std(axis=0), f.std(axis=0))
    # A full scan on the first frame and every 5th after it; the rest tracked.
    assert (track.scans, track.tracked, track.reacquired) == (4, 16, 0)


def test_a_second_face_is_counted_within_the_rescan_period(
        landmarker: Dlib68Landmarker, selfie: Frame) -> None:
    from media.identity.service import IdentityService

    photo = load_sample("astronaut.png")
    box = IdentityService().matcher.detect(photo)[0]
    other = cv2.resize(synth.selfie_frame(photo, (box.x, box.y, box.w, box.h)), (160, 213))
    clip = [f for _, f in synth.still_clip(selfie, 1.5, fps=10, seed=4)]
    track = FaceTrack()
    counts = []
    for i, frame in enumerate(clip):
        if i >= 3:  # someone comes into view in a corner, far from the tracked face
            frame = synth.paste(frame, other, (0, 0), 213)
        counts.append(landmarker.observe(frame, track).faces)
    assert counts[:3] == [1, 1, 1]
    first_two = counts.index(2)
    assert 3 <= first_two <= 3 + 4, counts  # by the next full scan at the latest
    assert all(c == 2 for c in counts[first_two:]), counts  # and kept until the next scan


def test_a_face_that_jumped_is_found_again_and_no_face_is_no_face(
        landmarker: Dlib68Landmarker, selfie: Frame) -> None:
    full = landmarker.observe(selfie)
    assert full.box is not None
    x, y, w, h = full.box
    face = selfie[max(y - 20, 0):y + h + 20, max(x - 20, 0):x + w + 20]

    def placed(at: tuple[int, int]) -> Frame:
        canvas = np.full_like(selfie, 128)
        canvas[at[1]:at[1] + face.shape[0], at[0]:at[0] + face.shape[1]] = face
        return canvas

    track = FaceTrack()
    assert landmarker.observe(placed((0, 0)), track).faces == 1
    # The phone moved: the face is now in the opposite corner, away from where it was.
    corner = (selfie.shape[1] - face.shape[1], selfie.shape[0] - face.shape[0])
    obs = landmarker.observe(placed(corner), track)
    assert obs.faces == 1 and track.reacquired == 1 and track.scans == 2
    assert obs.box is not None and abs(obs.box[0] - (corner[0] + 20)) < 25
    # Nothing there: no face (a full scan confirms it), and the track is dropped.
    blank = np.full_like(selfie, 128)
    assert landmarker.observe(blank, track).faces == 0
    assert track.box is None
    assert landmarker.observe(selfie, track).faces == 1
