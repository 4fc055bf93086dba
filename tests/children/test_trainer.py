"""The one training loop (children/trainer.py) and its three strategies: the same seeds give the
same metrics as before the loop was shared, bit for bit on the CPU; a cohort member that fails
is dropped alone.

GOLDEN holds what seeded short runs of `train_child`, `train_cohort` and `pretrain_ssl` gave
BEFORE the refactor that put the three near-copies of the loop into `children.trainer` (digits,
threads=1, torch 2.14.1 on AVX512 kernels): every epoch's train loss and accuracy, validation
and audit accuracy (float.hex), the reward, and digests of the final weights and optimizer
state. Bit equality holds only with the same kernels, so elsewhere the comparison is skipped
(the determinism, resume and cohort-versus-lone tests still run everywhere).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from typing import Any

import pytest
import torch

from children.cohort import train_cohort
from children.feed import Feed
from children.ssl import pretrain_ssl
from children.train import train_child
from spaces.policy import BatchOps, Op, Policy, SubPolicy, identity_policy
from spaces.schema import Space

RECORDED_WITH = ("2.14.1", "AVX512")  # torch, its CPU kernels
SAME_KERNELS = (torch.__version__.split("+")[0], torch.backends.cpu.get_cpu_capability())
golden_only = pytest.mark.skipif(
    SAME_KERNELS != RECORDED_WITH,
    reason=f"GOLDEN was recorded with torch {RECORDED_WITH[0]} on {RECORDED_WITH[1]} kernels, "
           f"this is {SAME_KERNELS}: other kernels round otherwise")

POLICIES = [
    identity_policy(),
    Policy((SubPolicy((Op("Rotate", 0.5, 0.8), Op("Cutout", 0.3, 0.5))),
            SubPolicy((Op("Invert", 0.0, 0.5),))), BatchOps(mixup_alpha=0.3)),
    Policy((SubPolicy((Op("Brightness", 0.7, 0.9), Op("GaussianNoise", 0.4, 0.6))),),
           BatchOps(sample_pairing=0.3, cutmix_alpha=0.5)),
]
VIEWS = Policy((SubPolicy((Op("Rotate", 0.4, 0.8), Op("Contrast", 0.5, 0.8))),
                SubPolicy((Op("TranslateX", 0.3, 0.8), Op("Brightness", 0.5, 0.8)))))
SUPERVISED = ("train_loss", "train_accuracy", "val_accuracy", "audit_accuracy")
CONTRASTIVE = SUPERVISED + ("probe_accuracy", "knn_accuracy", "rotation_accuracy")

# Recorded before the refactor (see the module docstring); floats as float.hex, NaN as "nan".
GOLDEN: dict[str, Any] = {
    "lone_batched": {
        "reward": "0x1.789abcdf01235p-3", "model": "24de7313d4dbb363",
        "optimizer": "98a649080fd04963", "probabilities": "36ceada9d2f95105",
        "history": [
            ("0x1.271310aaaaaabp+1", "0x1.ad54b4cdb284fp-4", "0x1.bbbbbbbbbbbbcp-4", "nan"),
            ("0x1.239f3a5555555p+1", "0x1.6756d985181ddp-3", "0x1.3d70a3d70a3d7p-3",
             "0x1.47ae147ae147bp-3"),
            ("0x1.1b25f90000000p+1", "0x1.88f2156ec49efp-3", "0x1.4444444444444p-3",
             "0x1.5c28f5c28f5c3p-3"),
            ("0x1.19d816aaaaaabp+1", "0x1.b7a24440be195p-3", "0x1.e81b4e81b4e82p-3",
             "0x1.d0369d0369d03p-3"),
        ],
    },
    "lone_albumentations": {
        "reward": "0x1.e81b4e81b4e83p-4", "model": "959742b8af8323f6",
        "optimizer": "94e8b03823fcd5b0", "probabilities": None,
        "history": [
            ("0x1.2950475555555p+1", "0x1.af8aaaaaaaaabp-4", "0x1.b851eb851eb85p-4", "nan"),
            ("0x1.2875945555555p+1", "0x1.9d40000000000p-4", "0x1.8f5c28f5c28f6p-4",
             "0x1.b4e81b4e81b4fp-4"),
            ("0x1.24eb62aaaaaabp+1", "0x1.0625555555555p-3", "0x1.999999999999ap-4",
             "0x1.c28f5c28f5c29p-4"),
            ("0x1.246f6a0000000p+1", "0x1.3075555555555p-3", "0x1.47ae147ae147bp-3",
             "0x1.70a3d70a3d70ap-3"),
        ],
    },
    "cohort_batched": {
        "rewards": ["0x1.05b05b05b05b0p-2", "0x1.1907f6e5d4c3bp-3", "0x1.048d159e26af3p-3"],
        "models": ["16b238014f7dce25", "d6718523ea03f796", "2d72256a147e385e"],
        "optimizer": "50ccf971b188bb82",
        "history": [
            [
                ("0x1.251a400000000p+1", "0x1.c000000000000p-4", "0x1.eb851eb851eb8p-4",
                 "0x1.17e4b17e4b17ep-3"),
                ("0x1.199d560000000p+1", "0x1.c555555555555p-3", "0x1.06d3a06d3a06dp-2",
                 "0x1.06d3a06d3a06dp-2"),
                ("0x1.0a6a860000000p+1", "0x1.9aaaaaaaaaaabp-2", "0x1.8f5c28f5c28f6p-2",
                 "0x1.962fc962fc963p-2"),
            ],
            [
                ("0x1.29f3060000000p+1", "0x1.96b6b55555555p-4", "0x1.92c5f92c5f92cp-4",
                 "0x1.a740da740da74p-4"),
                ("0x1.2329f80000000p+1", "0x1.4a85beaaaaaabp-3", "0x1.2c5f92c5f92c6p-3",
                 "0x1.258bf258bf259p-3"),
                ("0x1.21c4f00000000p+1", "0x1.5d6f200000000p-3", "0x1.5555555555555p-3",
                 "0x1.70a3d70a3d70ap-3"),
            ],
            [
                ("0x1.292dfe0000000p+1", "0x1.96d5555555555p-4", "0x1.92c5f92c5f92cp-4",
                 "0x1.a740da740da74p-4"),
                ("0x1.27cba80000000p+1", "0x1.d100000000000p-4", "0x1.0000000000000p-3",
                 "0x1.1111111111111p-3"),
                ("0x1.246f2a0000000p+1", "0x1.02caaaaaaaaabp-3", "0x1.4444444444444p-3",
                 "0x1.70a3d70a3d70ap-3"),
            ],
        ],
    },
    "cohort_albumentations": {
        "rewards": ["0x1.f0a3d70a3d70ap-4", "0x1.e147ae147ae15p-4"],
        "models": ["b76ac98982dd1351", "3d411ca43ea1c68a"],
        "optimizer": "cfbe317efed21c82",
        "history": [
            [
                ("0x1.27d51c0000000p+1", "0x1.bd5f500000000p-4", "0x1.851eb851eb852p-4",
                 "0x1.a740da740da74p-4"),
                ("0x1.22a2ae0000000p+1", "0x1.606dc80000000p-3", "0x1.2e147ae147ae1p-3",
                 "0x1.3a06d3a06d3a0p-3"),
            ],
            [
                ("0x1.2849260000000p+1", "0x1.9380000000000p-4", "0x1.851eb851eb852p-4",
                 "0x1.a740da740da74p-4"),
                ("0x1.28464e0000000p+1", "0x1.9f55555555555p-4", "0x1.1eb851eb851ecp-3",
                 "0x1.3333333333333p-3"),
            ],
        ],
    },
    "ssl": {
        "reward": "0x1.8ccccc0000000p-1", "model": "e465d36fbfee17ba",
        "optimizer": "5b8aa5770cfcafa5",
        "history": [
            ("0x1.36585e5555555p+2", "0x1.2aaaaaaaaaaabp-7", "nan", "nan", "nan", "nan", "nan"),
            ("0x1.3370375555555p+2", "0x1.0000000000000p-6", "nan", "nan", "nan", "nan", "nan"),
            ("0x1.2f6ce90000000p+2", "0x1.c000000000000p-6", "0x1.8ccccc0000000p-1",
             "0x1.a740da0000000p-1", "0x1.8ccccc0000000p-1", "0x1.3bbbbc0000000p-1",
             "0x1.792c600000000p-1"),
        ],
    },
    "ssl_knn": {
        "reward": "0x1.30a3d80000000p-1", "model": "6a434e60ca1a0ed8",
        "optimizer": "07b05f8596477f42",
        "history": [
            ("0x1.366c070000000p+2", "0x1.2aaaaaaaaaaabp-7", "0x1.1f92c60000000p-1", "nan", "nan",
             "0x1.1f92c60000000p-1", "nan"),
            ("0x1.3453ceaaaaaabp+2", "0x1.aaaaaaaaaaaabp-7", "0x1.30a3d80000000p-1",
             "0x1.a3d70a0000000p-1", "0x1.90369e0000000p-1", "0x1.30a3d80000000p-1",
             "0x1.7da7400000000p-1"),
        ],
    },
}


def _hex(value: float) -> str:
    return "nan" if math.isnan(value) else float(value).hex()


def _rows(history: list[Any], keys: tuple[str, ...]) -> list[tuple[str, ...]]:
    return [tuple(_hex(getattr(h, k)) for k in keys) for h in history]


def _digest(value: Any) -> str:
    """sha256 of every tensor in `value` (by sorted key), its other leaves by repr."""
    h = hashlib.sha256()

    def walk(x: Any, key: str = "") -> None:
        if isinstance(x, torch.Tensor):
            h.update(key.encode())
            h.update(x.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(x, dict):
            for k in sorted(x, key=str):
                walk(x[k], f"{key}/{k}")
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{key}/{i}")
        else:
            h.update(f"{key}={x!r}".encode())

    walk(value)
    return h.hexdigest()[:16]


def _weights(model: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(model):
        h.update(name.encode())
        h.update(model[name].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def spaces(digits_space: Space) -> dict[str, Space]:
    return {"batched": digits_space.replace(**{"child.augmentation": "batched"}),
            "albumentations": digits_space.replace(**{
                "child.augmentation": "albumentations", "reward.validation": "fresh"})}


@pytest.fixture(scope="module")
def cohort_run(spaces, digits_splits) -> tuple[list[Any], list[Any]]:
    """The recorded cohort of three: its metrics and each epoch's member states."""
    space, states = spaces["batched"], []
    with torch.random.fork_rng():
        metrics = train_cohort(space.child, space.reward, POLICIES, digits_splits, seed=7,
                               aug_seeds=[11, 12, 13], threads=1, epochs=3,
                               on_epoch=lambda _s, st, _e: states.append(st))
    return metrics, states


@golden_only
@pytest.mark.parametrize("name, path, k, aug_seed", [
    ("lone_batched", "batched", 1, 11), ("lone_albumentations", "albumentations", 2, 12)])
def test_a_lone_child_trains_as_before_the_loop_was_shared(spaces, digits_splits, name, path,
                                                          k, aug_seed) -> None:
    space, states, seen = spaces[path], [], {}

    def end(predict: Any) -> None:
        seen["p"] = hashlib.sha256(predict(digits_splits.test.x[:20]).tobytes()).hexdigest()[:16]

    metrics = train_child(space.child, space.reward, POLICIES[k], digits_splits, seed=7,
                          aug_seed=aug_seed, threads=1, epochs=4,
                          on_epoch=lambda _s, st: states.append(st), on_end=end)
    want = GOLDEN[name]
    assert _rows(metrics.history, SUPERVISED) == want["history"]
    assert _hex(metrics.reward) == want["reward"]
    assert _weights(states[-1].model) == want["model"]
    assert _digest(states[-1].optimizer) == want["optimizer"]
    assert want["probabilities"] in (None, seen["p"])


@golden_only
def test_a_cohort_trains_as_before_the_loop_was_shared(cohort_run) -> None:
    metrics, states = cohort_run
    want = GOLDEN["cohort_batched"]
    assert [_rows(m.history, SUPERVISED) for m in metrics] == want["history"]
    assert [_hex(m.reward) for m in metrics] == want["rewards"]
    assert [_weights(s.model) for s in states[-1]] == want["models"]
    assert _digest(states[-1][0].optimizer) == want["optimizer"]


@golden_only
def test_a_cohort_on_the_albumentations_path_trains_as_before(spaces, digits_splits) -> None:
    space, states = spaces["albumentations"], []
    metrics = train_cohort(space.child, space.reward, POLICIES[1:], digits_splits, seed=7,
                           aug_seeds=[21, 22], threads=1, epochs=2,
                           on_epoch=lambda _s, st, _e: states.append(st))
    want = GOLDEN["cohort_albumentations"]
    assert [_rows(m.history, SUPERVISED) for m in metrics] == want["history"]
    assert [_weights(s.model) for s in states[-1]] == want["models"]
    assert _digest(states[-1][0].optimizer) == want["optimizer"]


@golden_only
@pytest.mark.parametrize("name, epochs, changes", [
    ("ssl", 3, {}),
    ("ssl_knn", 2, {"reward.ssl": {"score": "knn", "probe_steps": 200, "rotation_images": 200},
                    "reward.eval_every": 1})])
def test_contrastive_pretraining_trains_as_before_the_loop_was_shared(
        digits_space, digits_data, name, epochs, changes) -> None:
    from children.datasets import make_splits

    space = digits_space.replace(**{
        "reward.kind": "self_supervised", "policy.batch_ops": {}, "dataset.labelled_size": 100,
        "child.epochs": 6, "child.batch_size": 64, "reward.last_epochs": 1,
        "reward.eval_every": 100,
        "child.optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "child.schedule": "cosine", "reward.ssl": {"probe_steps": 200, "rotation_images": 200}})
    space = space.replace(**changes)
    splits, states = make_splits(digits_data, space.dataset, seed=0), []
    metrics = pretrain_ssl(space.child, space.reward, VIEWS, splits, seed=3, aug_seed=5,
                           threads=1, epochs=epochs, on_epoch=lambda _s, st: states.append(st))
    want = GOLDEN[name]
    assert _rows(metrics.history, CONTRASTIVE) == want["history"]
    assert _hex(metrics.reward) == want["reward"]
    assert _weights(states[-1].model) == want["model"]
    assert _digest(states[-1].optimizer) == want["optimizer"]


# ---------------------------------------------------------------- what the shared loop adds


def test_each_scored_epoch_packs_each_members_audit_images(cohort_run) -> None:
    """A cohort's members (like a lone child) report each audit image's correctness where the
    audit set was scored, agreeing with their audit accuracy."""
    from children.reward import unpack_hits

    metrics, _ = cohort_run
    for m in metrics:
        for h in m.history:
            hits = unpack_hits(h.audit_hits)
            assert hits is not None and len(hits) == 300
            assert float(hits.mean()) == h.audit_accuracy


def _breaking(monkeypatch, broken: set[int], epoch: int, after: int = 1) -> None:
    """Members whose aug_seed is in `broken` raise in their own batches at `epoch` (0-based),
    after `after` good batches."""
    original = Feed.batches

    def batches(self, e, policy, aug_seed, order=None):
        path, stream = original(self, e, policy, aug_seed, order)
        if aug_seed not in broken or e != epoch:
            return path, stream

        def failing():
            for i, batch in enumerate(stream):
                if i == after:
                    raise RuntimeError(f"the augmentation of seed {aug_seed} broke")
                yield batch

        return path, failing()

    monkeypatch.setattr(Feed, "batches", batches)


def test_a_member_that_raises_is_dropped_alone(spaces, digits_splits, cohort_run,
                                               monkeypatch) -> None:
    """Member 1's own batches raise in epoch 2: it reports that error, status `error`; members
    0 and 2 train on exactly as they did without it."""
    straight, _ = cohort_run
    _breaking(monkeypatch, {12}, epoch=1)
    space, errors = spaces["batched"], []
    with torch.random.fork_rng():
        metrics = train_cohort(space.child, space.reward, POLICIES, digits_splits, seed=7,
                               aug_seeds=[11, 12, 13], threads=1, epochs=3,
                               on_epoch=lambda _s, _st, e: errors.append(e))
    broke = "RuntimeError: the augmentation of seed 12 broke"
    assert [e[1] for e in errors] == ["", broke, broke]
    assert errors[-1][1].status == "error" and errors[-1][0] == errors[-1][2] == ""
    for k in (0, 2):
        got, want = metrics[k].history, straight[k].history
        assert _rows(got, SUPERVISED) == _rows(want, SUPERVISED)  # bit for bit
        assert [h.audit_hits for h in got] == [h.audit_hits for h in want]
    assert len(metrics[1].history) == 3


def test_a_cohort_whose_members_all_fail_stops(spaces, digits_splits, monkeypatch) -> None:
    _breaking(monkeypatch, {11, 12}, epoch=1, after=0)
    space, errors = spaces["batched"], []
    metrics = train_cohort(space.child, space.reward, POLICIES[:2], digits_splits, seed=7,
                           aug_seeds=[11, 12], threads=1, epochs=4,
                           on_epoch=lambda _s, _st, e: errors.append(e))
    assert len(errors) == 2 and all(e.status == "error" for e in errors[-1])
    assert [len(m.history) for m in metrics] == [2, 2]  # the epoch they failed in, then none


def test_a_lone_child_that_raises_still_raises(spaces, digits_splits, monkeypatch) -> None:
    _breaking(monkeypatch, {11}, epoch=0)
    space = spaces["batched"]
    with pytest.raises(RuntimeError, match="seed 11 broke"):
        train_child(space.child, space.reward, POLICIES[1], digits_splits, seed=7, aug_seed=11,
                    threads=1, epochs=2)


def test_a_resumed_state_is_not_changed_by_training_on(spaces, digits_splits) -> None:
    """The trainer copies a snapshot's optimizer state before it steps (torch would update the
    loaded CPU tensors in place)."""
    space, states = spaces["batched"], []
    train_child(space.child, space.reward, POLICIES[0], digits_splits, seed=1, threads=1,
                epochs=2, on_epoch=lambda _s, st: states.append(st))
    before = _digest(states[0].optimizer)
    train_child(space.child, space.reward, POLICIES[0], digits_splits, seed=1, threads=1,
                epochs=2, state=replace(states[0]))
    assert _digest(states[0].optimizer) == before
