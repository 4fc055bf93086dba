"""The bad-input corpus: every case is run through a CLI as a user would type it.

Each case asserts the exit code (2), one line on stderr that names the problem and the fix, no
traceback, and that nothing was left behind: the working directory (where the default output
would go) and every directory the case set up are byte-for-byte as before. The data is real
(scikit-learn digits), so a refusal is about the input, not about fake data.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from children.sources import read_digits
from search.evaluate import main as evaluate_main
from search.prepare.options import SearchOptions
from search.prepare.resume import RunRecord
from search.run import main as search_main
from spaces.policy import Op, Policy, SubPolicy, policy_to_dict, save_policy
from spaces.schema import load_space
from tests.conftest import SUBPOLICY_DIGITS, python_path

Setup = Callable[[Path], list[str]]


@dataclass(frozen=True)
class Case:
    name: str
    cli: str  # "search" or "evaluate"
    setup: Setup  # builds the inputs in a temp dir and returns the argv
    expect: str  # a part of the message that names the problem and the fix


# ---------------------------------------------------------------- real inputs


def digits_npz(tmp: Path, name: str = "digits.npz", n: int | None = None, **change) -> Path:
    """scikit-learn's digits as an .npz of 8x8x1 uint8 images (`change` overrides arrays)."""
    raw = read_digits()
    x, y = raw.x_train, raw.y_train
    arrays = {"x_train": x[:1500], "y_train": y[:1500], "x_test": x[1500:], "y_test": y[1500:]}
    if n is not None:
        arrays["x_train"], arrays["y_train"] = x[:n], y[:n]
    arrays.update(change)
    path = tmp / name
    np.savez(path, **arrays)
    return path


def space_file(tmp: Path, name: str = "space.yaml", **changes) -> Path:
    """The built-in digits space as a YAML file, with `changes` ("a.b": value) applied."""
    data = load_space("digits").model_dump(mode="json")
    for key, value in changes.items():
        node = data
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def a_search_dir(tmp: Path) -> Path:
    """An output directory holding a (finished-looking) search record: run.json, space.yaml."""
    out = tmp / "earlier"
    out.mkdir()
    space_file(out, "space.yaml")
    RunRecord.of("digits", "tpe", SearchOptions(seed=0, epochs=3)).write(out)
    return out


def policy_file(tmp: Path, name: str = "best_policy.yaml", **batch) -> Path:
    policy = Policy((SubPolicy((Op("Rotate", 0.3, 0.6), Op("Invert", 0.0, 0.2))),),
                    provenance={"space": "digits"})
    data = policy_to_dict(policy)
    data["batch"].update(batch)
    path = tmp / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def text_file(tmp: Path, name: str, content: str | bytes) -> Path:
    path = tmp / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def symlink_loop(tmp: Path, name: str) -> Path:
    """`name`, a symlink to a symlink back to it: Path.exists() calls it missing."""
    path, other = tmp / name, tmp / f"{name}.link"
    path.symlink_to(other)
    other.symlink_to(path)
    return path


def folder(tmp: Path, name: str = "images") -> Path:
    path = tmp / name
    path.mkdir()
    return path


def out(tmp: Path) -> list[str]:
    return ["--output", str(tmp / "out")]


# ---------------------------------------------------------------- the corpus: search.run

S = "search"
SEARCH_CASES = [
    # the space
    Case("unknown space name", S, lambda t: ["--space", "cifar11", *out(t)],
         "unknown space 'cifar11'; built-in spaces: cifar10, cifar100, cifar10_ssl, digits, svhn"),
    Case("missing space file", S, lambda t: ["--space", str(t / "nope.yaml"), *out(t)],
         "nope.yaml: no such space file; give an existing path or one of the built-in"),
    Case("space is a symlink loop", S, lambda t: [
        "--space", str(symlink_loop(t, "space.yaml")), *out(t)],
        "space.yaml: a symlink loop (its links lead back to themselves), so the space file "
        "cannot be read; point the link at the real file, or pass the file's own path"),
    Case("space file not UTF-8", S, lambda t: [
        "--space", str(text_file(t, "s.yaml", "name: caf\xe9\n".encode("latin-1"))), *out(t)],
        "s.yaml: not UTF-8 text (byte 9: invalid continuation byte); save the space file as"),
    Case("space is a folder", S, lambda t: ["--space", str(folder(t, "spaces.yaml")), *out(t)],
         "cannot read the space file (Is a directory); pass a readable space YAML file"),
    Case("space YAML syntax", S, lambda t: [
        "--space", str(text_file(t, "s.yaml", "name: x\ndataset: [1, 2\n")), *out(t)],
        "s.yaml: line 3, column 1: YAML syntax error"),
    Case("space not a mapping", S, lambda t: [
        "--space", str(text_file(t, "s.yaml", "- a\n- b\n")), *out(t)],
        "a space must be a YAML mapping with keys name, dataset, child, policy, reward"),
    Case("unknown op in space", S, lambda t: [
        "--space", str(space_file(t, **{"policy.ops": ["Rotat"]})), *out(t)],
        "policy.ops[0].name: unknown op 'Rotat'; known ops:"),
    Case("unknown child model", S, lambda t: [
        "--space", str(space_file(t, **{"child.model": "resnet9000"})), *out(t)],
        "child.model: unknown child model 'resnet9000'; known models: basiccnn, resnet_fast"),
    Case("unknown child model, dry run", S, lambda t: [
        "--space", str(space_file(t, **{"child.model": "basicnn"})), "--dry-run", *out(t)],
        "unknown child model 'basicnn'; known models: basiccnn, resnet_fast, wrn_28_10, "
        "wrn_40_2; did you mean 'basiccnn'?"),
    Case("unknown space key", S, lambda t: [
        "--space", str(space_file(t, **{"child.widht": 8})), *out(t)],
        "child.widht: unknown key; remove it or check its spelling"),
    # density matching
    Case("density matching with batch ops", S, lambda t: [
        "--space", str(space_file(t, **{"reward.kind": "density_matching"})), *out(t)],
        "`reward.kind: density_matching` cannot score batch ops (mixup_alpha): they mix pairs of "
        "training images and do not exist at inference; set `policy.batch_ops: {}`"),
    Case("density matching with pbt", S, lambda t: [
        "--space", str(_density_space(t)), "--searcher", "pbt", *out(t)],
        "--searcher pbt cannot search with reward.kind: density_matching (space digits)"),
    Case("density matching with asha, dry run", S, lambda t: [
        "--space", str(_density_space(t)), "--early-stop", "asha", "--dry-run", *out(t)],
        "--early-stop asha has nothing to stop with reward.kind: density_matching"),
    Case("density folds too small", S, lambda t: [
        "--space", str(_density_space(t, folds=20, held_out=0.02)), *out(t)],
        "each of the 20 folds holds out 1 of the 50 train images"),
    Case("density settings for child training", S, lambda t: [
        "--space", str(space_file(t, **{"reward.density": {"folds": 3}})), *out(t)],
        "`density` applies to `kind: density_matching`, but kind is child_training"),
    # flags, named by flag
    Case("trials 0", S, lambda t: ["--trials", "0", *out(t)],
         "--trials must be at least 1, got 0"),
    Case("concurrency 0", S, lambda t: ["--concurrency", "0", *out(t)],
         "--concurrency must be at least 1, got 0"),
    Case("cpus per trial 0", S, lambda t: ["--cpus-per-trial", "0", *out(t)],
         "--cpus-per-trial must be more than 0, got 0"),
    Case("gpus per trial negative", S, lambda t: ["--gpus-per-trial", "-1", *out(t)],
         "--gpus-per-trial must be at least 0, got -1"),
    Case("epochs 0, dry run", S, lambda t: ["--epochs", "0", "--dry-run", *out(t)],
         "--epochs must be at least 1, got 0"),
    Case("epochs too many", S, lambda t: ["--epochs", "5000", *out(t)],
         "--epochs must be at most 1000, got 5000"),
    Case("seed negative", S, lambda t: ["--seed", "-1", *out(t)],
         "--seed must be at least 0, got -1"),
    Case("seed too large", S, lambda t: ["--seed", "4294967296", *out(t)],
         "--seed must lie in [0, 2**32 - 1] (0..4294967295), got 4294967296; pass a seed in "
         "that range"),
    Case("seed too large, dry run", S, lambda t: ["--seed", str(2**40), "--dry-run", *out(t)],
         "--seed must lie in [0, 2**32 - 1] (0..4294967295), got 1099511627776"),
    Case("cohort larger than the trials", S, lambda t: [
        "--cohort", "1000", "--trials", "4", *out(t)],
        "--cohort 1000 (search.cohort, space digits) is more than the search's 4 trials "
        "(search.trials): a cohort trains trials together; pass --cohort 4 or less, or "
        "--trials 1000 or more"),
    Case("trials not finite", S, lambda t: ["--cpus-per-trial", "nan", *out(t)],
         "--cpus-per-trial must be a finite number, got nan"),
    Case("unknown searcher", S, lambda t: ["--searcher", "grid", *out(t)],
         "unknown searcher 'grid'; choose one of: tpe, random, pbt"),
    Case("asha with pbt", S, lambda t: ["--searcher", "pbt", "--early-stop", "asha", *out(t)],
         "--early-stop asha cannot be combined with --searcher pbt"),
    Case("data with data dir", S, lambda t: [
        "--data", str(digits_npz(t)), "--data-dir", str(t), *out(t)],
        "--data-dir has no effect with --data"),
    # output and resume
    Case("output is a file, with a tracking URI", S, lambda t: [
        "--output", str(text_file(t, "notes.txt", "keep me")),
        "--tracking-uri", f"sqlite:///{t}/store/mlflow.db"],
        "notes.txt is a file, not a directory; pass --output with a directory path"),
    Case("output below a file", S, lambda t: [
        "--output", str(text_file(t, "notes.txt", "keep me") / "run")],
        "notes.txt is a file; pass --output with a writable path"),
    Case("output holds a search", S, lambda t: ["--output", str(a_search_dir(t))],
         "already holds a search (run.json, space.yaml); add --resume to continue it"),
    Case("resume without output", S, lambda t: ["--resume"],
         "--resume needs --output DIR; pass the directory of the interrupted search"),
    Case("resume with nothing there", S, lambda t: ["--resume", "--output", str(folder(t))],
         "nothing to resume in"),
    Case("resume with other flags", S, lambda t: [
        "--resume", "--output", str(a_search_dir(t)), "--epochs", "5", "--cpus-per-trial", "2"],
        "--cpus-per-trial 2, --epochs 5: not what the interrupted search in"),
    # tracking
    Case("file tracking store", S, lambda t: ["--tracking-uri", "./mlruns", *out(t)],
         "--tracking-uri ./mlruns: MLflow's file store is no longer supported; pass"),
    Case("unreachable tracking server", S, lambda t: [
        "--tracking-uri", "http://127.0.0.1:9", *out(t)],
        "cannot reach the MLflow tracking server at http://127.0.0.1:9 (connection refused); "
        "start it with"),
    # Ray
    Case("closed cluster port", S, lambda t: ["--address", "127.0.0.1:1", *out(t)],
         "cannot reach the Ray cluster at 127.0.0.1:1 (connection refused within 5 s); start "
         "it with 'ray start --head' or drop --address"),
    Case("address not host:port", S, lambda t: ["--address", "my-cluster", *out(t)],
         "--address 'my-cluster' is not HOST:PORT, ray://HOST:PORT or auto"),
    Case("GPUs on a CPU machine", S, lambda t: ["--gpus-per-trial", "1", *out(t)],
         "--gpus-per-trial 1 asks for GPUs but this Ray cluster has none; use "
         "--gpus-per-trial 0"),
    Case("more CPUs than any node, dry run", S, lambda t: [
        "--cpus-per-trial", "512", "--dry-run", *out(t)],
        "no node has 512 CPUs and 0 GPUs for one trial"),
    # data
    Case("missing data file", S, lambda t: ["--data", str(t / "nope.npz"), *out(t)],
         "nope.npz: no such file or folder; pass --data with an existing .npz file"),
    Case("missing data file, dry run", S, lambda t: [
        "--data", str(t / "nope.npz"), "--dry-run", *out(t)],
        "nope.npz: no such file or folder"),
    Case("data is a symlink loop", S, lambda t: [
        "--data", str(symlink_loop(t, "data.npz")), *out(t)],
        "data.npz: a symlink loop (its links lead back to themselves), so the data cannot be "
        "read; point the link at the real file"),
    Case("corrupt npz", S, lambda t: [
        "--data", str(text_file(t, "d.npz", bytes(range(256)) * 8)), *out(t)],
        "not an .npz archive (no zip signature at the start); save it with np.savez"),
    Case("truncated npz", S, lambda t: [
        "--data", str(_truncated(digits_npz(t))), *out(t)],
        "corrupt .npz archive"),
    Case("npz missing a key", S, lambda t: ["--data", str(_without_key(t)), *out(t)],
         "missing key(s) y_test"),
    Case("float images", S, lambda t: [
        "--data", str(digits_npz(t, x_train=read_digits().x_train[:1500] / 255.0)), *out(t)],
        "x_train has dtype float64; images must be uint8 0..255"),
    Case("too few images for the splits", S, lambda t: [
        "--data", str(digits_npz(t, n=500)), *out(t)],
        "the splits need 1450 training images"),
    Case("image size differs from the space", S, lambda t: [
        "--space", str(space_file(t, **{"dataset.resize": False})),
        "--data", str(digits_npz(t)), *out(t)],
        "x_train images are 8x8x1 but the space's dataset is 16x16x1 (dataset.image_size 16, "
        "dataset.channels 1); set dataset.image_size: 8 and dataset.channels: 1 to match"),
    Case("channels differ, dry run", S, lambda t: [
        "--space", str(space_file(t, **{"dataset.resize": False, "dataset.image_size": 8,
                                        "dataset.channels": 3,
                                        "child.base_augmentation.crop_padding": 1})),
        "--data", str(digits_npz(t)), "--dry-run", *out(t)],
        "x_train images are 8x8x1 but the space's dataset is 8x8x3"),
    Case("npz space without data", S, lambda t: [
        "--space", str(space_file(t, **{"dataset.name": "npz"})), *out(t)],
        "dataset 'npz' needs its data; pass --data PATH"),
    Case("empty image folder", S, lambda t: ["--data", str(folder(t)), *out(t)],
         "no class subfolders; put each class's images in its own folder"),
    # classes: the data holds fewer than the space declares (every trial would score 1.0)
    Case("labels all one class", S, lambda t: ["--data", str(_one_class(t)), *out(t)],
         "the train split (50 images) holds 1 of the 10 classes dataset.num_classes declares "
         "(present: 0); y_train has no image of classes 1-9: add images of every class"),
    Case("labels all one class, dry run", S, lambda t: [
        "--data", str(_one_class(t)), "--dry-run", *out(t)],
        "the train split (50 images) holds 1 of the 10 classes"),
    Case("labels of half the classes", S, lambda t: [
        "--data", str(digits_npz(t, y_train=read_digits().y_train[:1500] % 5)), *out(t)],
        "holds 5 of the 10 classes dataset.num_classes declares (present: 0-4); y_train has "
        "no image of classes 5-9: add images of every class, or set dataset.num_classes to 5"),
    Case("test set of one class", S, lambda t: [
        "--data", str(digits_npz(t, y_test=np.zeros(297, np.int64))), *out(t)],
        "the test set (297 images) holds 1 of the 10 classes dataset.num_classes declares "
        "(present: 0); y_test has no image of classes 1-9"),
    Case("a class too rare for the validation pool", S, lambda t: [
        "--space", str(space_file(t, **{"dataset.train_size": 100,
                                        "dataset.val_pool_size": 300,
                                        "dataset.audit_size": 300,
                                        "reward.val_sample_size": 200})),
        "--data", str(_rare_class(t)), *out(t)],
        "the validation pool (300 images) holds 9 of the 10 classes dataset.num_classes "
        "declares (present: 0-6, 8-9); y_train has too few images of the missing class "
        "(class 7: 3) for a stratified split to include them; add images of them or raise "
        "dataset.val_pool_size"),
    Case("5,000 of 10,000 classes", S, lambda t: [
        "--space", str(space_file(t, **{"dataset.num_classes": 10_000})),
        "--data", str(_even_classes(t)), *out(t)],
        "more): add images of every class, or set dataset.num_classes to 5000 and relabel the "
        "classes 0..4999"),
    Case("negative labels", S, lambda t: ["--data", str(_negative_labels(t)), *out(t)],
         "y_train has negative labels (20 below 0, the lowest -1); labels must be class ids "
         "0..9 (dataset.num_classes 10); relabel them, or drop the images labelled below 0"),
    # the output directory: root may write /sys by its permission bits, sysfs still refuses
    Case("output under /sys", S, lambda t: ["--output", "/sys/augsearch-out"],
         "cannot create --output /sys/augsearch-out: /sys is not writable ("),
    Case("tracking store under /sys", S, lambda t: [
        "--tracking-uri", "sqlite:////sys/augsearch/mlflow.db", *out(t)],
        "cannot create the MLflow store sqlite:////sys/augsearch/mlflow.db: /sys is not "
        "writable ("),
    # a range written as one number
    Case("scalar magnitude range", S, lambda t: [
        "--space", str(space_file(t, **{"policy.ops": [{"name": "Rotate", "magnitude": 0.5},
                                                       "Identity"]})), *out(t)],
        "policy.ops[0].magnitude: a range is two numbers [low, high], got 0.5; write "
        "[0.5, 0.5] for a fixed value or [low, high] to search it"),
    Case("scalar batch op range, dry run", S, lambda t: [
        "--space", str(space_file(t, **{"policy.batch_ops.mixup_alpha": 0.2})), "--dry-run",
        *out(t)],
        "policy.batch_ops.mixup_alpha: a range is two numbers [low, high], got 0.2; write "
        "[0.2, 0.2]"),
]


def _one_class(tmp: Path) -> Path:
    return digits_npz(tmp, y_train=np.zeros(1500, np.int64), y_test=np.zeros(297, np.int64))


def _even_classes(tmp: Path) -> Path:
    """6,000 digits images labelled with the 5,000 even classes 0..9998, each in runs of one:
    a message listing the classes present and missing whole ran to 25,000 characters."""
    raw = read_digits()
    x = np.tile(raw.x_train[:1500], (4, 1, 1, 1))
    y = (np.arange(len(x)) % 5000) * 2
    return digits_npz(tmp, x_train=x, y_train=y, y_test=y[:297])


def _rare_class(tmp: Path) -> Path:
    """Digits with only 3 images of class 7 among the training images."""
    raw = read_digits()
    x, y = raw.x_train[:1500], raw.y_train[:1500]
    keep = np.ones(len(y), bool)
    keep[np.flatnonzero(y == 7)[3:]] = False
    return digits_npz(tmp, x_train=x[keep], y_train=y[keep])


def _negative_labels(tmp: Path) -> Path:
    """Labels -1..9: the first 20 images marked -1 ("unlabelled")."""
    y = read_digits().y_train[:1500].copy()
    y[:20] = -1
    return digits_npz(tmp, y_train=y)


def _density_space(tmp: Path, **density) -> Path:
    return space_file(tmp, **{"reward.kind": "density_matching", "policy.batch_ops": {},
                              **({"reward.density": density} if density else {})})


def _truncated(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:3000])
    return path


def _without_key(tmp: Path) -> Path:
    raw = read_digits()
    path = tmp / "partial.npz"
    np.savez(path, x_train=raw.x_train, y_train=raw.y_train, x_test=raw.x_train[:10])
    return path


# ---------------------------------------------------------------- the corpus: search.evaluate

E = "evaluate"


def _eval(*argv: str) -> Setup:
    return lambda t: ["--seeds", "1", "--epochs", "1", "--output", str(t / "out"), *argv]


def _eval_with(make: Callable[[Path], list[str]]) -> Setup:
    return lambda t: ["--seeds", "1", "--epochs", "1", "--output", str(t / "out"), *make(t)]


EVALUATE_CASES = [
    Case("missing policy file", E, _eval_with(lambda t: ["--policy", str(t / "gone.yaml")]),
         "gone.yaml: no such policy file; pass the best_policy.yaml, best_policy.json or "
         "schedule.json a search wrote"),
    Case("policy is a symlink loop", E, _eval_with(lambda t: [
        "--policy", str(symlink_loop(t, "best_policy.yaml"))]),
        "best_policy.yaml: a symlink loop (its links lead back to themselves), so the policy "
        "file cannot be read; point the link at the real file, or pass the file's own path"),
    Case("policy is not JSON", E, _eval_with(lambda t: [
        "--policy", str(text_file(t, "best_policy.json", '{"format": "augsearch-policy", "s'))]),
        "best_policy.json: not valid JSON"),
    Case("policy not UTF-8", E, _eval_with(lambda t: [
        "--policy", str(text_file(t, "p.yaml", b"\xff\xfe\x00\x01binary")), "--space", "digits"]),
        "p.yaml: not UTF-8 text (a binary file?); pass the best_policy.yaml"),
    Case("policy is a list", E, _eval_with(lambda t: [
        "--policy", str(text_file(t, "p.yaml", "- Rotate\n")), "--space", "digits"]),
        "p.yaml: not a policy file (a list, not a mapping)"),
    Case("space file given as the policy", E, _eval_with(lambda t: [
        "--policy", str(space_file(t, "my_space.yaml"))]),
        "my_space.yaml: not a policy file but a search space (it has dataset, child and policy "
        "keys); pass it as --space, and as --policy the best_policy.yaml"),
    Case("space file given as the policy, with --space", E, _eval_with(lambda t: [
        "--policy", str(space_file(t)), "--space", "digits"]),
        "space.yaml: not a policy file but a search space"),
    Case("policy of another kind", E, _eval_with(lambda t: [
        "--policy", str(text_file(t, "notes.yaml", "hello: world\n")), "--space", "digits"]),
        "notes.yaml: not a policy file; expected an augsearch policy"),
    Case("batch op value is text", E, _eval_with(lambda t: [
        "--policy", str(policy_file(t, mixup_alpha="strong")), "--space", "digits"]),
        "batch.mixup_alpha: expected a number, got 'strong'; write a value such as 0.2"),
    Case("unknown op in policy", E, _eval_with(lambda t: [
        "--policy", str(_policy_with_op(t, "Rotat")), "--space", "digits"]),
        "sub_policies[0][0]: unknown op 'Rotat'"),
    Case("incomplete schedule", E, _eval_with(lambda t: [
        "--policy", str(text_file(t, "schedule.json", json.dumps(
            {"format": "augsearch-schedule", "version": 1}))), "--space", "digits"]),
        "schedule.json: a schedule needs 'epochs' and 'entries'"),
    Case("policy without its space", E, _eval_with(lambda t: [
        "--policy", str(_policy_without_provenance(t))]),
        "cannot tell which space this policy was searched in (no space.yaml beside it); pass "
        "--space NAME|PATH"),
    Case("policy label is a baseline", E, _eval_with(lambda t: [
        "--policy", f"cropflip={policy_file(t)}"]),
        "policy labels must be distinct, non-empty and not a baseline name"),
    Case("unknown baseline", E, _eval("--baselines", "cropflip,randaugmnt"),
         "unknown baseline 'randaugmnt'; choose from: none, cropflip, cutout, randaugment"),
    Case("nothing to evaluate", E, _eval("--baselines", ""),
         "nothing to evaluate; pass --policy FILE and/or --baselines"),
    Case("unknown space", E, _eval("--space", "cifar11"), "unknown space 'cifar11'"),
    Case("unknown model", E, _eval("--baselines", "none", "--model", "resnet9000"),
         "--model 'resnet9000' is unknown; known models: basiccnn"),
    Case("seeds 0", E, _eval_with(lambda t: ["--baselines", "none", "--seeds", "0"]),
         "--seeds must be at least 1, got 0"),
    Case("epochs 0", E, _eval_with(lambda t: ["--baselines", "none", "--epochs", "0"]),
         "--epochs must be at least 1, got 0"),
    Case("tta negative", E, _eval("--baselines", "cropflip", "--tta", "-1"),
         "--tta must be at least 0, got -1"),
    Case("threads 0", E, _eval("--baselines", "none", "--threads", "0"),
         "--threads must be at least 1, got 0"),
    Case("evaluate data missing", E, _eval("--baselines", "none", "--data", "/nonexistent.npz"),
         "/nonexistent.npz: no such file or folder"),
    Case("evaluate data shape differs", E, _eval_with(lambda t: [
        "--baselines", "none", "--space", str(space_file(t, **{"dataset.resize": False})),
        "--data", str(digits_npz(t))]),
        "x_train images are 8x8x1 but the space's dataset is 16x16x1"),
    Case("evaluate labels all one class", E, _eval_with(lambda t: [
        "--baselines", "none", "--data", str(_one_class(t))]),
        "the training set (1500 images) holds 1 of the 10 classes dataset.num_classes declares "
        "(present: 0); y_train has no image of classes 1-9: add images of every class"),
    Case("evaluate test set of one class", E, _eval_with(lambda t: [
        "--baselines", "cropflip", "--data", str(digits_npz(t, y_test=np.zeros(297, np.int64)))]),
        "the test set (297 images) holds 1 of the 10 classes dataset.num_classes declares "
        "(present: 0); y_test has no image of classes 1-9"),
    Case("evaluate train subset of one class", E, _eval_with(lambda t: [
        "--baselines", "none", "--train-size", "100", "--data", str(_one_class(t))]),
        "the --train-size subset (100 images) holds 1 of the 10 classes"),
    Case("evaluate unreachable tracking server", E, _eval(
        "--baselines", "none", "--tracking-uri", "http://127.0.0.1:9"),
        "cannot reach the MLflow tracking server at http://127.0.0.1:9"),
    Case("evaluate output is a file", E, lambda t: [
        "--baselines", "none", "--output", str(text_file(t, "notes.txt", "keep"))],
        "notes.txt is a file, not a directory"),
    Case("evaluate output holds an evaluation", E, lambda t: [
        "--baselines", "none", "--output", str(_evaluation_dir(t))],
        "already holds an evaluation (evaluation.md); pass --output with a new directory"),
]


def _policy_with_op(tmp: Path, op: str) -> Path:
    data = policy_to_dict(Policy((SubPolicy((Op("Rotate", 0.3, 0.6),)),)))
    data["sub_policies"][0][0]["op"] = op
    return text_file(tmp, "bad_op.yaml", yaml.safe_dump(data))


def _policy_without_provenance(tmp: Path) -> Path:
    folder_ = tmp / "loose"
    folder_.mkdir()
    return save_policy(Policy((SubPolicy((Op("Invert", 0.0, 0.5),)),)), folder_ / "p.yaml")


def _evaluation_dir(tmp: Path) -> Path:
    earlier = tmp / "earlier-eval"
    earlier.mkdir()
    (earlier / "evaluation.md").write_text("| arm |\n", encoding="utf-8")
    return earlier


CASES = SEARCH_CASES + EVALUATE_CASES


def test_the_corpus_is_large_and_covers_both_commands() -> None:
    assert len(CASES) >= 40
    assert len(SEARCH_CASES) >= 25 and len(EVALUATE_CASES) >= 15
    assert len({c.name for c in CASES}) == len(CASES)


# ---------------------------------------------------------------- running a case


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under `root` with a hash of its content."""
    state = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            state[rel] = f"link to {os.readlink(path)}"
            continue
        state[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return state


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(case: Case, tmp_path: Path,
                                                            monkeypatch, capsys) -> None:
    import ray

    cwd = tmp_path / "cwd"  # where a default ./augsearch-runs/... would appear
    cwd.mkdir()
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv = case.setup(inputs)
    monkeypatch.chdir(cwd)
    before = snapshot(tmp_path)
    ray_before = ray.is_initialized()
    capsys.readouterr()
    main = search_main if case.cli == "search" else evaluate_main
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("augsearch: error: ") and "\n" not in err, err
    assert "Traceback" not in err
    message = err.removeprefix("augsearch: error: ")
    assert case.expect in message, message
    assert "; " in message, f"no fix named: {message}"  # problem; fix
    shown = message.replace(str(inputs), "inputs")
    assert len(shown) < 400, f"{len(shown)} characters: {shown}"  # lists are capped
    assert snapshot(tmp_path) == before, "files were created or changed"
    assert ray.is_initialized() == ray_before, "Ray was started for a refused request"


# ---------------------------------------------------------------- as a user runs them


def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120,
                          env={**os.environ, "PYTHONPATH": python_path()})


def test_an_unreachable_cluster_fails_fast_with_one_line(tmp_path: Path) -> None:
    started = time.monotonic()
    proc = _cli("search.run", "--address", "127.0.0.1:1", "--smoke-test", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert time.monotonic() - started < 30
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
    assert "cannot reach the Ray cluster at 127.0.0.1:1" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_child_model_is_refused_by_the_dry_run_as_a_user_runs_it(
        tmp_path: Path) -> None:
    path = space_file(tmp_path, **{"child.model": "resnet9000"})
    proc = _cli("search.run", "--space", str(path), "--dry-run", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "child.model: unknown child model 'resnet9000'" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["space.yaml"]


# ---------------------------------------------------------------- what is no longer refused


@pytest.mark.parametrize("kind", ["npz", "folder"])
def test_data_satisfies_an_npz_or_folder_space_without_a_path(kind: str, tmp_path: Path,
                                                              capsys) -> None:
    import cv2

    if kind == "npz":
        data = digits_npz(tmp_path)
    else:
        data = tmp_path / "images"
        raw = read_digits()
        for i in range(400):
            label = data / str(raw.y_train[i])
            label.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(label / f"{i}.png"), raw.x_train[i])
    space = space_file(tmp_path, **{"dataset.name": kind, "dataset.train_size": 100,
                                    "dataset.val_pool_size": 100, "dataset.audit_size": 50,
                                    "reward.val_sample_size": 80})
    code = search_main(["--space", str(space), "--data", str(data), "--dry-run",
                        "--output", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert "(checked)" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_the_dry_run_applies_the_flags_it_was_given(tmp_path: Path, capsys) -> None:
    data = digits_npz(tmp_path)
    code = search_main(["--data", str(data), "--trials", "5", "--concurrency", "1",
                        "--epochs", "2", "--seed", "3", "--dry-run",
                        "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert f"data      {data}: 50 train, 600 validation pool, 800 audit" in out
    assert "2 epochs" in out and "tpe, 5 trials, 1 CPU / 0 GPU per trial, 1 at once" in out
    assert "sampled policies (seed 3)" in out
    assert f"output    {tmp_path / 'out'}" in out and not (tmp_path / "out").exists()


def test_the_dry_run_shows_the_reward_kind_and_the_fold_plan(tmp_path: Path, capsys) -> None:
    space = space_file(tmp_path, **SUBPOLICY_DIGITS, **{
        "reward.kind": "density_matching", "policy.batch_ops": {},
        "reward.density": {"folds": 4, "copies": 3, "top": 2, "score": "nll"}})
    code = search_main(["--space", str(space), "--dry-run", "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert code == 0
    assert "reward    density_matching (Fast AutoAugment): -NLL of the true class of each " \
           "fold model on its held-out images under the policy (3 augmented copies each)" in out
    assert "folds     4 fold models (resnet_fast, 100 epochs, base augmentation only), each " \
           "trained once before the search on 38 of the 50 train images and scoring the " \
           "other 12; 4 trainings" in out
    assert "final     merge of the top 2 policies of each fold; audit accuracy: the fold " \
           "models on the 800 audit images" in out
    assert "confirm   the base, the merged policy and the next best policies (2 besides the " \
           "base) trained with real children under 8 fresh seeds each (24 trainings)" in out
    assert "exported only if its margin over the base on the audit images has a simultaneous " \
           "95% interval (Bonferroni over 2; seeds and images counted) above 0, else the " \
           "base" in out
    drawn = space_file(tmp_path, "drawn.yaml", **{  # digits' RandAugment: nothing to merge
        "reward.kind": "density_matching", "policy.batch_ops": {}})
    assert search_main(["--space", str(drawn), "--dry-run", "--output", str(tmp_path / "o")]) == 0
    assert "final     the single best policy; audit accuracy" in capsys.readouterr().out
    assert search_main(["--dry-run", "--output", str(tmp_path / "out")]) == 0
    plain = capsys.readouterr().out
    assert "reward    child_training: mean val_accuracy" in plain and "folds " not in plain
    assert not (tmp_path / "out").exists()
