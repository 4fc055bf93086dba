"""Loss scaling per cohort member (children/scaling.py), checked on the CPU in float32.

The scaler is forced on (on a GPU it is on exactly where fp16 needs it). Its scales are powers
of two, so in float32 a member whose gradients stay finite steps exactly as it would unscaled,
bit for bit: the tests compare with `torch.equal`. An overflow is injected as an inf in one
member's gradient after the backward pass, where fp16 would have put it. The child's optimizer
is the digits space's (SGD, Nesterov momentum, weight decay): a skipped step that only zeroed
the member's gradient would still move its weights through momentum and weight decay.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from children.cohort.grouped import child_state, group_models
from children.cohort.members import _Cohort
from children.models import build_model
from children.optim import make_optimizer
from children.scaling import MemberScaler, mask_grads
from children.tensor_aug import Draws
from children.trainer import Trainer
from spaces.policy import identity_policy
from tests.devicecheck import OneDevice

K = 3
CPU, META = torch.device("cpu"), torch.device("meta")


class _Net:
    """A cohort of K basiccnn children on one fixed batch, its optimizer and a scaler."""

    def __init__(self, spec, scaler: MemberScaler) -> None:
        torch.manual_seed(0)
        self.model = group_models([build_model("basiccnn", 10, 1, 16, 4)] * K)
        self.optimizer = make_optimizer(spec, self.model)
        self.scaler = scaler
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(8, K, 16, 16, generator=g)
        self.y = torch.randint(0, 10, (8,), generator=g)
        self.steps = 0

    def step(self, inject: int | None = None, masks: int | None = None) -> list[bool]:
        """One step as `MemberScaler.backward_step` takes a cohort's, with an inf in member
        `inject`'s gradient; which members stepped. Dropout draws step i's masks in every net
        (or those of step `masks`)."""
        kept = torch.ones(K, dtype=torch.bool)
        torch.manual_seed(self.steps if masks is None else masks)
        self.steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        out = self.model(self.x).view(len(self.y), K, -1)
        losses = torch.stack([F.cross_entropy(out[:, k], self.y) for k in range(K)])
        self.scaler.loss(losses, kept).backward()
        if inject is not None:
            grad = next(self.model.parameters()).grad
            grad.unflatten(0, (K, -1))[inject].view(-1)[0] = torch.inf
        stepped = self.scaler.unscale_(list(self.model.parameters()), kept)
        mask_grads(self.model, stepped)
        self.scaler.step(self.optimizer, stepped)
        self.scaler.update(kept, stepped)
        return stepped.tolist()

    def member(self, k: int) -> list[torch.Tensor]:
        """Member k's parameters and its slices of the optimizer's state, copied (not batch
        norm's running statistics: the forward pass updates them, a skipped step or not, as
        under a lone child's GradScaler)."""
        names = dict(self.model.named_parameters())
        weights = [v for n, v in child_state(self.model, k, K).items() if n in names]
        slots = [s for p in self.model.parameters()
                 for s in self.optimizer.state.get(p, {}).values() if s.shape == p.shape]
        return [t.clone() for t in weights + [s.unflatten(0, (K, -1))[k] for s in slots]]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def _nets(spec, **options) -> tuple[_Net, _Net]:
    return (_Net(spec, MemberScaler(K, CPU, enabled=True, init_scale=2.0**10, **options)),
            _Net(spec, MemberScaler(K, CPU, enabled=False)))


def test_an_overflowing_member_skips_its_step_and_halves_its_scale_alone(digits_space) -> None:
    scaled, plain = _nets(digits_space.child.optimizer)
    assert scaled.step() == plain.step() == [True] * K
    after_one = scaled.member(1)
    assert scaled.step(inject=1) == [True, False, True]
    plain.step()
    assert scaled.scaler.scale.tolist() == [2.0**10, 2.0**9, 2.0**10]
    assert scaled.scaler.good.tolist() == [2, 0, 2]
    for k in (0, 2):  # two steps each, exactly as without scaling
        assert _same(scaled.member(k), plain.member(k)), k
    assert _same(scaled.member(1), after_one)  # weights, momentum: as after its one step
    assert not _same(plain.member(1), after_one)


def test_a_skipped_first_step_leaves_the_member_as_new(digits_space) -> None:
    """The optimizer makes its state at its first step; a member that skipped it has zero
    momentum, as a fresh optimizer's first step makes it, and then steps as a fresh child."""
    scaled, plain = _nets(digits_space.child.optimizer)
    new = scaled.member(0)
    assert scaled.step(inject=0) == [False, True, True]
    plain.step(masks=1)  # the dropout masks of the scaled net's next step
    moved = scaled.member(0)
    weights = len(new)
    assert _same(moved[:weights], new)
    assert all(not s.any() for s in moved[weights:])  # momentum, as yet none
    assert scaled.step() == [True] * K
    assert _same(scaled.member(0), plain.member(0))  # its one step: the unscaled first step


def test_scales_grow_after_growth_interval_good_steps(digits_space) -> None:
    scaled, _ = _nets(digits_space.child.optimizer, growth_interval=2)
    scaled.step()
    assert scaled.scaler.scale.tolist() == [2.0**10] * K
    scaled.step(inject=2)
    assert scaled.scaler.scale.tolist() == [2.0**11, 2.0**11, 2.0**9]
    assert scaled.scaler.good.tolist() == [0, 0, 0]
    scaled.step()
    scaled.step()
    assert scaled.scaler.scale.tolist() == [2.0**12, 2.0**12, 2.0**10]


# ---------------------------------------------------------------- in a cohort


def _cohort(space, splits, dev: torch.device = CPU, scaled: bool = False
            ) -> tuple[_Cohort, Trainer]:
    """A cohort of K (seed 7) and its trainer before any epoch; `scaled`: the scaler forced
    on."""
    run = _Cohort(space.child, space.reward, splits, 7, [11, 12, 13], dev, 2)
    trainer = Trainer(space.child, run, dev, 2)
    if scaled:
        trainer.scaler = MemberScaler(K, dev, enabled=True)
    return run, trainer


def test_the_scaler_is_off_on_the_cpu_and_changes_nothing_when_on(digits_space,
                                                                  digits_splits) -> None:
    """Forced on with nothing overflowing, an epoch of a cohort ends with the weights and
    losses it has with the scaler off (the CPU's setting), bit for bit."""
    (_, off), (_, on) = (_cohort(digits_space, digits_splits),
                         _cohort(digits_space, digits_splits, scaled=True))
    assert not off.scaler.enabled
    policies = [identity_policy()] * K
    one, two = off.train_epoch(0, policies), on.train_epoch(0, policies)
    assert (one.losses, one.accuracies, one.images) == (two.losses, two.accuracies, two.images)
    for name, value in off.model.state_dict().items():
        assert torch.equal(value, on.model.state_dict()[name]), name
    assert all(s.scaler is None for s in off.snapshot(policies))


def test_the_scales_travel_in_the_members_states(digits_space, digits_splits) -> None:
    """Each member's TrainState carries its scale in a lone child's GradScaler layout, and a
    resumed cohort takes them back."""
    _, trainer = _cohort(digits_space, digits_splits, scaled=True)
    trainer.scaler.scale.copy_(torch.tensor([2.0**10, 2.0**7, 2.0**12]))
    trainer.scaler.good.copy_(torch.tensor([5, 0, 3], dtype=torch.int32))
    states = trainer.snapshot([identity_policy()] * K)
    assert [s.scaler["scale"] for s in states] == [2.0**10, 2.0**7, 2.0**12]
    lone = torch.amp.GradScaler("cpu")
    lone.load_state_dict(copy.deepcopy(states[1].scaler))
    assert lone.get_scale() == 2.0**7
    run, resumed = _cohort(digits_space, digits_splits, scaled=True)
    run.restore(resumed, states)
    assert resumed.scaler.scale.tolist() == [2.0**10, 2.0**7, 2.0**12]
    assert resumed.scaler.good.tolist() == [5, 0, 3]


def test_a_scaled_cohort_step_stays_on_the_device_and_never_syncs(digits_space,
                                                                  digits_splits) -> None:
    """On meta (no data: a host read fails) under OneDevice: the scaler's work in a step moves
    nothing and reads nothing back."""
    space = digits_space.replace(**{"child.augmentation": "batched"})
    run, trainer = _cohort(space, digits_splits, META, scaled=True)
    policies = [identity_policy()] * K
    run.feed.batched(policies[0])(torch.empty(4, 1, 16, 16, dtype=torch.uint8, device=META),
                                  Draws(0, META))
    with OneDevice() as check:
        steps, _inline = run.batches(0, policies)
        first = next(steps)
        setup = list(check.moves)
        loss = trainer._step(first).loss
        trainer._step(next(steps))
    assert loss.device == trainer.scaler.scale.device == META
    assert check.moves == setup, check.moves[len(setup):]


@pytest.mark.parametrize("k", range(K))
def test_a_member_state_loads_into_a_lone_childs_model(digits_space, digits_splits, k) -> None:
    _, trainer = _cohort(digits_space, digits_splits, scaled=True)
    state = trainer.snapshot([identity_policy()] * K)[k]
    build_model("basiccnn", 10, 1, 16, digits_space.child.width).load_state_dict(state.model)
