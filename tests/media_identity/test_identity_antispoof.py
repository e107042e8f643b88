"""R-12: passive anti-spoofing runs through deepface when an operator provides MiniFASNet weights.

The real MiniFASNet weights are not available offline, so these tests give deepface stand-in
ONNX graphs with MiniFASNet's interface ((n, 80, 80, 3) in, 3 softmax scores out, label 1 =
real) that always answer "real" or always "spoof": they prove the wiring and the verdict, not
the model's accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from media.identity import (
    Challenge,
    ChallengePlan,
    IdentityConfig,
    IdentityService,
    LivenessResult,
)
from media.identity.config import AntiSpoofConfig
from media.identity.imaging import Frame
from media.identity.weights import FASNET_FILES
from testing import identity_material as synth

onnx = pytest.importorskip("onnx", reason="the onnx package builds the stand-in weights")


def _stand_in_fasnet(folder: Path, scores: list[float]) -> Path:
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weight = numpy_helper.from_array(np.zeros((80 * 80 * 3, 3), np.float32), "w")
    bias = numpy_helper.from_array(np.asarray(scores, np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "w"], ["mm"]),
            helper.make_node("Add", ["mm", "b"], ["y"]),
        ],
        "stand_in_minifasnet",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 80, 80, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    for name in FASNET_FILES:
        onnx.save(model, str(folder / name))
    return folder


def _run(
    service: IdentityService, weights: Path, clip: list[tuple[float, Frame]]
) -> LivenessResult:
    from deepface.modules import modeling

    # deepface keeps one Fasnet per process: forget it so this test's weights are loaded.
    getattr(modeling, "cached_models", {}).get("spoofing", {}).pop("Fasnet", None)
    guarded = IdentityService(IdentityConfig(anti_spoof=AntiSpoofConfig(weights_dir=weights)))
    guarded._matcher, guarded._landmarker = service.matcher, service.landmarker
    # A blink: the one action a clip generated from a photo still performs since issue 15
    # (its mouth opening is a dark fill, refused by the mouth-interior check).
    plan = ChallengePlan(challenges=[Challenge.BLINK], time_limit_s=6.0)
    return guarded.check_liveness(clip, plan)


def test_r12_passive_check_uses_operator_weights_and_its_verdict_counts(
    service: IdentityService,
    selfie: Callable[[str], Frame],
    landmarks: Callable[[Frame], NDArray[np.float64]],
    tmp_path: Path,
) -> None:
    base = selfie("obama.jpg")
    clip = synth.performing_clip(base, landmarks(base), ["blink"], seed=21)

    real = _run(service, _stand_in_fasnet(tmp_path / "real", [0.05, 0.9, 0.05]), clip)
    assert real.passed, real
    assert real.passive.status == "passed" and real.passive.policy == "model"
    assert real.passive.engine is not None and real.passive.engine.name == "deepface-fasnet"

    spoof = _run(service, _stand_in_fasnet(tmp_path / "spoof", [0.9, 0.05, 0.05]), clip)
    assert all(c.passed for c in spoof.challenges)
    assert not spoof.passed and spoof.reason_code == "passive_failed"
    assert spoof.passive.status == "failed"
