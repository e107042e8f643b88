"""Benchmark of the identity engines on one CPU core (R-12, R-13).

Prints median and p95 latency of ID-card OCR (per card side), face match (ID portrait against a
live photo) and liveness (per frame), the accuracy on a generated card set, and the cosine
distances behind the face-match threshold (docs/identity.md quotes a run of this script).

    python bench/identity.py [--cards 40] [--ocr paddleocr|rapidocr] [--json out.json]
"""

from __future__ import annotations

import os

# One core, one thread per library: must be set before numpy/onnxruntime/dlib are imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import argparse  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import date  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from media.identity import (  # noqa: E402
    Challenge,
    ChallengePlan,
    ExpectedHolder,
    IdentityConfig,
    IdentityService,
)
from media.identity import synthetic as synth  # noqa: E402
from media.identity.config import OcrConfig  # noqa: E402
from media.identity.face import cosine_distance  # noqa: E402
from media.identity.imaging import as_frame, encode_jpeg  # noqa: E402
from media.identity.testdata import IDENTITIES, load_sample  # noqa: E402

TODAY = date(2026, 6, 1)
FIELDS = ("name", "sex", "ethnicity", "birth_date", "address", "id_number")
DEGRADATIONS = {
    "clean": synth.Degradation(),
    "tilt": synth.Degradation(rotate_deg=9),
    "tilt_noise": synth.Degradation(rotate_deg=-13, noise_sigma=8),
    "jpeg_q25": synth.Degradation(jpeg_quality=25),
    "small_noisy_jpeg": synth.Degradation(rotate_deg=4, noise_sigma=6, jpeg_quality=35, scale=0.7),
    "upside_down": synth.Degradation(rotate_deg=180),
    "blur_1px": synth.Degradation(blur_sigma=1.0),
}


def stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
    }


def bench_ocr(service: IdentityService, n_cards: int) -> dict[str, Any]:
    rng = random.Random(2026)
    side_times: list[float] = []
    field_hits = dict.fromkeys(FIELDS, 0)
    exact = back_exact = decisions_right = valid_cards = 0
    per_degradation: dict[str, list[int]] = {k: [0, 0] for k in DEGRADATIONS}
    for i in range(n_cards):
        kind = ("valid", "valid", "valid", "bad_check_digit", "expired")[i % 5]
        card = synth.random_identity(
            rng,
            today=TODAY,
            valid_check_digit=kind != "bad_check_digit",
            expired=kind == "expired",
        )
        name = list(DEGRADATIONS)[i % len(DEGRADATIONS)]
        how = DEGRADATIONS[name]
        how = synth.Degradation(**{**how.__dict__, "seed": i})
        front = encode_jpeg(synth.photograph(synth.draw_front(card), how), 92)
        back = encode_jpeg(synth.photograph(synth.draw_back(card), how), 92)
        t0 = time.perf_counter()
        front_read = service.read_card_side(front, "front")
        t1 = time.perf_counter()
        back_read = service.read_card_side(back, "back")
        t2 = time.perf_counter()
        side_times += [t1 - t0, t2 - t1]
        result = service.verify_card(
            front_read, back_read, ExpectedHolder(name=card.name, id_number=card.id_number), TODAY
        )
        f = front_read.front
        got = {k: getattr(f, k) if f else None for k in FIELDS}
        want = {k: getattr(card, k) for k in FIELDS}
        hits = {k: got[k] == want[k] for k in FIELDS}
        for k, ok in hits.items():
            field_hits[k] += ok
        exact += all(hits.values())
        per_degradation[name][0] += all(hits.values())
        per_degradation[name][1] += 1
        b = back_read.back
        back_exact += bool(
            b
            and b.issuing_authority == card.issuing_authority
            and b.valid_from == card.valid_from
            and b.valid_until == card.valid_until
        )
        valid_cards += kind == "valid"
        decisions_right += result.passed == (kind == "valid")
    return {
        "engine": service.ocr.info.model_dump(),
        "latency_per_side": stats(side_times),
        "cards": n_cards,
        "front_all_fields_exact": round(exact / n_cards, 3),
        "back_all_fields_exact": round(back_exact / n_cards, 3),
        "field_accuracy": {k: round(v / n_cards, 3) for k, v in field_hits.items()},
        "by_degradation_exact": {k: f"{v[0]}/{v[1]}" for k, v in per_degradation.items()},
        "accept_reject_decision_accuracy": round(decisions_right / n_cards, 3),
        "valid_cards": valid_cards,
    }


def bench_faces(service: IdentityService) -> dict[str, Any]:
    photos = {n: load_sample(n) for n in (*IDENTITIES, "t1.jpg")}
    matcher = service.matcher
    embeddings: dict[str, np.ndarray] = {}
    embed_times: list[float] = []
    for name, img in photos.items():
        t0 = time.perf_counter()
        faces = matcher.embed(img)
        embed_times.append(time.perf_counter() - t0)
        if name == "t1.jpg":
            for k, face in enumerate(faces):
                embeddings[f"t1.jpg#{k}"] = face.vector
        else:
            embeddings[name] = faces[0].vector
    portraits: dict[str, bytes] = {}
    for name in IDENTITIES:
        box = matcher.detect(photos[name])[0]
        card = synth.draw_front(
            synth.random_identity(random.Random(name), today=TODAY),
            synth.crop_portrait(photos[name], (box.x, box.y, box.w, box.h)),
        )
        shot = synth.photograph(
            card, synth.Degradation(rotate_deg=5, noise_sigma=5, jpeg_quality=50)
        )
        read = service.read_card_side(encode_jpeg(shot), "front")
        assert read.portrait_jpeg is not None, name
        portraits[name] = read.portrait_jpeg
        embeddings[f"card:{name}"] = matcher.embed(as_frame(read.portrait_jpeg))[0].vector

    def who(key: str) -> str:
        base = key.removeprefix("card:")
        return IDENTITIES.get(base, base)

    same: list[tuple[float, str, str]] = []
    different: list[tuple[float, str, str]] = []
    for a, b in itertools.combinations(sorted(embeddings), 2):
        if a.removeprefix("card:") == b.removeprefix("card:"):
            continue  # a card printed from a photo against that same photo proves little
        d = round(cosine_distance(embeddings[a], embeddings[b]), 4)
        (same if who(a) == who(b) else different).append((d, a, b))
    match_times = []
    for _ in range(3):
        for live in ("obama2.jpg", "obama3.jpg", "biden.jpg"):
            t0 = time.perf_counter()
            service.match_face(portraits["obama.jpg"], photos[live])
            match_times.append(time.perf_counter() - t0)
    threshold = service.config.face.threshold
    return {
        "engine": matcher.info.model_dump(),
        "embed_one_photo": stats(embed_times),
        "match_portrait_vs_live": stats(match_times),
        "threshold": threshold,
        "same_person_distances": sorted(same),
        "different_person_min5": sorted(different)[:5],
        "different_pairs": len(different),
        "false_rejects": sum(d > threshold for d, *_ in same),
        "false_accepts": sum(d <= threshold for d, *_ in different),
    }


def bench_liveness(service: IdentityService) -> dict[str, Any]:
    photo = load_sample("obama.jpg")
    box = service.matcher.detect(photo)[0]
    base = synth.selfie_frame(photo, (box.x, box.y, box.w, box.h))
    obs = service.landmarker.observe(base)
    assert obs.landmarks is not None
    pts = (
        obs.landmarks
        * base.shape[1]
        / min(base.shape[1], service.config.liveness.analysis_width_px)
    )
    actions = ["blink", "turn_left", "open_mouth"]
    clip = synth.performing_clip(base, pts, actions, seed=1)
    plan = ChallengePlan(challenges=[Challenge(a) for a in actions], time_limit_s=6.0)
    per_frame: list[float] = []
    results = []
    for _ in range(3):
        run = service.start_liveness(plan)
        for t, frame in clip:
            t0 = time.perf_counter()
            finished = run.add_frame(t, frame).finished
            per_frame.append(time.perf_counter() - t0)
            if finished:
                break  # frames after the last challenge are not analysed: do not count them
        results.append(run.finish())
    landmark_only = []
    for _, frame in clip:
        t0 = time.perf_counter()
        service.landmarker.observe(frame)
        landmark_only.append(time.perf_counter() - t0)
    return {
        "engine": results[0].engine.model_dump(),
        "per_frame_including_identity_keyframes": stats(per_frame),
        "per_frame_landmarks_only": stats(landmark_only),
        "frames_per_run": len(clip),
        "passed": all(r.passed for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=35)
    parser.add_argument("--ocr", choices=("paddleocr", "rapidocr"), default="paddleocr")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = IdentityConfig(ocr=OcrConfig(engine=args.ocr, threads=1))
    service = IdentityService(config)
    t0 = time.perf_counter()
    service.warm_up()
    report: dict[str, Any] = {"warm_up_s": round(time.perf_counter() - t0, 2)}
    report["cpu_affinity"] = (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    )
    report["ocr"] = bench_ocr(service, args.cards)
    report["face"] = bench_faces(service)
    report["liveness"] = bench_liveness(service)
    text = json.dumps(report, ensure_ascii=False, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
