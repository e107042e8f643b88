"""Benchmark of the presence monitor (R-13, issue 16 item 2): CPU per sample and how late a change
is marked.

The customer's camera is made from real face photos (testing.face_photos): a phone framing
(480×640) of obama.jpg, the reference being the live face of another photo (obama2.jpg), as in
the tests. Every sampled picture goes through a VP8 key-frame round trip (libvpx at
``--video-kbps``), as the call hub's samples do, after camera shake and sensor noise
(``synthetic.jitter``) and, on the steady call, a slow sway of the whole picture (the customer
shifting on the chair: ``--sway-px`` peak, one period every 9 s).

Sections:

- ``steady``: ``--seconds`` samples (1 a second) of the customer alone. CPU-s per sample is the
  process CPU time (all threads, ``time.process_time``) spent in ``PresenceMonitor.add_frame``,
  mean and p95, plus how many samples ran the face detector and the face embedding. The run is
  pinned to one core with one thread per library, as the presence process is one process.
- ``events``: a scripted call (alone, a second person sits down, nobody, back, another person,
  back, the customer drifts out of the picture, back); for each change, the mark's ``at_s``
  minus the change's time and the time the mark was emitted (the sample that confirmed it)
  minus the change's time, and whether the marks are the expected ones. Changes happen between
  samples (at x.5 s) so the numbers include the sampling phase.
- ``host``: the steady call through ``PresenceHost`` (the child process the call hub uses):
  the child's CPU per sample (from /proc, 10 ms ticks) and the parent's CPU to hand a frame over.

    python -m bench.presence [--seconds 120] [--video-kbps 800] [--sway-px 6] [--json out.json]
                             [--baseline-commit REV]

``--baseline-commit`` also runs ``steady`` and ``events`` with that commit's
media/identity/presence.py (loaded from git, same engine, same frames), for a before/after.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from collections.abc import Callable  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402

from media.identity import IdentityService  # noqa: E402
from media.identity.imaging import Frame, encode_jpeg  # noqa: E402
from media.identity.presence import PresenceMonitor  # noqa: E402
from media.identity.presence_host import PresenceHost  # noqa: E402
from testing import identity_material as synth  # noqa: E402
from testing.face_photos import load_sample  # noqa: E402


def _selfie(service: IdentityService, name: str) -> Frame:
    photo = load_sample(name)
    box = service.matcher.detect(photo)[0]
    return synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))


def _empty_room(shape: tuple[int, ...]) -> Frame:
    rng = np.random.default_rng(0)
    wall = np.full(shape, (168, 176, 182), np.uint8)
    return np.clip(wall + rng.normal(0, 3, shape), 0, 255).astype(np.uint8)


class Vp8RoundTrip:
    """Encode a picture as a VP8 key frame and decode it back (what the hub's sampler gets)."""

    def __init__(self, kbps: int) -> None:
        self.kbps = kbps

    def __call__(self, image: Frame) -> Frame:
        h, w = image.shape[:2]
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.bit_rate = self.kbps * 1000
        enc.time_base = Fraction(1, 15)
        frame = av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="yuv420p")
        frame.pts = 0
        packets = list(enc.encode(frame)) + list(enc.encode(None))
        dec = av.CodecContext.create("vp8", "r")
        out = [f for p in packets for f in dec.decode(p)]
        return out[0].to_ndarray(format="bgr24")


def _shift(image: Frame, dx: float, dy: float) -> Frame:
    m = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]),
                          borderMode=cv2.BORDER_REPLICATE)


def steady_frames(customer: Frame, seconds: int, sway_px: float, vp8: Vp8RoundTrip,
                  seed: int = 7) -> list[Frame]:
    rng = np.random.default_rng(seed)
    out = []
    for t in range(seconds):
        swayed = _shift(customer, sway_px * np.sin(2 * np.pi * t / 9.0),
                        0.5 * sway_px * np.sin(2 * np.pi * t / 13.0))
        out.append(vp8(synth.jitter(swayed, rng)))
    return out


def _monitor_counts(monitor: PresenceMonitor) -> dict[str, Any]:
    return {
        "identity_checks": monitor.identity_checks,
        "detections": getattr(monitor, "detections", None),
    }


Factory = Callable[[Frame], PresenceMonitor]
REPO = Path(__file__).resolve().parents[1]


def baseline_factory(service: IdentityService, commit: str) -> Factory:
    """PresenceMonitor as ``commit`` had it, on this checkout's engine."""
    source = subprocess.run(
        ["git", "show", f"{commit}:media/identity/presence.py"],
        cwd=REPO, check=True, capture_output=True, text=True,
    ).stdout
    module = types.ModuleType("presence_baseline")
    sys.modules[module.__name__] = module  # dataclasses look their module up
    exec(compile(source, f"{commit[:10]}:media/identity/presence.py", "exec"),  # noqa: S102
         module.__dict__)
    cls = module.PresenceMonitor
    return lambda reference: cls.from_reference_image(  # type: ignore[no-any-return]
        service.matcher, reference, service.config.presence)


def run_steady(new: Factory, reference: Frame, frames: list[Frame]) -> dict[str, Any]:
    monitor = new(reference)
    cpu: list[float] = []
    marks = []
    for t, frame in enumerate(frames):
        started = time.process_time()
        marks += monitor.add_frame(float(t), frame)
        cpu.append(time.process_time() - started)
    report = monitor.finish(end_t=float(len(frames)))
    return {
        "samples": len(frames),
        "cpu_s_per_sample_mean": round(statistics.fmean(cpu), 4),
        "cpu_s_per_sample_median": round(statistics.median(cpu), 4),
        "cpu_s_per_sample_p95": round(float(np.percentile(cpu, 95)), 4),
        "cpu_s_first_sample": round(cpu[0], 4),
        "cpu_s_per_sample_mean_after_first": round(statistics.fmean(cpu[1:]), 4),
        **_monitor_counts(monitor),
        "marks": [(m.type, m.at_s) for m in marks],
        "passed": report.passed,
        "in_view_share": report.in_view_share,
    }


# The scripted call: (scene, seconds). Scenes change at x.5 s, between two samples.
SCRIPT = [
    ("customer", 8.5), ("crowded", 6), ("empty", 6), ("customer", 6), ("other", 6),
    ("customer", 6), ("drift_out", 6), ("customer", 6.5),
]
EXPECTED = [
    ("second_face_appeared", 8.5), ("second_face_gone", 14.5), ("customer_left", 14.5),
    ("customer_returned", 20.5), ("face_changed", 26.5), ("face_restored", 32.5),
    ("customer_left", 38.5), ("customer_returned", 44.5),
]


def run_events(new: Factory, reference: Frame, scenes: dict[str, Frame],
               vp8: Vp8RoundTrip) -> dict[str, Any]:
    rng = np.random.default_rng(11)
    timeline: list[tuple[float, float, str]] = []
    at = 0.0
    for scene, length in SCRIPT:
        timeline.append((at, at + length, scene))
        at += length
    end = at
    monitor = new(reference)
    emitted: list[tuple[str, float, float]] = []  # (type, at_s, emitted at sample t)
    cpu: list[float] = []
    for t in range(int(end)):
        scene = next(s for a, b, s in timeline if a <= t < b)
        if scene == "drift_out":  # the customer slides out of the picture sideways over 2 s
            since = t - next(a for a, _, s in timeline if s == "drift_out")
            frame = _shift(scenes["customer"], -min(1.0, (since + 0.5) / 2.0) * 480, 0)
        else:
            frame = scenes[scene]
        frame = vp8(synth.jitter(frame, rng))
        started = time.process_time()
        for m in monitor.add_frame(float(t), frame):
            emitted.append((m.type, m.at_s, float(t)))
        cpu.append(time.process_time() - started)
    # Each expected change against the first mark of that type at or after it.
    rows: list[dict[str, Any]] = []
    used: set[int] = set()
    for kind, changed_at in EXPECTED:
        hit = next((i for i, (k, a, _) in enumerate(emitted)
                    if k == kind and i not in used and a >= changed_at - 1.0), None)
        if hit is None:
            rows.append({"mark": kind, "changed_at": changed_at, "missing": True})
            continue
        used.add(hit)
        _, at_s, when = emitted[hit]
        rows.append({"mark": kind, "changed_at": changed_at, "at_s": at_s,
                     "at_s_late_s": round(at_s - changed_at, 3),
                     "emitted_late_s": round(when - changed_at, 3)})
    extra = [emitted[i][:2] for i in range(len(emitted)) if i not in used]
    return {
        "samples": int(end),
        "marks_as_expected": not extra and all("missing" not in r for r in rows),
        "changes": rows,
        "unexpected_marks": extra,
        "cpu_s_per_sample_mean": round(statistics.fmean(cpu), 4),
        "max_emitted_late_s": max((r.get("emitted_late_s", 99) for r in rows), default=None),
        **_monitor_counts(monitor),
    }


def run_host(reference: Frame, frames: list[Frame]) -> dict[str, Any]:
    host = PresenceHost()
    try:
        host.open("bench", encode_jpeg(reference, 92))
        assert host._process is not None
        child = psutil.Process(host._process.pid)
        host.add_frame("bench", 0.0, frames[0])  # the first sample (the first embedding)
        c0, p0 = child.cpu_times(), time.process_time()
        for t, frame in enumerate(frames[1:], start=1):
            host.add_frame("bench", float(t), frame)
        c1, p1 = child.cpu_times(), time.process_time()
        host.finish("bench")
    finally:
        host.shutdown()
    n = len(frames) - 1
    return {
        "samples": n,
        "child_cpu_s_per_sample": round((c1.user + c1.system - c0.user - c0.system) / n, 4),
        "parent_cpu_s_per_sample": round((p1 - p0) / n, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--video-kbps", type=int, default=800)
    parser.add_argument("--sway-px", type=float, default=6.0)
    parser.add_argument("--only", choices=("steady", "events", "host"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--baseline-commit")
    args = parser.parse_args()

    service = IdentityService()
    customer, other = _selfie(service, "obama.jpg"), _selfie(service, "astronaut.png")
    reference = _selfie(service, "obama2.jpg")
    scenes = {
        "customer": customer,
        "other": other,
        "crowded": synth.paste(customer, cv2.resize(other, (160, 213)), (0, 0), 213),
        "empty": _empty_room(customer.shape),
    }
    vp8 = Vp8RoundTrip(args.video_kbps)
    out: dict[str, Any] = {
        "load_average": os.getloadavg(),
        "engine": service.matcher.info.name,
        "video_kbps": args.video_kbps,
        "sway_px": args.sway_px,
    }
    frames = steady_frames(customer, args.seconds, args.sway_px, vp8)
    runs: list[tuple[str, Factory]] = [("", service.presence_monitor)]
    if args.baseline_commit:
        runs.insert(0, ("baseline_", baseline_factory(service, args.baseline_commit)))
        out["baseline_commit"] = args.baseline_commit
    for prefix, factory in runs:
        if args.only in (None, "steady"):
            out[prefix + "steady"] = run_steady(factory, reference, frames)
            print(prefix + "steady", json.dumps(out[prefix + "steady"]), flush=True)
        if args.only in (None, "events"):
            out[prefix + "events"] = run_events(factory, reference, scenes, vp8)
            print(prefix + "events", json.dumps(out[prefix + "events"]), flush=True)
    if args.only in (None, "host"):
        out["host"] = run_host(reference, frames)
        print("host", json.dumps(out["host"]), flush=True)
    out["load_average_after"] = os.getloadavg()
    print(json.dumps({k: out[k] for k in ("load_average", "load_average_after", "engine")}))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
