"""The ways to use a found policy, timed side by side: the albumentations export per image
against `children.augment`'s module on batches (with and without the batch ops).

One thread, the same real 32x32 images, policies sampled from the cifar10 space written as a
search writes them (`best_policy.json` and `.yaml`) and read back as a user reads them
(`albumentations.load`, `children.augment.load_augment`). Contenders alternate in rounds so
machine noise hits all of them alike; the median round is reported, as wall-clock and as the
thread's CPU time. With CUDA, the module on CUDA batches is timed too (synchronised); without,
the GPU figure is reported as unmeasured.

    python bench/use_policy.py [--images 2048] [--rounds 5] [--batch 128] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.aug_throughput import Run, measure  # noqa: E402
from bench.report import cifar_images, machine, write_section  # noqa: E402
from children.augment import load_augment  # noqa: E402
from children.tensor_aug import BatchedPipeline, Draws  # noqa: E402
from search.trials.compile import sample_policies  # noqa: E402
from spaces.policy import BatchOps, Policy, export_albumentations, save_policy  # noqa: E402
from spaces.schema import load_space  # noqa: E402

TITLE = "Using a found policy: speed"
EXPORT = "albumentations.load(best_policy.json), per image (no batch ops)"
MIX = BatchOps(mixup_alpha=0.4, cutmix_alpha=1.0, sample_pairing=0.2)


def _files(policies: list[Policy], folder: Path) -> list[tuple[Path, Path]]:
    """Each policy as a search leaves it: best_policy.json (albumentations) and .yaml."""
    space = load_space("cifar10")
    base, size = space.child.base_augmentation, space.dataset.image_size
    out = []
    for k, policy in enumerate(policies):
        policy = replace(policy, provenance={"space": space.name})
        out.append((export_albumentations(policy, base, size, folder / f"p{k}.json"),
                    save_policy(policy, folder / f"p{k}.yaml")))
    return out


def contenders(images: np.ndarray, batch: int, folder: Path) -> dict[str, Run]:
    """Each contender augments all `images` once per call, rotating over 8 sampled policies."""
    import albumentations as A

    space = load_space("cifar10")
    no_mix = [replace(p, batch=BatchOps()) for p in sample_policies(space, 8, seed=0)]
    plain = _files(no_mix, folder / "plain")
    mixed = _files([replace(p, batch=MIX) for p in no_mix], folder / "mixed")
    exported = [A.load(str(j), data_format="json") for j, _ in plain]
    for k, pipe in enumerate(exported):
        pipe.set_random_seed(k)
    module = [load_augment(y) for _, y in plain]
    module_mix = [load_augment(y) for _, y in mixed]
    searched = [BatchedPipeline(p, space.child.base_augmentation, 32) for p in no_mix]
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    batches = [nchw[s:s + batch] for s in range(0, len(nchw), batch)]
    labels = [torch.arange(len(b)) % 10 for b in batches]
    unit = [b.float() / 255.0 for b in batches]
    draws = Draws(0)
    out: dict[str, Run] = {
        EXPORT: _each(lambda k: exported[k % 8](image=images[k]), len(images)),
        f"PolicyAugment, uint8 batches of {batch}, no batch ops":
            _each(lambda k: module[k % 8](batches[k]), len(batches)),
        f"PolicyAugment, uint8 batches of {batch} + labels, mixup/cutmix/sample pairing":
            _each(lambda k: module_mix[k % 8](batches[k], labels[k]), len(batches)),
        f"PolicyAugment, float batches of {batch} + labels, mixup/cutmix/sample pairing":
            _each(lambda k: module_mix[k % 8](unit[k], labels[k]), len(batches)),
        f"search's batched path (BatchedPipeline), uint8 batches of {batch}, no batch ops":
            _each(lambda k: searched[k % 8](batches[k], draws), len(batches)),
    }
    if torch.cuda.is_available():
        on_gpu = [b.cuda() for b in batches]
        gpu_labels = [y.cuda() for y in labels]

        def gpu(k: int) -> None:
            module_mix[k % 8](on_gpu[k], gpu_labels[k])
            if k == len(on_gpu) - 1:
                torch.cuda.synchronize()

        out[f"PolicyAugment on CUDA, uint8 batches of {batch} + labels, all batch ops"] = \
            _each(gpu, len(on_gpu))
    return out


def _each(fn, n: int) -> Run:
    def run() -> None:
        for k in range(n):
            fn(k)

    return run


def report(med: dict[str, tuple[float, float]], source: str, args: argparse.Namespace,
           load: tuple[float, float]) -> str:
    ref_wall, ref_cpu = med[EXPORT]
    rows = ["| way to apply the policy | images/s wall-clock | vs export | images/s CPU time "
            "| vs export |", "|---|---:|---:|---:|---:|"]
    rows += [f"| {name} | {w:,.0f} | {w / ref_wall:.2f}x | {c:,.0f} | {c / ref_cpu:.2f}x |"
             for name, (w, c) in sorted(med.items(), key=lambda kv: -kv[1][0])]
    gpu = ("" if torch.cuda.is_available() else
           "**GPU: unmeasured** (no CUDA device on this machine); the CUDA row appears when the "
           "script runs where `torch.cuda.is_available()`.")
    return "\n".join([
        f"`python bench/use_policy.py` — {args.images} real 32x32 images ({source}), 8 "
        f"policies sampled from the cifar10 space (crop/flip included), one thread, median of "
        f"{args.rounds} alternating rounds. {machine()}; load average {load[0]:.1f} at the "
        f"start, {load[1]:.1f} at the end (the machine is shared).", "",
        *rows, "",
        "The export is read back with plain `albumentations.load` and called on one uint8 HWC "
        "image at a time, as a DataLoader worker would; the module (`children.augment`, loaded "
        "from the `best_policy.yaml` of the same policy) takes a whole N×C×H×W batch. The "
        f"batch-op rows add mixup (alpha {MIX.mixup_alpha}), cutmix (alpha {MIX.cutmix_alpha}, "
        f"one of the two per batch) and sample pairing ({MIX.sample_pairing}) with one-hot "
        "targets, which the export cannot express.", "", gpu,
    ]).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_before = os.getloadavg()[0]
    images, source = cifar_images(args.images)
    with tempfile.TemporaryDirectory() as folder:
        for sub in ("plain", "mixed"):
            (Path(folder) / sub).mkdir()
        med = measure(contenders(images, args.batch, Path(folder)), len(images), args.rounds)
    body = report(med, source, args, (load_before, os.getloadavg()[0]))
    print(body)
    if not args.no_write:
        write_section(TITLE, body)


if __name__ == "__main__":
    main()
