"""Every child model builds and forwards for 1 and 3 channels, 10 and 100 classes."""

from __future__ import annotations

import pytest
import torch

from children.models import build_model, count_parameters, model_names


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("name", model_names())
def test_model_builds_and_forwards(name, classes, channels):
    torch.manual_seed(0)
    small = name == "wrn_28_10"  # 36M parameters: one tiny forward only
    size, batch = (8, 2) if small else (32, 4)
    model = build_model(name, classes, channels, size)
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(batch, channels, size, size))
    assert out.shape == (batch, classes)
    assert torch.isfinite(out).all()
    if not small:  # and a training step on odd sizes works too
        model.train()
        x = torch.randn(batch, channels, 16, 16)
        loss = torch.nn.functional.cross_entropy(model(x), torch.arange(batch) % classes)
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())


def test_parameter_counts_fit_their_roles():
    counts = {name: count_parameters(build_model(name, 10, 3, 32)) for name in model_names()}
    assert 120_000 < counts["basiccnn"] < 160_000  # the measured-good search child size
    assert counts["basiccnn"] < counts["resnet_fast"] < counts["wrn_28_10"]
    assert 2_000_000 < counts["wrn_40_2"] < 2_500_000
    assert 36_000_000 < counts["wrn_28_10"] < 37_000_000
    assert count_parameters(build_model("basiccnn", 10, 3, 32, width=16)) < counts["basiccnn"] / 3


def test_unknown_model_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown child model 'vgg'; known models: basiccnn, "):
        build_model("vgg", 10, 3, 32)


def test_the_space_schema_knows_exactly_the_registered_models():
    from spaces.schema import CHILD_MODELS

    assert sorted(CHILD_MODELS) == sorted(model_names())
