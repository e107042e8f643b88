"""Benchmark of the identity engines on one CPU core (R-12, R-13).

Prints median and p95 latency of ID-card OCR (per card side), face match (ID portrait against a
live photo) and liveness (per frame), the accuracy on a generated card set, and the ROC of the
face match on the labelled package set (testing/labelled_faces.py) with the operating
point, against deepface-dlib and dlib used directly (docs/identity.md quotes a run).

    python bench/identity.py [--cards 40] [--ocr paddleocr|rapidocr] [--only face] [--json out.json]
    python bench/identity.py --orientations [--cards 12] [--baseline-commit REV]

``--orientations`` runs only the OCR orientation section (issue 15): every field at 0°, 90°,
180°, 270° and with EXIF orientation 6 and 8, time per card at 0° against the reader of
``--baseline-commit`` (its media/identity/idcard.py, loaded from git, timed on the same photos
in turn), the upload checks' time and refusals, and the screen-recapture warning's rate on
genuine cards and on simulated screen photos.
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
from media.identity.config import OcrConfig  # noqa: E402
from media.identity.imaging import as_frame, encode_jpeg  # noqa: E402
from testing import identity_material as synth  # noqa: E402
from testing.face_photos import load_sample  # noqa: E402

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


class DlibDirect:
    """dlib used as face_recognition does (the issue's baseline): HOG with one upsampling on the
    full-size image, 5-point landmarks, ``compute_face_descriptor`` (chip 150, padding 0.25),
    euclidean distance."""

    metric = "euclidean"

    def __init__(self) -> None:
        import dlib

        from media.identity.weights import (
            DLIB_LANDMARKS_5,
            DLIB_RECOGNITION,
            face_recognition_model,
        )

        self._detector = dlib.get_frontal_face_detector()
        self._sp = dlib.shape_predictor(str(face_recognition_model(DLIB_LANDMARKS_5)))
        self._rec = dlib.face_recognition_model_v1(str(face_recognition_model(DLIB_RECOGNITION)))

    def embed(self, image: np.ndarray) -> list[np.ndarray]:
        import cv2

        rgb = np.ascontiguousarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
        rects = self._detector(rgb, 1)
        return [
            np.asarray(self._rec.compute_face_descriptor(rgb, self._sp(rgb, r), 1))
            for r in sorted(rects, key=lambda r: r.area(), reverse=True)
        ]

    @staticmethod
    def distance(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))


def roc(
    scores: list[tuple[float | None, bool, bool, bool]], thresholds: list[float]
) -> list[dict[str, Any]]:
    """False-reject and false-accept rates per threshold; a pair whose face was not found counts
    as refused. ``scores``: (distance or None, genuine, cross_photo, card_vs_photo)."""
    genuine = [s for s in scores if s[1]]
    cross = [s for s in genuine if s[2]]
    card = [s for s in genuine if s[3]]
    impostor = [s for s in scores if not s[1]]

    def rejected(group: list[tuple[float | None, bool, bool, bool]], t: float) -> int:
        return sum(d is None or d > t for d, *_ in group)

    rows = []
    for t in thresholds:
        fr, fa = rejected(genuine, t), len(impostor) - rejected(impostor, t)
        rows.append({
            "threshold": round(t, 4),
            "frr": round(fr / max(len(genuine), 1), 4),
            "false_rejects": f"{fr}/{len(genuine)}",
            "frr_cross_photo": round(rejected(cross, t) / max(len(cross), 1), 4),
            "frr_card_vs_photo": round(rejected(card, t) / max(len(card), 1), 4),
            "far": round(fa / max(len(impostor), 1), 5),
            "false_accepts": f"{fa}/{len(impostor)}",
        })
    return rows


def operating_point(rows: list[dict[str, Any]], max_far: float) -> dict[str, Any]:
    """The lowest false-reject rate with false-accept <= max_far (the largest such threshold
    when several tie: the most tolerant of the captures the set does not have)."""
    allowed = [r for r in rows if r["far"] <= max_far]
    best = min(r["frr"] for r in allowed)
    tied = [r for r in allowed if r["frr"] == best]
    return tied[len(tied) // 2]


def bench_faces(service: IdentityService) -> dict[str, Any]:
    """The labelled package set (testing/labelled_faces.py) through three engines: the
    default dlib-chip (card portraits straightened), deepface-dlib (the engine before, on the
    OCR's own portrait crops) and dlib used directly (face_recognition style, same crops)."""
    from media.identity import idcard
    from media.identity.face import match_faces
    from media.identity.face.deepface_dlib import DeepFaceDlibMatcher
    from media.identity.face.dlib_chip import DlibChipMatcher
    from testing import labelled_faces as labelled

    chip = service.matcher
    assert isinstance(chip, DlibChipMatcher), "run with face.engine=dlib-chip (the default)"
    config = service.config
    deep = DeepFaceDlibMatcher(
        config.face.model_copy(update={"engine": "deepface-dlib", "threshold": None}),
        config.cache_dir,
    )
    direct = DlibDirect()
    faces = labelled.source_faces(lambda im: [(b.x, b.y, b.w, b.h) for b in chip.detect(im)])

    card_reads: dict[str, Any] = {}
    raw_portraits: dict[int, np.ndarray] = {}
    ocr_times: list[float] = []

    def read_raw(photo: np.ndarray) -> np.ndarray | None:
        t0 = time.perf_counter()
        read = idcard.read_card_side(service.ocr, photo, "front", config.card_quality)
        ocr_times.append(time.perf_counter() - t0)
        if read.portrait_jpeg is None:
            return None
        straight = service._straighten_portrait(photo, read)
        raw = as_frame(read.portrait_jpeg)
        out = as_frame(straight.portrait_jpeg) if straight.portrait_jpeg else raw
        raw_portraits[id(out)] = raw
        card_reads[str(len(card_reads))] = straight.portrait_straightened
        return out

    samples = list(labelled.captures(faces, read_raw, TODAY))
    n_cards = len(faces) * len(labelled.CARD_CONDITIONS)
    cards_read = sum(s.is_card for s in samples)
    pairs = labelled.pairs(samples)

    def embed_all(embed: Any, straightened: bool) -> dict[str, np.ndarray | None]:
        out: dict[str, np.ndarray | None] = {}
        for s in samples:
            img = s.image if straightened or not s.is_card else raw_portraits[id(s.image)]
            found = embed(img, s.is_card)  # a card portrait is always a match's reference
            out[s.key] = found[0] if found else None
        return out

    engines: dict[str, tuple[Any, Any, bool]] = {
        "dlib-chip, straightened portraits": (
            chip, lambda im, ref: [f.vector for f in chip.embed(im, main_face_only=ref)], True),
        "dlib-chip, OCR crop portraits": (
            chip, lambda im, ref: [f.vector for f in chip.embed(im, main_face_only=ref)], False),
        "deepface-dlib (before), OCR crop portraits": (
            deep, lambda im, ref: [f.vector for f in deep.embed(im)], False),
        "dlib direct (face_recognition style), OCR crop portraits": (
            direct, lambda im, ref: direct.embed(im), False),
    }
    grids = {
        "euclidean": [round(0.30 + 0.02 * i, 2) for i in range(21)],
        "cosine": [round(0.040 + 0.005 * i, 3) for i in range(17)],
    }
    results: dict[str, Any] = {}
    for label, (engine, embed, straightened) in engines.items():
        vectors = embed_all(embed, straightened)
        scores = []
        for p in pairs:
            va, vb = vectors[p.a.key], vectors[p.b.key]
            d = None if va is None or vb is None else engine.distance(va, vb)
            scores.append((d, p.genuine, p.cross_photo, p.card_vs_photo))
        rows = roc(scores, grids[engine.metric])
        default = {"euclidean": 0.6, "cosine": 0.075}[engine.metric]
        if engine is chip:
            default = chip.threshold
        at_default = roc(scores, [default])[0]
        results[label] = {
            "metric": engine.metric,
            "no_face_found": sorted(k for k, v in vectors.items() if v is None),
            "at_threshold": at_default,
            "operating_point_far_0.1%": operating_point(rows, 0.001),
            "roc": rows,
            "genuine_max": round(max((d for d, g, *_ in scores if g and d is not None)), 4),
            "impostor_min": round(min((d for d, g, *_ in scores if not g and d is not None)), 4),
        }

    # CPU per match (process time, one core): an ID portrait against a live frame, embedding
    # both, as match_faces does; the same 12 pairs for every engine.
    probes = [s for s in samples if s.condition == "plain"]
    refs = [s for s in samples if s.condition == "card_tilted"]
    timing_pairs = [(r, p) for r, p in itertools.product(refs, probes) if r.source != p.source]
    timing_pairs = timing_pairs[:: max(1, len(timing_pairs) // 12)][:12]
    cpu: dict[str, Any] = {}
    for label, (engine, embed, straightened) in engines.items():
        if "OCR crop" in label and engine is chip:
            continue
        times = []
        for ref, probe in timing_pairs:
            img = ref.image if straightened else raw_portraits[id(ref.image)]
            t0 = time.process_time()
            if engine is direct:
                ea, eb = embed(img, True), embed(probe.image, False)
                if ea and eb:
                    engine.distance(ea[0], eb[0])
            else:  # the library's own match: reference, probe, face counts, distance
                match_faces(engine, img, probe.image)
            times.append(time.process_time() - t0)
        cpu[label] = stats(times)
    base = cpu["dlib direct (face_recognition style), OCR crop portraits"]["median_ms"]
    for label in cpu:
        cpu[label]["ratio_to_dlib_direct"] = round(cpu[label]["median_ms"] / base, 2)

    kinds = {
        "genuine": sum(p.genuine for p in pairs),
        "genuine_cross_photo": sum(p.cross_photo for p in pairs),
        "genuine_card_vs_photo": sum(p.genuine and p.card_vs_photo for p in pairs),
        "impostor": sum(not p.genuine for p in pairs),
        "impostor_card_vs_photo": sum(not p.genuine and p.card_vs_photo for p in pairs),
    }
    return {
        "set": {
            "people": len({f.person for f in faces}),
            "source_faces": [f.key for f in faces],
            "captures": len(samples),
            "cards_read": f"{cards_read}/{n_cards}",
            "portraits_straightened": f"{sum(card_reads.values())}/{len(card_reads)}",
            "pairs": kinds,
        },
        "ocr_per_card": stats(ocr_times),
        "engines": results,
        "cpu_per_match": cpu,
        "match_engine": chip.info.model_dump(),
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


# ---------------------------------------------------------------- OCR at any orientation


def _baseline_reader(commit: str) -> Any:
    """``read_card_side`` as it was at ``commit`` (loaded from git into a scratch module)."""
    import importlib.util
    import subprocess
    import tempfile

    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{commit}:media/identity/idcard.py"], cwd=root,
                            check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "idcard_baseline.py"
    path.write_text(source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("idcard_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.read_card_side


def _exif_jpeg(upright: np.ndarray, orientation: int) -> bytes:
    import io

    import cv2
    from PIL import Image

    from media.identity.imaging import rotate_quarter

    stored = rotate_quarter(upright, 90 if orientation == 6 else 270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(cv2.cvtColor(stored, cv2.COLOR_BGR2RGB)).save(
        out, format="JPEG", quality=92, exif=exif)
    return out.getvalue()


def _screen_photo(photo: np.ndarray, seed: int, pitch: int, angle: float,
                  shrink: float) -> np.ndarray:
    """As tests/media_identity/test_identity_orientation.py: an RGB-stripe screen, photographed."""
    import cv2

    rng = np.random.default_rng(seed)
    big = cv2.resize(photo, None, fx=pitch, fy=pitch,
                     interpolation=cv2.INTER_NEAREST).astype(np.float32)
    h, w = big.shape[:2]
    grid = np.full((h, w, 3), 0.15, np.float32)
    for column, channel in enumerate((2, 1, 0)):
        grid[:, column::3, channel] = 1.0
    grid[2::3] *= 0.35
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    shown = cv2.warpAffine(big * grid * 1.6, turn, (w, h), borderMode=cv2.BORDER_REFLECT)
    shot = cv2.resize(shown, None, fx=1 / shrink, fy=1 / shrink, interpolation=cv2.INTER_LINEAR)
    shot = cv2.GaussianBlur(shot, (0, 0), 0.5) + rng.normal(0, 3, shot.shape)
    return np.clip(shot, 0, 255).astype(np.uint8)


def bench_orientations(service: IdentityService, n_cards: int,
                       baseline_commit: str | None) -> dict[str, Any]:
    from media.identity.idcard import check_card_photo
    from media.identity.imaging import rotate_quarter
    from workflow.evidence import clean_image

    rng = random.Random(1515)
    old_read = _baseline_reader(baseline_commit) if baseline_commit else None
    face_photo = load_sample("obama.jpg")
    box = service.matcher.detect(face_photo)[0]
    portrait = synth.crop_portrait(face_photo, (box.x, box.y, box.w, box.h))
    cases = ("0", "90", "180", "270", "exif6", "exif8")
    right = {c: 0 for c in cases}
    old_right = {c: 0 for c in cases}
    times: dict[str, list[float]] = {c: [] for c in cases}
    new_0: list[float] = []
    old_0: list[float] = []
    check_times: list[float] = []
    wrong: list[dict[str, Any]] = []
    refused: list[str] = []
    warned_genuine = 0
    genuine_checked = 0
    screens_flagged = 0
    screens = 0
    names = list(DEGRADATIONS)
    for i in range(n_cards):
        card = synth.random_identity(rng, today=TODAY)
        name = names[i % len(names)]
        if name in ("upside_down", "blur_1px"):
            name = "tilt"  # the orientations are the subject here; blur has its own section
        how = synth.Degradation(**{**DEGRADATIONS[name].__dict__, "seed": i})
        front_img = synth.photograph(synth.draw_front(card, portrait), how)
        back_img = synth.photograph(synth.draw_back(card), how)
        for side, img in (("front", front_img), ("back", back_img)):
            t0 = time.perf_counter()
            check = check_card_photo(encode_jpeg(img, 92), side)  # type: ignore[arg-type]
            check_times.append(time.perf_counter() - t0)
            genuine_checked += 1
            warned_genuine += bool(check.warnings)
            if not check.ok:
                refused.append(f"{name}/{side}:{check.code}")
        for case in cases:
            if case.startswith("exif"):
                orientation = int(case[4:])
                shots = [clean_image(_exif_jpeg(img, orientation)).data
                         for img in (front_img, back_img)]
            else:
                turn = int(case)
                shots = [encode_jpeg(rotate_quarter(img, turn), 92)
                         for img in (front_img, back_img)]
            for reader, tally in ((None, right), (old_read, old_right)):
                if reader is None and tally is old_right:
                    continue
                t0 = time.perf_counter()
                if reader is None:
                    f = service.read_card_side(shots[0], "front")
                else:
                    f = reader(service.ocr, shots[0], "front", service.config.card_quality)
                t1 = time.perf_counter()
                if reader is None:
                    b = service.read_card_side(shots[1], "back")
                else:
                    b = reader(service.ocr, shots[1], "back", service.config.card_quality)
                elapsed = time.perf_counter() - t0
                front_ok = f.ok and f.front is not None and all(
                    getattr(f.front, k) == getattr(card, k) for k in FIELDS)
                back_ok = b.ok and b.back is not None and (
                    b.back.issuing_authority, b.back.valid_from, b.back.valid_until) == (
                    card.issuing_authority, card.valid_from, card.valid_until)
                tally[case] += front_ok and back_ok
                if reader is None and not (front_ok and back_ok):
                    wrong.append({"card": i, "photo": name, "case": case,
                                  "front": f.reason_code or [k for k in FIELDS if f.front is None
                                                             or getattr(f.front, k)
                                                             != getattr(card, k)],
                                  "back": b.reason_code or ("ok" if back_ok else "fields")})
                if reader is None:
                    times[case].append(elapsed)
                    if case == "0":
                        new_0.append(t1 - t0)
                elif case == "0":
                    old_0.append(t1 - t0)
        if i < 4:
            for n, (pitch, angle, shrink) in enumerate(
                    [(3, 3.0, 2.3), (3, 0.5, 1.7), (4, 7.0, 3.1), (3, -2.0, 1.3)]):
                shot = _screen_photo(front_img, i * 10 + n, pitch, angle, shrink)
                screens += 1
                screens_flagged += "screen_recapture" in check_card_photo(
                    encode_jpeg(shot, 88), "front").warnings
    report: dict[str, Any] = {
        "cards": n_cards,
        "all_fields_right_both_sides": {c: f"{right[c]}/{n_cards}" for c in cases},
        "misread": wrong,
        "time_per_card_both_sides": {c: stats(times[c]) for c in cases},
        "front_side_at_0deg": stats(new_0),
        "upload_check_per_side": stats(check_times),
        "upload_check_refused_genuine": refused,
        "recapture_warning_on_genuine": f"{warned_genuine}/{genuine_checked}",
        "recapture_warning_on_screen_photos": f"{screens_flagged}/{screens}",
    }
    if old_read is not None:
        report["baseline"] = {
            "commit": baseline_commit,
            "all_fields_right_both_sides": {c: f"{old_right[c]}/{n_cards}" for c in cases},
            "front_side_at_0deg": stats(old_0),
            "ratio_median_0deg": round(statistics.median(new_0) / statistics.median(old_0), 3),
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cards", type=int, default=35)
    parser.add_argument("--ocr", choices=("paddleocr", "rapidocr"), default="paddleocr")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--only", choices=("ocr", "face", "liveness"), action="append",
                        help="run only these parts (repeatable); all by default")
    parser.add_argument("--orientations", action="store_true",
                        help="the OCR orientation / upload-check section (issue 15), alone "
                        "unless --only names other parts")
    parser.add_argument("--baseline-commit", default=None,
                        help="with --orientations: time the card reader of this git revision "
                        "on the same photos")
    args = parser.parse_args()
    parts = set(args.only or ("ocr", "face", "liveness"))
    config = IdentityConfig(ocr=OcrConfig(engine=args.ocr, threads=1))
    service = IdentityService(config)
    t0 = time.perf_counter()
    service.warm_up()
    report: dict[str, Any] = {"warm_up_s": round(time.perf_counter() - t0, 2)}
    report["cpu_affinity"] = (
        sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    )
    if args.orientations:
        report["ocr_orientations"] = bench_orientations(service, args.cards,
                                                        args.baseline_commit)
        parts &= set(args.only or ())  # alone unless --only names more
    if "ocr" in parts:
        report["ocr"] = bench_ocr(service, args.cards)
    if "face" in parts:
        report["face"] = bench_faces(service)
    if "liveness" in parts:
        report["liveness"] = bench_liveness(service)
    text = json.dumps(report, ensure_ascii=False, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
