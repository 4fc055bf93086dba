"""The declarative search space: pydantic models of a space YAML file and its loader.

A space says what is searched (which ops, in which policy family: sub-policies, RandAugment or
TrivialAugment, `spaces.families`; batch ops), on what data and child model the policies are
judged, how the reward is computed, and the search's defaults. Unknown keys are refused and
every error names the file, the key path and the fix.
"""

from __future__ import annotations

import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from spaces.errors import SpaceError, loop_message, symlink_loop
from spaces.families import DEFAULT_FAMILY, get_family
from spaces.families.randaugment import RandAugmentSpec
from spaces.families.trivialaugment import TrivialAugmentSpec
from spaces.fields import OptionalRange, Strict, UnitRange, check_range


def _kind_name(value: str) -> str:
    """A reward kind's name: lower-case letters, digits and underscores."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", value):
        raise ValueError(f"a reward kind's name is lower-case letters, digits and underscores, "
                         f"got {value!r}; use child_training, density_matching or a registered "
                         f"kind's name")
    return value


RewardKindName = Annotated[str, AfterValidator(_kind_name)]


class DatasetSpec(Strict):
    """Which data the children train on and how it is split for the search."""

    name: Literal["digits", "cifar10", "cifar100", "svhn", "npz", "folder"]
    path: str | None = Field(None, description="file or folder for npz/folder datasets (or "
                                               "--data)")
    train_size: int = Field(gt=0, description="images in the search's training subset")
    val_pool_size: int = Field(gt=0, description="pool each trial draws its validation sample from")
    audit_size: int = Field(ge=0, description="held-out images the reward never sees")
    image_size: int = Field(ge=8, le=512)
    channels: Literal[1, 3]
    num_classes: int = Field(ge=2)
    resize: bool = Field(False, description="resize the data's images (and convert gray <-> "
                                            "RGB) to image_size x channels; off: a mismatch is "
                                            "an error")
    labelled_size: int | None = Field(None, ge=0, description="reward.kind: self_supervised: "
                                      "how many train-split images keep their labels for the "
                                      "probe (a stratified draw); the rest are used unlabelled; "
                                      "0: no labels at all (reward.ssl.score: rotation); "
                                      "default: all")
    unlabelled: str | None = Field(None, description="reward.kind: self_supervised: more "
                                   "images for pre-training only: an .npz holding x (or "
                                   "x_train) or an image folder (labels and class folders "
                                   "ignored)")


class OptimizerSpec(Strict):
    name: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, lt=1)
    nesterov: bool = True
    label_smoothing: float = Field(0.0, ge=0, lt=1)


class BaseAug(Strict):
    """Augmentation every policy is added to (the standard CIFAR crop and flip)."""

    crop: bool = True
    crop_padding: int = Field(4, ge=0, le=64)
    flip: bool = True


# The child models `children.models.build_model` knows (a test keeps the two lists equal; the
# schema cannot import the registry, which needs torch).
CHILD_MODELS = ("basiccnn", "resnet_fast", "wrn_28_10", "wrn_40_2")


class ChildSpec(Strict):
    """The child model whose validation accuracy is a policy's reward."""

    model: str = "basiccnn"
    width: int = Field(32, ge=4, le=1024, description="channel width of the child model")
    epochs: int = Field(ge=1, le=1000)
    batch_size: int = Field(128, ge=1, le=8192)
    optimizer: OptimizerSpec = OptimizerSpec()
    schedule: Literal["cosine", "onecycle", "constant"] = "onecycle"
    base_augmentation: BaseAug = BaseAug()
    augmentation: Literal["auto", "albumentations", "batched"] = Field(
        "auto", description="how training batches are augmented: per image through "
                            "albumentations, or whole batches of tensors on the child's device "
                            "(same meaning; auto picks the faster for the device)")

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str) -> str:
        if model not in CHILD_MODELS:
            close = difflib.get_close_matches(model, CHILD_MODELS, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown child model {model!r}; known models: "
                             f"{', '.join(CHILD_MODELS)}{hint}")
        return model


class OpChoice(Strict):
    """An op that may appear in a policy, with optional magnitude bounds."""

    name: str
    magnitude: UnitRange = (0.0, 1.0)

    @field_validator("name")
    @classmethod
    def _known_op(cls, name: str) -> str:
        from spaces.ops import get_op

        return get_op(name).name


class BatchOpsSpec(Strict):
    """Batch-level ops; each is a searched range [low, high] or null (off)."""

    mixup_alpha: OptionalRange = None
    cutmix_alpha: OptionalRange = None
    sample_pairing: OptionalRange = None

    @model_validator(mode="after")
    def _ranges(self) -> BatchOpsSpec:
        for name, hi in (("mixup_alpha", 10.0), ("cutmix_alpha", 10.0), ("sample_pairing", 1.0)):
            value = getattr(self, name)
            if value is not None:
                check_range(value[0], value[1], name, hi=hi)
        return self


def _op_choice(value: Any) -> Any:
    return {"name": value} if isinstance(value, str) else value


class PolicySpec(Strict):
    """The shape of a policy and what it may contain.

    `family` (a plug-in of `spaces.families`) turns a few searched numbers into a policy over
    `ops`: `subpolicies` (the default) searches `sub_policies` x `ops_per_sub_policy` ops with
    their magnitudes and (`search_probability`) probabilities in `probability`; `randaugment`
    and `trivialaugment` search the numbers in their own section (`policy.randaugment`,
    `policy.trivialaugment`; defaults when absent) and need none of those keys.
    """

    family: str = Field(DEFAULT_FAMILY, description="the policy family: subpolicies, "
                        "randaugment, trivialaugment or another registered one")
    sub_policies: int = Field(5, ge=1, le=64)
    ops_per_sub_policy: int = Field(2, ge=1, le=8)
    search_probability: bool = True
    probability: UnitRange = (0.0, 1.0)
    ops: list[Annotated[OpChoice, Field()]]
    batch_ops: BatchOpsSpec = BatchOpsSpec()
    randaugment: RandAugmentSpec | None = Field(None, description="family: randaugment's "
                                                "ranges (defaults when absent)")
    trivialaugment: TrivialAugmentSpec | None = Field(None, description="family: "
                                                      "trivialaugment's ranges (defaults when "
                                                      "absent)")

    @field_validator("family")
    @classmethod
    def _known_family(cls, family: str) -> str:
        return get_family(family).name

    @model_validator(mode="after")
    def _family_keys(self) -> PolicySpec:
        for name in FAMILY_SECTIONS:
            if getattr(self, name) is not None and self.family != name:
                raise ValueError(f"`policy.{name}` applies to `policy.family: {name}`, but "
                                 f"family is {self.family}; set `family: {name}` or remove "
                                 f"`{name}`")
        if self.family != DEFAULT_FAMILY:
            changed = [k for k in SUBPOLICY_KEYS
                       if getattr(self, k) != PolicySpec.model_fields[k].default]
            if changed:
                raise ValueError(f"`policy.{changed[0]}` applies to `policy.family: "
                                 f"{DEFAULT_FAMILY}`, but family is {self.family}; remove it "
                                 f"(the family's own settings are `policy.{self.family}`)")
        return self

    @field_validator("ops", mode="before")
    @classmethod
    def _short_form(cls, value: Any) -> Any:
        return [_op_choice(v) for v in value] if isinstance(value, list) else value

    @field_validator("ops")
    @classmethod
    def _distinct(cls, ops: list[OpChoice]) -> list[OpChoice]:
        if not ops:
            raise ValueError("at least one op must be listed")
        seen: set[str] = set()
        for op in ops:
            if op.name in seen:
                raise ValueError(f"op '{op.name}' is listed twice; list each op once")
            seen.add(op.name)
        return ops


# Each family's settings section, and the keys only the sub-policies family reads.
FAMILY_SECTIONS = ("randaugment", "trivialaugment")
SUBPOLICY_KEYS = ("sub_policies", "ops_per_sub_policy", "search_probability", "probability")


class DensitySpec(Strict):
    """Density matching (Fast AutoAugment, Lim et al. 2019): the settings of
    `reward.kind: density_matching`.

    The search's train split is cut into `folds` stratified folds; a child is trained once per
    fold on the rest with the base augmentation only, before the search. A trial applies its
    policy (after the base crop/flip) to each fold's `held_out` images, `copies` augmented copies
    of each, and scores that fold's model on them; the reward is the mean over folds of the
    `score`: accuracy, or the negative log-likelihood of the true class (`nll`, reported as
    -NLL so higher is better). `final: merged` proposes Fast AutoAugment's merge of the `top`
    policies of each fold (their sub-policies in one longer policy), `single` the best trial.
    """

    folds: int = Field(5, ge=2, le=20, description="fold models (K)")
    held_out: float | None = Field(None, gt=0, lt=1, description="share of the train split "
                                   "each fold model never trains on and is scored on (default "
                                   "1/folds: every image held out once)")
    copies: int = Field(2, ge=1, le=64, description="augmented copies of each held-out image")
    score: Literal["accuracy", "nll"] = Field("nll", description="nll: as valid as accuracy and "
                                              "more reliable per image scored "
                                              "(docs/BENCHMARKS.md)")
    top: int = Field(3, ge=1, le=100, description="best policies of each fold merged")
    final: Literal["merged", "single"] | None = Field(
        None, description="merged or single (default: merged under `policy.family: "
        "subpolicies`, single under a family that draws its ops per image)")

    def final_under(self, family: str) -> str:
        """`final`, or its default under the space's policy family."""
        return self.final or ("merged" if family == DEFAULT_FAMILY else "single")

    def held_out_share(self) -> float:
        """The share of the train split each fold holds out."""
        return self.held_out if self.held_out is not None else 1.0 / self.folds

    def held_out_size(self, train_size: int) -> int:
        """Images each fold model is scored on (and never trained on)."""
        return max(1, round(train_size * self.held_out_share()))


class SSLSpec(Strict):
    """Self-supervised views (`reward.kind: self_supervised`, SimCLR and SelfAugment): the
    settings of contrastive pre-training and of how its frozen features are scored.

    The child's trunk (its model without the last linear layer, `child.epochs`, `batch_size`,
    `optimizer`, `schedule`) is pre-trained with NT-Xent at `temperature` through a projection
    head (`hidden_dim`, default the trunk's width, then `projection_dim`) on two views of each
    image drawn from the trial's policy. `score`: `probe`, a linear classifier fitted with
    `probe_steps` full-batch steps on the labelled images (dataset.labelled_size) and scored on
    the validation pool; `knn`, a weighted `knn_k`-nearest-neighbour vote among them; `rotation`
    (SelfAugment, no labels), a linear classifier of the 4 rotations fitted on
    `rotation_images` images of the pre-training pool and scored on the rotated validation pool.
    """

    score: Literal["probe", "knn", "rotation"] = "probe"
    temperature: float = Field(0.5, gt=0, le=10)
    projection_dim: int = Field(64, ge=2, le=8192)
    hidden_dim: int | None = Field(None, ge=2, le=8192)
    probe_steps: int = Field(300, ge=1, le=100_000)
    knn_k: int = Field(20, ge=1, le=10_000)
    rotation_images: int = Field(1000, ge=4, le=1_000_000)


class RewardSpec(Strict):
    """How a policy becomes a reward: `kind: child_training` (the default) trains a child under
    it; `kind: density_matching` scores it with children trained once before the search
    (`density`, see DensitySpec). A kind is a plug-in of the search (`search.rewards`), so the
    schema only checks that `kind` is a name; the search's preparation refuses one it does not
    have, listing those it has (spaces/ never imports search/). The rest of this section is
    about child training.

    `validation: pool` scores every trial on the whole validation pool; `fresh` on a sample of
    `val_sample_size` drawn afresh per trial (DeepAugment). `epochs: last` averages the last
    `last_epochs` epochs, `best` the `last_epochs` best ones (DeepAugment). With
    `common_random_numbers` every trial of a search starts from the same initial weights, batch
    order and dropout masks (from the search seed), so rewards differ by the policy, not the draw.
    Validation data is scored only where the reward or a scheduler reads it (`scored`): on a small
    train split, scoring it every epoch would cost more than the training.
    """

    kind: RewardKindName = Field("child_training", description="how a policy becomes a "
                                 "reward: child_training, density_matching or another kind "
                                 "registered with search.rewards (checked when a search is "
                                 "prepared)")
    density: DensitySpec | None = Field(None, description="density matching's settings "
                                        "(kind: density_matching; defaults when absent)")
    ssl: SSLSpec | None = Field(None, description="self-supervised pre-training's settings "
                                "(kind: self_supervised; defaults when absent)")
    metric: Literal["val_accuracy"] = "val_accuracy"
    last_epochs: int = Field(3, ge=1)
    epochs: Literal["last", "best"] = "last"
    validation: Literal["pool", "fresh"] = "pool"
    val_sample_size: int | None = Field(None, gt=0, description="fresh validation sample per trial")
    max_train_val_gap: float | None = Field(None, gt=0, le=1)
    common_random_numbers: bool = True
    eval_every: int | None = Field(None, ge=1, description="score validation data every n "
                                   "epochs before the reward's epochs (default: ~10 times a run)")

    def interval(self, epochs: int) -> int:
        """Epochs between validation scores before the reward's own epochs."""
        return self.eval_every or max(1, epochs // 10)

    def scored(self, epoch: int, epochs: int) -> bool:
        """Whether 0-based `epoch` of `epochs` is scored on the validation data: the reward's
        epochs (every epoch for `epochs: best`) and every `interval` epochs before them."""
        if self.epochs == "best" or epoch >= epochs - self.last_epochs:
            return True
        return (epoch + 1) % self.interval(epochs) == 0

    @property
    def density_matching(self) -> bool:
        return self.kind == DENSITY_MATCHING

    def matching(self) -> DensitySpec:
        """Density matching's settings (its defaults when the section is absent)."""
        return self.density or DensitySpec()

    @property
    def self_supervised(self) -> bool:
        return self.kind == SELF_SUPERVISED

    def contrastive(self) -> SSLSpec:
        """Self-supervised pre-training's settings (its defaults when the section is absent)."""
        return self.ssl or SSLSpec()

    @model_validator(mode="after")
    def _sample_size(self) -> RewardSpec:
        if self.validation == "fresh" and self.val_sample_size is None:
            raise ValueError("`validation: fresh` needs `val_sample_size` (the images each trial "
                             "draws from the validation pool); add it or use `validation: pool`")
        if self.density is not None and not self.density_matching:
            raise ValueError("`density` applies to `kind: density_matching`, but kind is "
                             f"{self.kind}; set `kind: density_matching` or remove `density`")
        if self.ssl is not None and not self.self_supervised:
            raise ValueError("`ssl` applies to `kind: self_supervised`, but kind is "
                             f"{self.kind}; set `kind: self_supervised` or remove `ssl`")
        return self


DENSITY_MATCHING = "density_matching"
SELF_SUPERVISED = "self_supervised"


class SearchDefaults(Strict):
    """Search settings; every one can be overridden on the command line.

    `confirm` policies (the best by reward) and the base are trained under `confirm_seeds` fresh
    seeds after the search (0 turns confirmation off); the best is exported only when its margin
    over the base on the audit images has a simultaneous 95% interval above 0 (Bonferroni over
    `confirm`; the interval counts the seeds and the images), else the base
    (`search.stages.verdict`). What 8 seeds can find follows from the measured noise (digits'
    child: paired SD 0.0229, image term 0.0026, docs/BENCHMARKS.md "Confirmation noise"): a
    true margin of 0.032 with 80% power once the policy is among the 2 best the digits space
    confirms; every confirmation prints its own from its measured noise. Fewer than 2 give no
    interval.
    """

    trials: int = Field(32, ge=1)
    confirm: int = Field(3, ge=0)
    confirm_seeds: int = Field(8, ge=1)
    # Before the search: the reference arms at this many fresh seeds, to measure whether any
    # policy beyond the base can beat it under this child (search.stages.headroom); 0: off.
    headroom_seeds: int = Field(3, ge=0)
    concurrency: int | None = Field(None, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    # Children trained together in one process as one grouped network (children.grouped); a
    # cohort is one Tune trial of `cohort` policies, shown as that many trials everywhere.
    cohort: int = Field(1, ge=1)


class Space(Strict):
    """A validated search space."""

    name: str
    description: str = ""
    dataset: DatasetSpec
    child: ChildSpec
    policy: PolicySpec
    reward: RewardSpec
    search: SearchDefaults = SearchDefaults()

    @model_validator(mode="after")
    def _consistent(self) -> Space:
        size = self.reward.val_sample_size
        if size is not None and size > self.dataset.val_pool_size:
            raise ValueError(
                f"`reward.val_sample_size <= dataset.val_pool_size` must hold, but got "
                f"val_sample_size={self.reward.val_sample_size}, "
                f"val_pool_size={self.dataset.val_pool_size}"
            )
        if self.reward.last_epochs > self.child.epochs:
            raise ValueError(
                f"`reward.last_epochs <= child.epochs` must hold, but got "
                f"last_epochs={self.reward.last_epochs}, epochs={self.child.epochs}"
            )
        if self.reward.density_matching:
            _check_density(self)
        _check_self_supervised(self)
        return self

    def replace(self, **changes: Any) -> Space:
        """A copy with top-level sections or nested keys ("child.epochs") changed, re-validated."""
        data = self.model_dump()
        for key, value in changes.items():
            node = data
            *parents, leaf = key.split(".")
            for parent in parents:
                node = node[parent]
            node[leaf] = value
        return _validate(data, f"space {self.name}")


def _check_density(space: Space) -> None:
    """What density matching cannot do: score batch ops, or folds too small to hold a class."""
    batch = [k for k, v in space.policy.batch_ops.model_dump().items() if v is not None]
    if batch:
        raise ValueError(
            f"`reward.kind: density_matching` cannot score batch ops ({', '.join(batch)}): "
            f"they mix pairs of training images and do not exist at inference; set "
            f"`policy.batch_ops: {{}}` or use `reward.kind: child_training`")
    spec, d = space.reward.matching(), space.dataset
    if spec.final == "merged" and space.policy.family != DEFAULT_FAMILY:
        raise ValueError(
            f"`reward.density.final: merged` concatenates the best policies' sub-policies, and "
            f"`policy.family: {space.policy.family}` has none; set `reward.density: {{final: "
            f"single}}` or `policy.family: {DEFAULT_FAMILY}`")
    held = spec.held_out_size(d.train_size)
    if held < d.num_classes or d.train_size - held < d.num_classes:
        raise ValueError(
            f"`reward.density`: each of the {spec.folds} folds holds out {held} of the "
            f"{d.train_size} train images and trains on {d.train_size - held}, but both must "
            f"hold at least dataset.num_classes={d.num_classes}; raise dataset.train_size or "
            f"change reward.density.folds / held_out")


def _check_self_supervised(space: Space) -> None:
    """The data settings only self-supervised views read, and what they cannot do: batch ops
    (no labels to mix), a probe without labels, more labelled images than the train split."""
    d, kind = space.dataset, space.reward.kind
    if not space.reward.self_supervised:
        given = [k for k in ("labelled_size", "unlabelled") if getattr(d, k) is not None]
        if given:
            raise ValueError(f"`dataset.{given[0]}` applies to `reward.kind: self_supervised`, "
                             f"but kind is {kind}; set `reward.kind: self_supervised` or remove "
                             f"`dataset.{given[0]}`")
        return
    batch = [k for k, v in space.policy.batch_ops.model_dump().items() if v is not None]
    if batch:
        raise ValueError(
            f"`reward.kind: self_supervised` cannot use batch ops ({', '.join(batch)}): they mix "
            f"labels, and contrastive pre-training has none; set `policy.batch_ops: {{}}`")
    if d.labelled_size is not None and d.labelled_size > d.train_size:
        raise ValueError(f"`dataset.labelled_size <= dataset.train_size` must hold (the labelled "
                         f"images are part of the train split), but got labelled_size="
                         f"{d.labelled_size}, train_size={d.train_size}")
    score = space.reward.contrastive().score
    if d.labelled_size == 0 and score != "rotation":
        raise ValueError(f"`reward.ssl.score: {score}` fits on labelled images, but "
                         f"dataset.labelled_size is 0 (no labels); use `reward.ssl.score: "
                         f"rotation` (label-free) or give labelled images")
    if space.child.augmentation == "albumentations":
        raise ValueError("`reward.kind: self_supervised` draws its views on the batched path; "
                         "set `child.augmentation: auto` or `batched`")


def builtin_spaces() -> list[str]:
    """Names of the spaces shipped with augsearch."""
    folder = resources.files("spaces")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_space(name_or_path: str | Path) -> Space:
    """Load a built-in space by name or a user's space file by path, validated."""
    path = _resolve(str(name_or_path))
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpaceError(f"{path}: cannot read the space file ({err.strerror}); pass a readable "
                         f"space YAML file or a built-in space name") from None
    except UnicodeDecodeError as err:
        raise SpaceError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save the "
                         f"space file as UTF-8 YAML") from None
    return parse_space(text, str(path))


def parse_space(text: str, source: str) -> Space:
    """Validate YAML text as a space; `source` names it in error messages."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise SpaceError(f"{source}: {where}YAML syntax error: {problem}; fix the YAML there "
                         f"(spaces/digits.yaml shows the layout)") from None
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: a space must be a YAML mapping with keys name, dataset, "
                         f"child, policy, reward (got {type(data).__name__}); start from a "
                         f"built-in space such as spaces/digits.yaml")
    return _validate(data, source)


def _resolve(name: str) -> Path:
    if name.endswith((".yaml", ".yml")) or "/" in name or os.path.lexists(name):
        path = Path(name)
        if symlink_loop(path):
            raise SpaceError(loop_message(path, "space file"))
        if not path.exists():
            raise SpaceError(f"{name}: no such space file; give an existing path or one of the "
                             f"built-in spaces: {', '.join(builtin_spaces())}")
        return path
    if name not in builtin_spaces():
        raise SpaceError(f"unknown space '{name}'; built-in spaces: "
                         f"{', '.join(builtin_spaces())} (or give a path to a .yaml file)")
    return Path(str(resources.files("spaces") / f"{name}.yaml"))


def _validate(data: dict[str, Any], source: str) -> Space:
    try:
        return Space.model_validate(data)
    except SpaceError as err:  # raised by the op registry inside a validator
        raise SpaceError(f"{source}: {err}") from None
    except ValidationError as err:
        raise SpaceError(f"{source}: {_first_error(err)}") from None


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    path = _key_path(first["loc"])
    kind, msg = first["type"], first["msg"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key; remove it or check its spelling"
    if kind == "missing":
        return f"{path}: required key is missing; add it"
    msg = msg.removeprefix("Value error, ")
    extra = f" (and {err.error_count() - 1} more errors)" if err.error_count() > 1 else ""
    given = first.get("input")
    shown = f" (got {given!r})" if kind not in ("value_error",) and _short(given) else ""
    return f"{path}: {msg}{shown}{extra}"


def _short(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None))) and len(repr(value)) < 60


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"
