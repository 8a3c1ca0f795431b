"""convert_: the one entry point that swaps nn.Linear layers for drop-in replacements."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from linearlab.convert.linear_swap import convert_, linear_layers, replaced_modules
from linearlab.models import MixerLM, ModelConfig


class Doubled(nn.Module):
    """A stand-in replacement: the same linear map, times two (so the swap is visible in the output)."""

    def __init__(self, inner: nn.Linear) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return 2 * self.inner(x)


class DoubleConfig:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def replace(self, module: nn.Linear, fqn: str) -> nn.Module:
        self.seen.append(fqn)
        return Doubled(module)


def _model() -> MixerLM:
    torch.manual_seed(0)
    return MixerLM(ModelConfig(d_model=16, n_layers=2, mixer="softmax", mixer_kwargs={"num_heads": 2}))


def test_filter_fn_chooses_the_layers_and_the_rest_are_untouched():
    model = _model()
    before = linear_layers(model)
    config = DoubleConfig()
    convert_(model, config, filter_fn=lambda m, fqn: fqn.startswith("blocks.0.") and "mlp" in fqn)
    assert config.seen and all(f.startswith("blocks.0.") and "mlp" in f for f in config.seen)
    swapped = replaced_modules(model, Doubled)
    assert sorted(swapped) == sorted(config.seen)
    assert sorted(linear_layers(model)) == sorted(
        [f for f in before if f not in config.seen] + [f + ".inner" for f in config.seen]
    )


def test_swapped_model_runs_and_changes_its_output():
    model = _model()
    ids = torch.randint(0, 256, (2, 8))
    ref = model(ids).logits
    convert_(model, DoubleConfig(), filter_fn=lambda m, fqn: fqn.startswith("blocks.1.mlp"))
    out = model(ids).logits
    assert out.shape == ref.shape and not torch.allclose(out, ref)


def test_errors_name_the_problem():
    model = _model()
    with pytest.raises(ValueError, match="filter_fn: matched none.*blocks.0"):
        convert_(model, DoubleConfig(), filter_fn=lambda m, fqn: False)
    with pytest.raises(ValueError, match="no nn.Linear"):
        convert_(nn.Sequential(nn.ReLU()), DoubleConfig())
    with pytest.raises(TypeError, match="config"):
        convert_(model, object())

    class Bad:
        def replace(self, module, fqn):
            return 3

    with pytest.raises(TypeError, match="replace"):
        convert_(model, Bad())
