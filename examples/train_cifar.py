"""Train resnet_fast on CIFAR-10 with a policy augsearch found, in a plain PyTorch loop.

The whole dataset is moved to the device once; each batch is augmented there by
`children.augment.load_augment(...)`, a torch module: the space's crop/flip, the found policy
and its batch ops (mixup, cutmix, sample pairing) on the images and their soft targets
together; a pbt schedule follows the epoch (`set_epoch`), stretched to `--epochs`. Nothing is
read back from the device within an epoch but the epoch's loss.

    pip install -e .
    python examples/train_cifar.py --policy runs/c10/best_policy.yaml --data cifar10.npz \\
        --epochs 30 --device cuda

`--data` is an .npz with x_train, y_train, x_test, y_test (uint8 N×H×W×C images, integer
labels), as `search.run --data` takes it.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from children.augment import PolicyAugment, load_augment
from children.models import build_model


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True,
                        help="best_policy.yaml, merged_policy.yaml or schedule.json of a search")
    parser.add_argument("--data", required=True,
                        help=".npz with x_train, y_train, x_test, y_test (uint8 NHWC)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a random N of the training images (default: all)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=0.05,
                        help="the one-cycle peak (the built-in spaces' children use 0.05)")
    parser.add_argument("--width", type=int, default=32, help="resnet_fast's width")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def load_data(path: str, train_size: int | None, seed: int, device: torch.device
              ) -> tuple[torch.Tensor, ...]:
    """The .npz's images as uint8 N×C×H×W and labels as int64, on `device` for the run."""
    with np.load(path) as data:
        x_train, y_train, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_test",
                                                              "y_test"))
    if train_size is not None:
        keep = np.random.default_rng(seed).permutation(len(x_train))[:train_size]
        x_train, y_train = x_train[keep], y_train[keep]
    if x_train.ndim == 3:  # grey images without a channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)

    def labels(y: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(y.astype(np.int64)).to(device)

    return images(x_train), labels(y_train), images(x_test), labels(y_test)


def normaliser(x_train: torch.Tensor):
    """Per-channel standardisation with the training images' mean and std (on their device)."""
    levels = x_train.float()
    mean = levels.mean((0, 2, 3), keepdim=True)
    std = levels.std((0, 2, 3), keepdim=True).clamp_min(1e-3)
    return lambda x: (x.float() - mean) / std


def train(model: torch.nn.Module, augment: PolicyAugment, x: torch.Tensor, y: torch.Tensor,
          args: argparse.Namespace, normalise) -> None:
    """SGD with a one-cycle schedule on soft-target cross-entropy; prints each epoch's loss."""
    device, n = x.device, len(x)
    size = min(args.batch_size, n)
    steps_per_epoch = n // size  # full batches only: batch norm needs more than one image
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                                weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr,
                                                   total_steps=args.epochs * steps_per_epoch)
    order_rng = torch.Generator(device).manual_seed(args.seed)
    # bf16 where the GPU has it natively (Ampere and newer); a T4 or V100 emulates it slowly,
    # so it gets fp16 (a long run there also wants torch.amp.GradScaler)
    amp = (torch.bfloat16 if device.type == "cuda"
           and torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16)
    for epoch in range(args.epochs):
        model.train()
        augment.set_epoch(epoch)  # a schedule's policy of this epoch; the epoch's draws
        order = torch.randperm(n, device=device, generator=order_rng)
        total, start = torch.zeros((), device=device), time.perf_counter()
        for step in range(steps_per_epoch):
            index = order[step * size:(step + 1) * size]
            images, targets = augment(x[index], y[index])  # on the device, batch ops included
            with torch.autocast(device.type, amp, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(normalise(images)), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.detach()
        seconds = time.perf_counter() - start
        print(f"epoch {epoch + 1}/{args.epochs}: train loss {total.item() / steps_per_epoch:.4f}, "
              f"{steps_per_epoch * size / seconds:,.0f} images/s", flush=True)


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, normalise,
             batch: int = 1000) -> float:
    """Top-1 accuracy on un-augmented images, read from the device once."""
    model.eval()
    hits = torch.zeros((), dtype=torch.long, device=x.device)
    for start in range(0, len(x), batch):
        hits += (model(normalise(x[start:start + batch])).argmax(1)
                 == y[start:start + batch]).sum()
    return hits.item() / len(x)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    try:
        x_train, y_train, x_test, y_test = load_data(args.data, args.train_size, args.seed,
                                                     device)
        classes = int(max(y_train.max(), y_test.max())) + 1
        augment = load_augment(args.policy, image_size=x_train.shape[-1], num_classes=classes,
                               seed=args.seed, total_epochs=args.epochs)
    except (OSError, KeyError, ValueError) as err:  # SpaceError is a ValueError
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(augment, flush=True)
    model = build_model("resnet_fast", classes, x_train.shape[1], x_train.shape[-1],
                        args.width).to(device)
    normalise = normaliser(x_train)
    train(model, augment, x_train, y_train, args, normalise)
    print(f"test accuracy: {accuracy(model, x_test, y_test, normalise):.4f} "
          f"({len(x_test)} test images, {len(x_train)} training images, {args.epochs} epochs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
