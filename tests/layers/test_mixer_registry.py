"""``layers/registry.py``: the mixer registry on ``linearlab.registry.Registry``."""

from __future__ import annotations

import pytest
from torch import nn

from linearlab.layers import create_mixer, list_mixers, register_mixer
from linearlab.layers.mixers.gla import GatedLinearAttention
from linearlab.layers.registry import MIXERS
from linearlab.registry import UnknownNameError


def test_every_mixer_module_is_registered():
    assert {"softmax", "gla", "deltanet", "gated_deltanet", "mom", "retnet", "lssl"} <= set(list_mixers())
    assert list_mixers() == MIXERS.names()


def test_create_passes_arguments_and_sets_the_name():
    mixer = create_mixer("gla", d_model=16, num_heads=2)
    assert isinstance(mixer, GatedLinearAttention) and mixer.num_heads == 2
    assert GatedLinearAttention.mixer_name == "gla"


@pytest.mark.parametrize("err", [UnknownNameError, KeyError, ValueError])
def test_unknown_name_lists_the_mixers(err):
    with pytest.raises(err, match=r"mixer: unknown mixer 'nope'; choose from: base_conv, deltanet, .*gla"):
        create_mixer("nope", d_model=16)


def test_a_second_class_under_a_taken_name_is_an_error():
    class Other(nn.Module):
        pass

    with pytest.raises(RuntimeError, match="mixer name 'gla' is registered twice"):
        register_mixer("gla")(Other)
    register_mixer("gla")(GatedLinearAttention)  # the same class again is a no-op
