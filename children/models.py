"""Child models by name: a small CNN for CPU search, an airbench-style net, Wide ResNets.

Every model takes N×C×H×W float input with C = 1 or 3, any square size >= 8, and any number of
classes; global pooling makes the head independent of the image size.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["build_model", "count_parameters", "model_names"]


def _conv_bn(cin: int, cout: int, act: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), act()
    )


class BasicCNN(nn.Sequential):
    """DeepAugment's "basiccnn" class of child: two conv pairs and a conv, pooled, one linear.

    Widths (w, 2w, 4w); width 32 gives ~141k parameters, the size measured to rank crop+flip
    above no augmentation on 2,000 CIFAR-10 images in 40 epochs.
    """

    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        w = width
        super().__init__(
            _conv_bn(channels, w), _conv_bn(w, w), nn.MaxPool2d(2),
            _conv_bn(w, 2 * w), _conv_bn(2 * w, 2 * w), nn.MaxPool2d(2),
            _conv_bn(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4 * w, num_classes),
        )


class _FastBlock(nn.Module):
    """airbench's conv group (conv, pool, norm, GELU, conv, norm, GELU) with a residual."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv_bn(cout, cout, nn.GELU)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return x + self.conv2(x)


class ResNetFast(nn.Sequential):
    """A fast GPU child in the spirit of airbench94: widths (2w, 8w, 8w) = 64, 256, 256 at w=32."""

    def __init__(self, num_classes: int, channels: int, width: int) -> None:
        w = width
        super().__init__(
            _conv_bn(channels, w, nn.GELU),
            _FastBlock(w, 2 * w), _FastBlock(2 * w, 8 * w), _FastBlock(8 * w, 8 * w),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(8 * w, num_classes, bias=False),
        )


class _WideBlock(nn.Module):
    """Pre-activation basic block of a Wide ResNet (Zagoruyko & Komodakis 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                         if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.relu(self.bn1(x))
        out = self.conv2(torch.relu(self.bn2(self.conv1(pre))))
        return out + (self.shortcut(pre) if self.shortcut is not None else x)


class WideResNet(nn.Module):
    """WRN-depth-k: widths 16, 16k, 32k, 64k with (depth - 4) / 6 blocks per group."""

    def __init__(self, depth: int, k: int, num_classes: int, channels: int) -> None:
        super().__init__()
        blocks = (depth - 4) // 6
        widths = (16, 16 * k, 32 * k, 64 * k)
        layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 3, padding=1, bias=False)]
        for group in range(3):
            for i in range(blocks):
                cin = widths[group] if i == 0 else widths[group + 1]
                stride = 2 if group > 0 and i == 0 else 1
                layers.append(_WideBlock(cin, widths[group + 1], stride))
        self.features = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(widths[3])
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.features(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


_Factory = Callable[[int, int, int], nn.Module]
_MODELS: dict[str, _Factory] = {
    "basiccnn": lambda classes, channels, width: BasicCNN(classes, channels, width),
    "resnet_fast": lambda classes, channels, width: ResNetFast(classes, channels, width),
    "wrn_28_10": lambda classes, channels, _width: WideResNet(28, 10, classes, channels),
    "wrn_40_2": lambda classes, channels, _width: WideResNet(40, 2, classes, channels),
}


def model_names() -> list[str]:
    """Names `build_model` accepts."""
    return list(_MODELS)


def build_model(
    name: str, num_classes: int, channels: int, image_size: int, width: int = 32
) -> nn.Module:
    """A freshly initialised child model; `width` scales basiccnn and resnet_fast (WRNs are fixed).

    Raises ValueError for an unknown name (listing the known ones) or unusable shapes.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown child model '{name}'; known models: {', '.join(_MODELS)}")
    if channels not in (1, 3) or num_classes < 2 or image_size < 8 or width < 1:
        raise ValueError(f"child model '{name}' needs channels 1 or 3, num_classes >= 2, "
                         f"image_size >= 8 and width >= 1, but got channels={channels}, "
                         f"num_classes={num_classes}, image_size={image_size}, width={width}")
    model = _MODELS[name](num_classes, channels, width)
    _init(model)
    return model


def _init(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters of a model."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
