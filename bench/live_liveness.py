"""What a live liveness challenge costs the server (issue 15 item 1, media/call/live_liveness.py).

1. Decoding: every frame from one requested key frame on, or a key frame requested for every
   judged frame? A 480×640 face clip (camera shake and noise, a blink) is encoded with libvpx
   realtime twice: key frames only when asked (one at the start, as a browser does) and every
   frame a key frame (what dense PLIs would make the phone send). Per frame: encoded bytes and
   CPU to decode (+ conversion to BGR).
2. Judging: CPU per frame of ``LivenessRun.prime`` / ``add_frame`` (dlib landmarks, the
   appearance checks, the same-face embedding every 1.5 s) on the same frames.
3. Face tracking (media/identity/landmarks.py): the judge's CPU per frame over a whole
   challenge window (a turn that never comes: every frame judged, ``--rounds`` passes over the
   clip) with a full-frame detection on every frame (``track_rescan_every=1``, as before) and
   with the face tracked from frame to frame (the default, a full scan every 5th frame), and
   the landmark step alone; both runs must see the same faces.

    .venv/bin/python bench/live_liveness.py [--seconds 4] [--rounds 2]

CPU times are thread/process CPU, so other load on the machine inflates them less than wall
time; say the load average with the figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from fractions import Fraction

import av
import numpy as np

from media.identity.config import IdentityConfig, LivenessConfig
from media.identity.landmarks import Dlib68Landmarker, FaceTrack
from media.identity.liveness import LivenessRun
from media.identity.results import Challenge, ChallengePlan
from media.identity.service import IdentityService
from testing import identity_material as synth
from testing.face_photos import load_sample

FPS = 15


def frames(service: IdentityService, seconds: float) -> list[np.ndarray]:
    photo = load_sample("obama.jpg")
    box = service.matcher.detect(photo)[0]
    base = synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))
    obs = service.landmarker.observe(base)
    assert obs.landmarks is not None
    pts = obs.landmarks * (base.shape[1] / min(base.shape[1], 480))
    clip = synth.performing_clip(base, pts, ["blink"], fps=FPS, seed=1, lead_in_s=1.0,
                                 pause_s=max(seconds - 1.2, 0.5))
    return [f for _, f in clip]


def encode(pictures: list[np.ndarray], gop: int) -> list[bytes]:
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = pictures[0].shape[1], pictures[0].shape[0]
    codec.pix_fmt, codec.time_base = "yuv420p", Fraction(1, FPS)
    codec.bit_rate = 600_000 if gop > 1 else 3_000_000
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    for i, picture in enumerate(pictures):
        frame = av.VideoFrame.from_ndarray(picture, format="bgr24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in codec.encode(frame)]
    out += [bytes(p) for p in codec.encode(None)]
    return out


def decode_cost(packets: list[bytes]) -> list[float]:
    decoder = av.CodecContext.create("vp8", "r")
    decoder.thread_count = 1
    costs = []
    for data in packets:
        t0 = time.thread_time()
        for picture in decoder.decode(av.Packet(data)):
            picture.to_ndarray(format="bgr24")
        costs.append(time.thread_time() - t0)
    return costs


def tracking_cost(service: IdentityService, pictures: list[np.ndarray], rescan_every: int,
                  rounds: int) -> tuple[list[float], list[float], FaceTrack, int]:
    """CPU per judged frame (``add_frame``) over a challenge that never completes, CPU per
    ``observe`` alone, the run's track and the frames that showed exactly one face."""
    cfg = service.config.liveness
    landmarker = Dlib68Landmarker(cfg.analysis_width_px, rescan_every,
                                  cfg.track_reacquire_width_px)
    run = LivenessRun(plan=ChallengePlan(challenges=[Challenge.TURN_LEFT], time_limit_s=1e6),
                      landmarker=landmarker, config=cfg, matcher=service.matcher)
    for picture in pictures[:8]:
        run.prime(picture)
    judged = []
    for i, picture in enumerate(pictures * rounds):
        t0 = time.process_time()
        run.add_frame(i / FPS, picture)
        judged.append(time.process_time() - t0)
    alone, track, one_face = [], FaceTrack(), 0
    for picture in pictures * rounds:
        t0 = time.process_time()
        obs = landmarker.observe(picture, track)
        alone.append(time.process_time() - t0)
        one_face += obs.faces == 1
    return judged, alone, track, one_face


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    service = IdentityService(IdentityConfig(
        liveness=LivenessConfig(challenges=(Challenge.BLINK,))))
    pictures = frames(service, args.seconds)
    print(f"{len(pictures)} frames 480x640 @ {FPS} fps; load average "
          f"{os.getloadavg()[0]:.1f}")
    for name, gop in (("key frame once, then inter frames", 10_000),
                      ("a key frame every frame (dense PLIs)", 1)):
        packets = encode(pictures, gop)
        costs = decode_cost(packets)
        print(f"{name}: {statistics.mean(len(p) for p in packets) / 1000:.1f} kB/frame "
              f"({sum(len(p) for p in packets) * 8 / 1000 / (len(packets) / FPS):.0f} kbit/s), "
              f"decode+BGR {statistics.mean(costs) * 1000:.2f} ms CPU/frame "
              f"(first frame {costs[0] * 1000:.2f} ms)")
    run = service.start_liveness(ChallengePlan(challenges=[Challenge.BLINK], time_limit_s=6))
    service.matcher.embed(pictures[0])  # engines warm
    prime, judge = [], []
    for picture in pictures[:8]:
        t0 = time.process_time()
        run.prime(picture)
        prime.append(time.process_time() - t0)
    for i, picture in enumerate(pictures[8:]):
        t0 = time.process_time()
        finished = run.add_frame(i / FPS, picture).finished
        judge.append(time.process_time() - t0)
        if finished:
            break
    result = run.finish()
    print(f"judge: prime {statistics.mean(prime) * 1000:.0f} ms CPU/frame, add_frame "
          f"{statistics.mean(judge) * 1000:.0f} ms CPU/frame (median "
          f"{statistics.median(judge) * 1000:.0f}, max {max(judge) * 1000:.0f}); "
          f"blink {'passed' if result.passed else 'failed'} after {len(judge)} frames")
    per_check = (sum(prime) + sum(judge))
    print(f"one blink challenge as judged here: {per_check:.2f} CPU-s for the judge "
          f"({len(prime)} baseline + {len(judge)} judged frames)")
    for name, every in (("full detection every frame", 1),
                        ("face tracked, full scan every 5th frame", 5)):
        judged, alone, track, one_face = tracking_cost(service, pictures, every, args.rounds)
        print(f"{name}: add_frame {statistics.mean(judged) * 1000:.1f} ms CPU/frame (median "
              f"{statistics.median(judged) * 1000:.1f}) over {len(judged)} frames; landmarks "
              f"alone {statistics.mean(alone) * 1000:.1f} ms (median "
              f"{statistics.median(alone) * 1000:.1f}); {one_face}/{len(alone)} frames one "
              f"face; tracked {track.tracked}, full scans {track.scans}, "
              f"re-acquired {track.reacquired}; load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
