"""children.augment: a found policy as a module on batches, for a user's own training loop.

Every policy file kind a search writes is made with the project's own writers and loaded; the
module's output has the albumentations export's distribution on the same policy (the parity
suite's per-image statistics, on real images); it is deterministic under a seed, stays on the
batch's device (`meta` under `tests.devicecheck.OneDevice`), and its batch ops mix images and
targets together with `children.batches.draw_mix`'s distributions.
"""

from __future__ import annotations

import json

import albumentations as A
import numpy as np
import pytest
import torch
import yaml
from scipy.stats import beta as beta_dist
from scipy.stats import ks_2samp, kstest

from children import augment
from children.augment import PolicyAugment, load_augment, mix_on_device, soft_labels
from children.batch_ops import draw_mix
from children.tensor_aug import BATCHED
from children.train import cpu_threads
from search.evaluate.arms import policy_arm
from search.trials.compile import sample_configs
from search.trials.schedule import schedule_policies, schedule_to_json
from spaces.errors import SpaceError
from spaces.policy import BatchOps, Op, Policy, SubPolicy, export_albumentations, save_policy
from spaces.schema import BaseAug, load_space
from tests.children.test_tensor_parity import MIXED, _real_images, _statistics
from tests.devicecheck import OneDevice

META = torch.device("meta")
ALL_MIX = BatchOps(mixup_alpha=0.4, cutmix_alpha=1.0, sample_pairing=0.3)
FOUND = Policy(MIXED.sub_policies, ALL_MIX, provenance={"space": "cifar10", "trial": "t1"})
NO_BASE = BaseAug(crop=False, flip=False)


def _write_space(directory, **changes) -> None:
    """The resolved space a search leaves in its output directory (as the session does)."""
    space = load_space("cifar10").replace(**changes)
    text = yaml.safe_dump(space.model_dump(mode="json"), sort_keys=False)
    (directory / "space.yaml").write_text(text, encoding="utf-8")


def _levels(n: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Random whole levels as floats in [0, 1] (the pipeline's quantisation keeps them)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), generator=g).float() / 255.0


# ---------------------------------------------------------------- every file kind


def test_a_policy_yaml_takes_its_space_from_provenance(tmp_path) -> None:
    aug = load_augment(save_policy(FOUND, tmp_path / "best_policy.yaml"))
    assert aug.policy == FOUND and aug.policy.batch == ALL_MIX
    assert aug.base == load_space("cifar10").child.base_augmentation
    assert (aug.image_size, aug.num_classes) == (32, 10)


def test_a_policy_json_and_the_space_yaml_beside_it(tmp_path) -> None:
    _write_space(tmp_path, **{"child.base_augmentation.crop_padding": 2,
                              "child.base_augmentation.flip": False})
    aug = load_augment(save_policy(FOUND, tmp_path / "best_policy.json"))
    assert aug.policy == FOUND
    assert aug.base == BaseAug(crop=True, crop_padding=2, flip=False)


def test_explicit_arguments_override_the_space(tmp_path) -> None:
    path = save_policy(FOUND, tmp_path / "candidate_policy.yaml")
    aug = load_augment(path, base={"flip": False}, image_size=24, num_classes=7, seed=3)
    assert aug.base == BaseAug(crop=True, crop_padding=4, flip=False)
    assert (aug.image_size, aug.num_classes, aug.seed) == (24, 7, 3)
    assert load_augment(path, space="digits").image_size == load_space("digits").dataset.image_size


def test_a_merged_density_policy_beside_its_space(tmp_path) -> None:
    _write_space(tmp_path)
    merged = Policy(MIXED.sub_policies * 2, provenance={"merged_from": ["t1", "t4"],
                                                        "top_per_fold": 3, "folds": 5})
    aug = load_augment(save_policy(merged, tmp_path / "merged_policy.yaml"))
    assert aug.policy == merged and len(aug.policy.sub_policies) == 8


def test_a_pbt_schedule_replays_per_epoch_and_stretches_as_search_evaluate_does(tmp_path) -> None:
    space = load_space("cifar10")
    configs = sample_configs(space, 3, seed=4)
    entries = [(0, configs[0]), (3, configs[1]), (5, configs[2])]
    data = schedule_to_json(space, entries, epochs=8)
    data["provenance"] = {"space": "cifar10"}
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    replay = schedule_policies(space, entries)
    aug = load_augment(path)
    for epoch in range(10):
        aug.set_epoch(epoch)
        assert aug.policy == replay(epoch), epoch
    stretched, arm = load_augment(path, total_epochs=20), policy_arm("pbt", path, space, 20)
    for epoch in range(20):
        stretched.set_epoch(epoch)
        assert stretched.policy == arm.schedule(epoch), epoch
    assert [start for start, _ in stretched.schedule] == [0, 8, 13]


def test_the_albumentations_export_is_refused_naming_the_yaml_beside_it(tmp_path) -> None:
    export_albumentations(FOUND, BaseAug(), 32, tmp_path / "best_policy.json")
    with pytest.raises(SpaceError, match="pass augsearch's policy instead") as err:
        load_augment(tmp_path / "best_policy.json")
    assert "the best_policy.yaml" in str(err.value) and "\n" not in str(err.value)
    save_policy(FOUND, tmp_path / "best_policy.yaml")
    with pytest.raises(SpaceError, match=str(tmp_path / "best_policy.yaml")):
        load_augment(tmp_path / "best_policy.json")


def test_files_it_cannot_use_are_refused_in_one_line(tmp_path) -> None:
    other = tmp_path / "other.yaml"
    other.write_text("format: something-else\n", encoding="utf-8")
    with pytest.raises(SpaceError, match="not a policy file"):
        load_augment(other)
    with pytest.raises(SpaceError, match="no such policy file"):
        load_augment(tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").symlink_to(tmp_path / "loop2.yaml")
    (tmp_path / "loop2.yaml").symlink_to(tmp_path / "loop.yaml")
    with pytest.raises(SpaceError, match=r"loop.yaml: a symlink loop .* so the policy file "
                                         r"cannot be read; point the link at the real file"):
        load_augment(tmp_path / "loop.yaml")
    lost = save_policy(Policy(MIXED.sub_policies), tmp_path / "lost.yaml")  # no space anywhere
    with pytest.raises(SpaceError, match="cannot tell which space"):
        load_augment(lost)
    assert load_augment(lost, base=NO_BASE, image_size=32).num_classes is None


def test_broken_schedules_are_refused_in_one_line(tmp_path) -> None:
    path = tmp_path / "schedule.json"
    for data, problem in (({"format": "augsearch-schedule", "epochs": 4}, "a schedule needs"),
                          ({"format": "augsearch-schedule", "epochs": 4, "entries": []},
                           "holds no policy"),
                          ({"format": "augsearch-schedule", "epochs": 4, "entries": [
                              {"epochs": [0, 4], "policy": {"format": "other"}}]},
                           r"entries\[0\]\.policy: not an augsearch policy")):
        path.write_text(json.dumps(data), encoding="utf-8")
        with pytest.raises(SpaceError, match=problem) as err:
            load_augment(path, space="cifar10")
        assert "\n" not in str(err.value)


def test_ops_without_a_batched_kernel_are_refused_naming_them(tmp_path, monkeypatch) -> None:
    path = save_policy(FOUND, tmp_path / "best_policy.yaml")
    fewer = {name: op for name, op in BATCHED.items() if name not in ("Equalize", "Solarize")}
    monkeypatch.setattr(augment, "BATCHED", fewer)
    with pytest.raises(SpaceError, match=r"op\(s\) Equalize, Solarize have no batched kernel") \
            as err:
        load_augment(path)
    assert "\n" not in str(err.value) and "albumentations export" in str(err.value)


# ---------------------------------------------------------------- the albumentations export


def _through_both(tmp_path, device: torch.device) -> tuple[dict, dict]:
    """1,536 real images through the module (batches of 128 on `device`) and through
    `albumentations.load` of the export of the same policy: per-image statistics of each."""
    policy = Policy(MIXED.sub_policies, provenance={"space": "cifar10"})
    save_policy(policy, tmp_path / "best_policy.yaml")
    export_albumentations(policy, load_space("cifar10").child.base_augmentation, 32,
                          tmp_path / "best_policy.json")
    rgb, _ = _real_images(384, seed=1)
    source = np.tile(rgb, (4, 1, 1, 1))
    exported = A.load(str(tmp_path / "best_policy.json"), data_format="json")
    exported.set_random_seed(0)
    reference = np.stack([exported(image=i)["image"] for i in source])
    aug = load_augment(tmp_path / "best_policy.yaml", seed=0)
    x = torch.from_numpy(source).permute(0, 3, 1, 2).contiguous().to(device)
    ours = torch.cat([aug(x[i:i + 128]) for i in range(0, len(x), 128)])
    assert ours.device.type == device.type and ours.dtype == torch.uint8
    return (_statistics(ours.permute(0, 2, 3, 1).cpu().numpy(), source),
            _statistics(reference, source))


def assert_same_distribution(ours: dict, theirs: dict) -> None:
    """Each per-image statistic: two-sample KS p > 0.001 and means within 4 standard errors
    (the parity suite's whole-policy test)."""
    for key in ours:
        a, b = ours[key], theirs[key]
        assert ks_2samp(a, b).pvalue > 1e-3, key
        error = np.sqrt(a.var() / len(a) + b.var() / len(b))
        assert abs(a.mean() - b.mean()) <= 4 * error + 1e-9, key


def test_the_module_matches_the_albumentations_export_in_distribution(tmp_path) -> None:
    assert_same_distribution(*_through_both(tmp_path, torch.device("cpu")))


# ---------------------------------------------------------------- modes, dtypes, determinism


def test_same_seed_same_batches_and_each_epoch_repeats(tmp_path) -> None:
    path = save_policy(FOUND, tmp_path / "best_policy.yaml")
    x, y = (_levels(32) * 255).to(torch.uint8), torch.arange(32) % 10
    one, two = load_augment(path, seed=5), load_augment(path, seed=5)
    first = [one(x, y) for _ in range(3)]
    again = [two(x, y) for _ in range(3)]
    for (a, ta), (b, tb) in zip(first, again, strict=True):
        assert torch.equal(a, b) and torch.equal(ta, tb)
    assert not torch.equal(first[0][0], first[1][0])  # the stream moves on within an epoch
    one.set_epoch(0)
    assert torch.equal(one(x, y)[0], first[0][0])  # an epoch's draws repeat
    one.set_epoch(1)
    assert not torch.equal(one(x, y)[0], first[0][0])
    assert not torch.equal(load_augment(path, seed=6)(x, y)[0], first[0][0])


def test_dtypes_shapes_and_eval_mode() -> None:
    aug = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    x = (_levels(16) * 255).to(torch.uint8)
    out, soft = aug(x, torch.arange(16) % 10)
    assert out.dtype == torch.uint8 and out.shape == x.shape and soft.shape == (16, 10)
    for dtype in (torch.float32, torch.float16):
        unit, _ = aug(x.to(dtype) / 255.0, torch.arange(16) % 10)
        assert unit.dtype == dtype and 0 <= float(unit.min()) and float(unit.max()) <= 1
    grey, _ = aug((_levels(16, channels=1) * 255).to(torch.uint8), torch.arange(16) % 10)
    assert grey.shape == (16, 1, 32, 32)
    pairing = PolicyAugment(Policy(MIXED.sub_policies, BatchOps(sample_pairing=0.5)),
                            base=BaseAug(), image_size=32)
    assert pairing(x).shape == x.shape  # keeps each image's label: no targets needed
    aug.eval()
    labels = torch.arange(16) % 10
    same, onehot = aug(x, labels)
    assert same is x and torch.equal(onehot.argmax(1), labels)
    assert aug(x) is x


def test_bad_targets_are_refused() -> None:
    aug = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    x = (_levels(8) * 255).to(torch.uint8)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\)"):
        aug(x, torch.full((8,), 10))
    with pytest.raises(ValueError, match="N integer labels or N×K soft targets"):
        aug(x, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        PolicyAugment(FOUND, base=None, image_size=32)(x, torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match="N×C×32×32"):
        aug(x[:, :, :16, :16], torch.zeros(8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mixup/cutmix mix the targets.*augment\(x, targets\)"):
        aug(x)


# ---------------------------------------------------------------- batch ops


def _mixed(ops: BatchOps, n: int = 10, seed: int = 0):
    """n float images of whole levels, label k for image k, through the batch ops alone."""
    aug = PolicyAugment(Policy((), ops), base=NO_BASE, image_size=32, num_classes=n, seed=seed)
    x = _levels(n, seed=seed)
    out, soft = aug(x, torch.arange(n))
    return x, out, soft


def _partners(soft: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's own weight and its partner (itself where it drew itself), from targets whose
    label k is image k's."""
    own = soft.diagonal()
    other = soft - torch.diag(own)
    partner = torch.where(other.max(1).values > 0, other.argmax(1), torch.arange(len(soft)))
    return own, partner


@pytest.mark.parametrize("seed", range(4))
def test_mixup_mixes_images_and_targets_with_one_lam(seed) -> None:
    x, out, soft = _mixed(BatchOps(mixup_alpha=0.4), seed=seed)
    assert torch.allclose(soft.sum(1), torch.ones(10))
    own, partner = _partners(soft)
    moved = partner != torch.arange(10)
    assert moved.any()
    lam = own[moved][0]
    assert torch.allclose(own[moved], lam.expand(int(moved.sum())))
    expected = lam * x + (1 - lam) * x[partner]
    assert torch.allclose(out, expected, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_cutmix_pastes_one_box_whose_area_is_the_partners_weight(seed) -> None:
    x, out, soft = _mixed(BatchOps(cutmix_alpha=1.0), seed=seed)
    assert torch.allclose(soft.sum(1), torch.ones(10))
    own, partner = _partners(soft)
    boxes = []
    for i in range(10):
        if partner[i] == i:
            assert torch.equal(out[i], x[i]) and own[i] == 1
            continue
        pasted = (out[i] == x[partner[i]]).all(0) & (out[i] != x[i]).any(0)
        assert torch.equal(out[i][:, ~pasted], x[i][:, ~pasted])
        rows, cols = pasted.any(1).nonzero().squeeze(1), pasted.any(0).nonzero().squeeze(1)
        box = (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) \
            if len(rows) else None
        if box is not None:
            assert int(pasted.sum()) == (box[1] - box[0] + 1) * (box[3] - box[2] + 1)
        boxes.append(box)
        assert abs(float(own[i]) - (1 - int(pasted.sum()) / 1024)) < 1e-6
    assert len(set(boxes)) <= 1  # one box per batch


def test_sample_pairing_averages_with_a_partner_and_keeps_the_own_target() -> None:
    x, out, soft = _mixed(BatchOps(sample_pairing=1.0), n=16)
    assert torch.equal(soft, torch.eye(16))
    averages = 0.5 * (x.unsqueeze(1) + x.unsqueeze(0))  # [i, j]: image i with partner j
    for i in range(16):
        assert any(torch.allclose(out[i], averages[i, j], atol=1e-6) for j in range(16)), i


def _lams(ops: BatchOps, draws: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """The weight of each image's own target in `draws` batches of 16 32×32 images (the module
    applying them to targets; `draw_mix`'s own lam under other draws). One torch thread: tiny
    ops on a busy machine."""
    eye, zeros, d = torch.eye(16), torch.zeros(16, 1, 32, 32), np.random.default_rng(11)
    with cpu_threads(torch.device("cpu"), 1):
        ours = [float(mix_on_device(zeros, eye, ops, d)[1].diagonal().min())
                for _ in range(draws)]
    rng = np.random.default_rng(12)
    theirs = [draw_mix(16, 32, 32, ops, rng).lam for _ in range(draws)]
    return np.array(ours), np.array(theirs)


@pytest.mark.parametrize("ops", [BatchOps(mixup_alpha=0.4), BatchOps(cutmix_alpha=1.0),
                                 BatchOps(mixup_alpha=0.2, cutmix_alpha=1.0)],
                         ids=["mixup", "cutmix", "both"])
def test_lam_has_draw_mixs_distribution(ops) -> None:
    ours, theirs = _lams(ops)
    assert ks_2samp(ours, theirs).pvalue > 1e-3
    if ops.cutmix_alpha == 0:  # mixup alone: Beta(alpha, alpha) itself
        assert kstest(ours, beta_dist(ops.mixup_alpha, ops.mixup_alpha).cdf).pvalue > 1e-3


def test_sample_pairing_picks_images_at_its_rate() -> None:
    ops, d = BatchOps(sample_pairing=0.3), np.random.default_rng(2)
    x = _levels(64)
    with cpu_threads(torch.device("cpu"), 1):
        changed = [float((mix_on_device(x, None, ops, d)[0] != x).flatten(1).any(1).float()
                         .mean()) for _ in range(200)]
    # an image paired with itself is unchanged: rate 0.3 * (1 - 1/64)
    assert np.mean(changed) == pytest.approx(0.3 * 63 / 64, abs=0.01)


def test_a_uint8_batch_is_mixed_and_rounded_to_levels() -> None:
    aug = PolicyAugment(Policy((), BatchOps(mixup_alpha=0.4)), base=NO_BASE, image_size=32,
                        num_classes=10)
    x = _levels(10)
    as_float, _ = aug(x, torch.arange(10))
    aug.set_epoch(0)
    as_uint8, _ = aug((x * 255).round().to(torch.uint8), torch.arange(10))
    assert as_uint8.dtype == torch.uint8
    assert torch.equal(as_uint8, (as_float * 255).round().to(torch.uint8))


# ---------------------------------------------------------------- the batch's device


def test_the_module_stays_on_the_batch_device() -> None:
    """All batch ops on, a schedule of two policies, uint8 and float, labels and soft targets:
    no call mixes devices, nothing is read back (meta holds no data), and one thing moves per
    batch: the batch ops' plan, drawn on the host."""
    second = Policy((SubPolicy((Op("ShearX", 0.5, 0.9), Op("Sharpness", 0.4, 0.5))),), ALL_MIX)
    aug = PolicyAugment([(0, FOUND), (2, second)], base=BaseAug(), image_size=32,
                        num_classes=10)
    x = torch.empty(16, 3, 32, 32, dtype=torch.uint8, device=META)
    labels = torch.empty(16, dtype=torch.long, device=META)
    for epoch in (0, 2):
        aug.set_epoch(epoch)
        aug(x, labels)  # the pipeline's per-strength caches
        with OneDevice() as check:
            out, soft = aug(x, labels)
            unit, mixed = aug(x.float(), torch.empty(16, 10, device=META))
        assert out.device == unit.device == soft.device == mixed.device == META
        assert out.dtype == torch.uint8 and soft.shape == (16, 10)
        assert len(check.moves) == 2 and all("cpu -> meta" in m for m in check.moves), check.moves


def test_targets_on_another_device_are_refused() -> None:
    aug = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    x = torch.empty(4, 3, 32, 32, dtype=torch.uint8, device=META)
    with pytest.raises(ValueError, match="targets are on cpu but the batch is on meta"):
        aug(x, torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------- normalised batches


PLAIN = Policy(MIXED.sub_policies)  # no batch ops: forward(x) alone is allowed
MEAN, STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_a_normalised_float_batch_is_refused_on_every_cpu_batch() -> None:
    aug = PolicyAugment(PLAIN, base=BaseAug(), image_size=32)
    x = _levels(8)
    normalised = (x - 0.5) / 0.25
    for _ in range(2):  # every CPU batch, not only the first
        with pytest.raises(ValueError, match=r"a float batch must hold values in \[0, 1\], got "
                                             r"values in \[-2, 2\] \(a normalised batch\?\); "
                                             r"augment before normalising, or pass mean= and "
                                             r"std=") as err:
            aug(normalised)
        assert "\n" not in str(err.value)
        assert aug(x).shape == x.shape
    with pytest.raises(ValueError, match=r"got values in \[nan, nan\]"):
        aug(torch.full_like(x, float("nan")))
    assert aug((x * (1 + 1e-6)).clamp(max=1 + 1e-6)).shape == x.shape  # rounding is no error
    aug.eval()
    assert aug(normalised) is normalised  # eval passes every batch through


def test_mean_and_std_unnormalise_augment_and_normalise_again(tmp_path) -> None:
    x, y = _levels(16), torch.arange(16) % 10
    plain = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, seed=3)
    normed = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, seed=3,
                           mean=MEAN, std=STD)
    out, soft = plain(x, y)
    out_normed, soft_normed = normed(_normalise(x), y)
    assert torch.allclose(out_normed, _normalise(out), atol=1e-5)
    assert torch.equal(soft, soft_normed)
    plain.set_epoch(0)
    normed.set_epoch(0)
    uint8 = (x * 255).round().to(torch.uint8)  # a uint8 batch is levels: mean/std do not apply
    assert torch.equal(normed(uint8, y)[0], plain(uint8, y)[0])
    with pytest.raises(ValueError, match=r"un-normalised with the mean and std given holds "
                                         r"values in \[-\d"):
        PolicyAugment(PLAIN, base=None, image_size=32, mean=0.0, std=1.0)(_normalise(x))
    path = save_policy(FOUND, tmp_path / "best_policy.yaml")
    loaded = load_augment(path, mean=MEAN, std=STD, seed=3)
    assert loaded.mean == MEAN and loaded.std == STD
    assert torch.allclose(loaded(_normalise(x), y)[0], out_normed)


@pytest.mark.parametrize("mean, std, problem", [
    (0.5, None, "mean and std go together"),
    ((0.5, 0.5), (0.2,), "as many finite values each"),
    (0.5, 0.0, "every std above 0"),
    (float("nan"), 1.0, "finite"),
    ("a", "b", "as many finite values each"),
])
def test_bad_normalisations_are_refused_in_one_line(mean, std, problem) -> None:
    with pytest.raises(ValueError, match=problem) as err:
        PolicyAugment(PLAIN, base=None, image_size=32, mean=mean, std=std)
    assert "\n" not in str(err.value)
    two = PolicyAugment(PLAIN, base=None, image_size=32, mean=(0.5, 0.5), std=(0.2, 0.2))
    with pytest.raises(ValueError, match="mean and std have 2 values but the batch has 3 "
                                         "channels"):
        two(_levels(4))


# ---------------------------------------------------------------- checkpoints


def test_a_checkpoint_continues_the_same_draws(tmp_path) -> None:
    """Three batches; the state after the first, restored into a fresh module (another seed,
    epoch 0), gives the next two batches exactly."""
    x, y = (_levels(32) * 255).to(torch.uint8), torch.arange(32) % 10
    one = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, seed=5)
    one.set_epoch(2)
    one(x, y)
    torch.save(one.state_dict(), tmp_path / "augment.pt")
    rest = [one(x, y) for _ in range(2)]
    fresh = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    fresh.load_state_dict(torch.load(tmp_path / "augment.pt", weights_only=True))
    assert (fresh.seed, fresh.epoch) == (5, 2)
    for a, b in zip(rest, [fresh(x, y) for _ in range(2)], strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    fresh.set_epoch(3)  # a new epoch reseeds: as the uninterrupted module's
    one.set_epoch(3)
    assert torch.equal(fresh(x, y)[0], one(x, y)[0])
    unused, reference = (PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10,
                                       seed=5) for _ in range(2))
    unused.set_epoch(2)
    reference.set_epoch(2)
    again = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    again.load_state_dict(unused.state_dict())  # saved before any batch: the epoch's start
    assert torch.equal(again(x, y)[0], reference(x, y)[0])
    with pytest.raises(ValueError, match="not a PolicyAugment state"):
        again.load_state_dict({"_extra_state": {"seed": 1}})


# ---------------------------------------------------------------- labels out of range


def test_out_of_range_labels_become_nan_rows_without_a_host_read() -> None:
    labels = torch.tensor([0, 3, -1, 10, 9])
    soft = soft_labels(labels, 10)
    inside = torch.tensor([0, 1, 4])
    assert torch.equal(soft[inside], torch.nn.functional.one_hot(labels[inside], 10).float())
    assert soft[2].isnan().all() and soft[3].isnan().all()
    assert torch.nn.functional.cross_entropy(torch.zeros(5, 10), soft).isnan()
    meta = torch.empty(16, dtype=torch.long, device=META)
    with OneDevice() as check:
        rows = soft_labels(meta, 10)
    assert rows.device == META and rows.shape == (16, 10) and check.moves == []
    aug = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\), got -1..10"):
        aug((_levels(5) * 255).to(torch.uint8), labels)  # the CPU still refuses them


def test_normalised_batches_stay_on_the_batch_device() -> None:
    """mean/std moved to the batch's device once (the first call), then nothing moves but each
    batch's batch-ops plan; a meta batch has no values to check and is not read."""
    aug = PolicyAugment(FOUND, base=BaseAug(), image_size=32, num_classes=10, mean=MEAN, std=STD)
    x = torch.empty(16, 3, 32, 32, device=META)
    labels = torch.empty(16, dtype=torch.long, device=META)
    aug(x, labels)
    with OneDevice() as check:
        out, soft = aug(x, labels)
        half, _ = aug(x.half(), labels)
    assert out.device == soft.device == META and out.dtype == torch.float32
    assert half.dtype == torch.float16
    assert len(check.moves) == 2 and all("cpu -> meta" in m for m in check.moves), check.moves
