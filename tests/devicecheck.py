"""A check that a torch computation stays on one device, for tests on machines without a GPU.

Inside `with OneDevice():` every torch call (functions, tensor methods and operators, factories)
whose arguments lie on more than one kind of device is refused with `DeviceMix`. Arguments are
searched through lists, tuples and dicts; a tensor counts by its device (a 0-dim CPU tensor too,
which torch itself lets through beside a CUDA tensor), a numpy array as host data, a random
generator and a `device=` keyword by theirs. Explicit moves (`Tensor.to`, `Tensor.copy_`, a
tensor made from host data on a device) are let through and listed in `moves`, so a test can
count them. Devices compare by type (cpu, cuda, meta).

Give the computation its data on the `meta` device: meta tensors have shapes but no data, so a
host sync (`.item()`, `.tolist()`, `.cpu()`, `nonzero`, a tensor in an `if`) fails there as
well, and a CPU-only machine checks what a GPU run needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

__all__ = ["DeviceMix", "OneDevice"]

_MOVES = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.cpu, torch.Tensor.cuda,
          torch.as_tensor, torch.tensor}


class DeviceMix(AssertionError):
    """A torch call got arguments on more than one device."""


def _device(leaf: Any) -> str | None:
    if isinstance(leaf, (torch.Tensor, torch.Generator)):
        return leaf.device.type
    if isinstance(leaf, np.ndarray):
        return "cpu"
    return None


def _leaves(value: Any) -> list[Any]:
    """Everything inside lists, tuples and dicts (their values), depth first."""
    if isinstance(value, (list, tuple)):
        return [leaf for item in value for leaf in _leaves(item)]
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _devices(args: tuple, kwargs: dict) -> set[str]:
    devices = {d for d in map(_device, _leaves((args, kwargs))) if d is not None}
    if kwargs.get("device") is not None:
        devices.add(torch.device(kwargs["device"]).type)
    return devices


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


class OneDevice(TorchFunctionMode):
    """Refuses torch calls that mix devices; records explicit moves between devices."""

    def __init__(self) -> None:
        super().__init__()
        self.moves: list[str] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func not in _MOVES:
            devices = _devices(args, kwargs)
            if len(devices) > 1:
                raise DeviceMix(f"{_name(func)} got arguments on {', '.join(sorted(devices))}")
            return func(*args, **kwargs)
        devices = _devices(args, {k: v for k, v in kwargs.items() if k != "device"})
        result = func(*args, **kwargs)
        if isinstance(result, torch.Tensor):
            target = result.device.type
            sources = (devices or {"cpu"}) - {target}  # Python numbers and lists: host data
            if sources:
                self.moves.append(f"{_name(func)}: {', '.join(sorted(sources))} -> {target}")
        return result
