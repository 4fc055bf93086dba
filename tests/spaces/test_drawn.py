"""Ops drawn per image (format version 2): golden file, round trips, errors, albumentations.

The albumentations form must mean what `spaces.drawn` says: n ops drawn with replacement and
applied in the order drawn (`RandomOrder`; `SomeOf` sorts them into list order), a ranged
magnitude one of its levels per application, each equally likely.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from spaces.drawn import Draw, DrawnOp
from spaces.errors import SpaceError
from spaces.policy import (
    FORMAT_VERSION,
    BatchOps,
    Op,
    Policy,
    SubPolicy,
    build_pipeline,
    export_albumentations,
    flat_params,
    load_policy,
    policy_from_dict,
    policy_to_dict,
    save_policy,
)
from spaces.schema import BaseAug

GOLDEN = Path(__file__).parent / "golden"
V2 = GOLDEN / "policy_v2.yaml"


def _gradient(size: int = 32) -> np.ndarray:
    """An RGB image holding every level: each op and level changes it differently."""
    ys, xs = np.mgrid[0:size, 0:size]
    values = (ys * size + xs) * 255 // (size * size - 1)
    return np.stack([values, 255 - values, (values * 7) % 256], axis=-1).astype(np.uint8)


def test_golden_v2_policy_keeps_loading() -> None:
    policy = load_policy(V2)
    assert policy.sub_policies == () and policy.version == 2 == FORMAT_VERSION
    assert policy.draw == Draw((DrawnOp("Identity", (0.0, 0.0), 0.8),
                                DrawnOp("Rotate", (0.0, 0.5), 0.8),
                                DrawnOp("Solarize", (0.3, 0.3), 0.8),
                                DrawnOp("Equalize", (0.0, 0.0), 0.8)), n=2, levels=5)
    assert policy.batch == BatchOps(mixup_alpha=0.2)
    assert policy.op_names() == ["Identity", "Rotate", "Solarize", "Equalize"]
    assert policy.draw.magnitudes(policy.draw.ops[1]) == (0.0, 0.125, 0.25, 0.375, 0.5)
    assert policy.draw.magnitudes(policy.draw.ops[2]) == (0.3,)


def test_a_v1_policy_is_still_written_as_version_1_byte_for_byte(tmp_path: Path) -> None:
    """Sub-policies alone need no version 2: older readers load them, and an explicit policy's
    seed (a hash of its dict) stays."""
    v1 = load_policy(GOLDEN / "policy_v1.yaml")
    data = policy_to_dict(v1)
    assert data["version"] == 1 and "draw" not in data and len(data["sub_policies"]) == 3
    assert load_policy(save_policy(v1, tmp_path / "again.yaml")) == v1
    assert policy_to_dict(load_policy(V2))["version"] == 2
    assert "sub_policies" not in policy_to_dict(load_policy(V2))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_round_trip(tmp_path: Path, suffix: str) -> None:
    policy = load_policy(V2)
    again = load_policy(save_policy(policy, tmp_path / f"p{suffix}"))
    assert again == policy and again.provenance == policy.provenance
    assert again.draw.ops[1].magnitude == (0.0, 0.5)


def test_describe_and_flat_params_name_every_op() -> None:
    policy = load_policy(V2)
    text = policy.describe()
    assert text.splitlines()[0] == ("2 op(s) per image, drawn with replacement from 4, ranged "
                                    "magnitudes uniform on 5 levels:")
    assert "Rotate(m=0.00..0.50,p=0.80)" in text and "Solarize(m=0.30,p=0.80)" in text
    assert "Equalize(p=0.80)" in text and text.splitlines()[-1] == "batch: mixup_alpha=0.20"
    params = flat_params(policy)
    assert params["draw.n"] == 2 and params["draw.levels"] == 5
    assert params["draw.op1.name"] == "Rotate" and params["draw.op1.magnitude_high"] == 0.5
    assert params["draw.op2.magnitude"] == 0.3 and params["draw.op3.probability"] == 0.8
    assert params["batch.mixup_alpha"] == 0.2 and len(params) == 2 + 4 * 3 + 1 + 3


def _v2(draw: dict, **extra) -> dict:
    return {"format": "augsearch-policy", "version": 2, "draw": draw, **extra}


BAD = [
    (_v2({"n": 1, "ops": [{"op": "Rotate", "magnitude": [0.2, 0.6]}]}),
     "a ranged magnitude needs `levels >= 2`"),
    (_v2({"n": 1, "levels": 3, "ops": [{"op": "Rotate", "magnitude": [0.6, 0.2]}]}),
     "draw.ops[0]: `low <= high` must hold for magnitude, but got low=0.6, high=0.2"),
    (_v2({"n": 0, "ops": [{"op": "Rotate"}]}), "`1 <= n <= 16`"),
    (_v2({"n": 2, "ops": []}), "draw.ops: expected a non-empty list"),
    (_v2({"n": 2, "ops": [{"op": "Rotat"}]}), "draw.ops[0]: unknown op 'Rotat'"),
    (_v2({"n": 2, "ops": [{"op": "Rotate", "magnitude": [0, 2]}]}),
     "`0 <= magnitude <= 1` must hold"),
    (_v2({"n": 2, "ops": [{"op": "Rotate", "mag": 0.3}]}), "draw.ops[0]: expected a mapping"),
    (_v2({"n": 2.5, "ops": [{"op": "Rotate"}]}), "draw.n: expected a whole number"),
    (_v2({"n": 2, "pick": 1, "ops": [{"op": "Rotate"}]}), "expected a mapping with keys n"),
    ({**_v2({"n": 1, "ops": [{"op": "Rotate"}]}), "version": 1}, "draw (ops drawn per image) "
     "needs version 2"),
    (_v2({"n": 1, "ops": [{"op": "Rotate"}]}, sub_policies=[[{"op": "Invert"}]]),
     "needs version 2 and no sub_policies"),
    ({"format": "augsearch-policy", "version": 3}, "this augsearch reads versions 1, 2"),
]


@pytest.mark.parametrize("data,words", BAD)
def test_bad_drawn_policies_are_refused_naming_the_key(data: dict, words: str) -> None:
    with pytest.raises(SpaceError) as info:
        policy_from_dict(data, "p.yaml")
    assert words in str(info.value) and str(info.value).startswith("p.yaml: ")


def test_a_policy_holds_sub_policies_or_a_draw_not_both() -> None:
    with pytest.raises(ValueError, match="not both"):
        Policy((SubPolicy((Op("Invert"),)),), draw=Draw((DrawnOp("Invert"),)))


def test_the_export_loads_with_plain_albumentations_and_keeps_dtype_and_shape(
        tmp_path: Path) -> None:
    path = export_albumentations(load_policy(V2), BaseAug(), 32, tmp_path / "best_policy.json")
    code = (
        "import os, sys, numpy as np; os.environ['NO_ALBUMENTATIONS_UPDATE']='1'\n"
        "import albumentations as A\n"
        f"t = A.load({str(path)!r}, data_format='json')\n"
        "draw = t.transforms[-1]\n"
        "print(type(draw).__name__, draw.n, draw.replace, type(draw.transforms[1]).__name__)\n"
        "img = np.full((32, 32, 3), 128, np.uint8); img[8:24, 8:24] = 250\n"
        "outs = [t(image=img)['image'] for _ in range(20)]\n"
        "assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)\n"
        "print('spaces' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["RandomOrder", "2", "True", "OneOf", "False"]
    assert len(json.loads(path.read_text())["transform"]["transforms"][-1]["transforms"]) == 4


def test_exported_pipeline_equals_training_pipeline(tmp_path: Path) -> None:
    import albumentations as A

    policy = load_policy(V2)
    loaded = A.load(str(export_albumentations(policy, None, 32, tmp_path / "p.yaml")),
                    data_format="yaml")
    trained = build_pipeline(policy, None, 32)
    assert A.to_dict(loaded) == A.to_dict(trained)
    loaded.set_random_seed(3)
    trained.set_random_seed(3)
    image = _gradient()
    for _ in range(10):
        assert np.array_equal(loaded(image=image)["image"], trained(image=image)["image"])


def _outcomes(policy: Policy, candidates: dict[str, np.ndarray], draws: int) -> Counter:
    """How often the pipeline's output is each candidate image (by exact equality)."""
    pipe, image, seen = build_pipeline(policy, None, 32, seed=0), _gradient(), Counter()
    for _ in range(draws):
        out = pipe(image=image)["image"]
        seen[next(k for k, c in candidates.items() if np.array_equal(out, c))] += 1
    return seen


def _apply(names: list[str], magnitudes: dict[str, float]) -> np.ndarray:
    from spaces.ops import build_op

    image = _gradient()
    for name in names:
        image = build_op(name, magnitudes.get(name, 0.0), 1.0)(image=image)["image"]
    return image


def test_ops_are_drawn_with_replacement_and_applied_in_the_order_drawn() -> None:
    """Two of Invert, Solarize and Posterize per image: all 9 ordered pairs, equally often
    (SomeOf would never apply Solarize before Invert)."""
    magnitudes = {"Solarize": 0.3, "Posterize": 1.0}
    names = ["Invert", "Solarize", "Posterize"]
    draw = Draw(tuple(DrawnOp(n, (magnitudes.get(n, 0.0),) * 2) for n in names), n=2)
    pairs = {f"{a}>{b}": _apply([a, b], magnitudes) for a in names for b in names}
    assert len({c.tobytes() for c in pairs.values()}) == 9  # every pair tells itself apart
    seen = _outcomes(Policy(draw=draw), pairs, 1800)
    assert set(seen) == set(pairs)
    assert chisquare([seen[k] for k in pairs]).pvalue > 1e-3


def test_a_ranged_magnitude_takes_each_level_equally_often() -> None:
    """One of Solarize on 5 levels of [0.1, 0.9] and Invert per image: Invert half the time,
    each Solarize level a tenth."""
    draw = Draw((DrawnOp("Solarize", (0.1, 0.9)), DrawnOp("Invert")), n=1, levels=5)
    levels = draw.magnitudes(draw.ops[0])
    assert levels == pytest.approx((0.1, 0.3, 0.5, 0.7, 0.9))
    candidates = {f"Solarize {m:.1f}": _apply(["Solarize"], {"Solarize": m}) for m in levels}
    candidates["Invert"] = _apply(["Invert"], {})
    seen = _outcomes(Policy(draw=draw), candidates, 2000)
    expected = [0.1 * 2000] * 5 + [0.5 * 2000]
    assert chisquare([seen[k] for k in candidates], expected).pvalue > 1e-3
