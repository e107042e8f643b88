"""Hand-copy recognition on synthetic handwriting (R-25): CER of the risk sentence per style,
how often the right sentence would be accepted and the wrong one refused, the box checks'
figures (reversals, ink, coverage) on real characters against zig-zags and scribbles, and the
time per sentence. One core, one thread.

    .venv/bin/python bench/handwriting.py [--samples 10] [--json out.json]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from media.handwriting import recognizer
from media.handwriting.ink import box_report, grid_problems, parse_grid
from media.handwriting.reading import DEFAULT_MAX_CER, read_copy
from testing import handwriting as synthetic
from workflow.consent_texts import RISK_SENTENCE

WRONG = "我今天去银行存款买基金收益稳定高我今天去银行存款买基金收益稳定高本人已阅读保险条款"


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    engine = recognizer()
    expected = synthetic.writable(RISK_SENTENCE)
    out: dict[str, Any] = {"engine": engine.name, "characters": len(expected), "styles": {}}
    for style in synthetic.STYLES:
        cers, seconds, accepted, char_errors = [], [], 0, 0
        for seed in range(args.samples):
            grid = parse_grid(synthetic.grid(RISK_SENTENCE, style, seed), len(expected))
            started = time.perf_counter()
            reading = read_copy(engine, grid, expected)
            seconds.append(time.perf_counter() - started)
            cers.append(reading.comparison.cer)
            char_errors += reading.comparison.distance
            accepted += reading.comparison.cer <= DEFAULT_MAX_CER
        out["styles"][style] = {
            "samples": args.samples, "mean_cer": round(statistics.mean(cers), 4),
            "max_cer": round(max(cers), 4), "accepted": accepted,
            "char_accuracy": round(1 - char_errors / (len(expected) * args.samples), 4),
            "seconds_median": round(statistics.median(seconds), 3),
            "seconds_p95": round(_p95(seconds), 3)}
    wrong = []
    for seed in range(args.samples):
        body = synthetic.grid(WRONG[:len(expected)], "neat", seed)
        reading = read_copy(engine, parse_grid(body, len(expected)), expected)
        wrong.append(reading.comparison.cer)
    out["wrong_sentence"] = {"samples": args.samples, "min_cer": round(min(wrong), 4),
                             "accepted": sum(c <= DEFAULT_MAX_CER for c in wrong)}
    # Box checks: figures of real characters against zig-zags and scribbles.
    real: dict[str, list[float]] = {"reversals": [], "ink": [], "coverage": []}
    refused_real = 0
    for style in synthetic.STYLES:
        for seed in range(args.samples * 3):
            grid = parse_grid(synthetic.grid(RISK_SENTENCE, style, 100 + seed), len(expected))
            reports, problem = grid_problems(grid)
            refused_real += problem is not None
            for r in reports:
                real["reversals"].append(r.max_reversals)
                real["ink"].append(r.ink)
                real["coverage"].append(r.coverage)
    rng = random.Random(7)
    fakes: dict[str, list[Any]] = {"zigzag": [], "scribble": []}
    for kind, make in (("zigzag", synthetic.zigzag), ("scribble", synthetic.scribble)):
        for _ in range(args.samples * 3):
            strokes, _t = make(rng)  # type: ignore[operator]
            import numpy as np

            report = box_report(0, [np.array([(x, y) for x, y, _ in s]) for s in strokes])
            fakes[kind].append({"reversals": report.max_reversals, "ink": round(report.ink, 2),
                                "coverage": round(report.coverage, 3),
                                "refused": report.scribbled})
    out["box_checks"] = {
        "real_boxes": len(real["ink"]), "real_sentences_refused": refused_real,
        "real_max_reversals": max(real["reversals"]),
        "real_max_ink": round(max(real["ink"]), 2),
        "real_max_coverage": round(max(real["coverage"]), 3),
        "zigzag_refused": sum(f["refused"] for f in fakes["zigzag"]),
        "zigzag_min_reversals": min(f["reversals"] for f in fakes["zigzag"]),
        "scribble_refused": sum(f["refused"] for f in fakes["scribble"]),
        "scribble_min_coverage": min(f["coverage"] for f in fakes["scribble"]),
        "fakes_each": args.samples * 3}
    text = json.dumps(out, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
