"""The shared test-bed LM: trained once, cached, reloaded bit-identically, and refuses a mixed cache."""

from __future__ import annotations

import pytest
import torch

from linearlab.lab.testbed import TestbedConfig, bits_per_byte, pretrained_lm, val_windows

TINY = TestbedConfig(
    d_model=32, n_layers=2, num_heads=2, seq_len=32, batch_size=4, steps=6, max_bytes=200_000
)


def test_trains_once_then_loads_the_same_weights(tmp_path):
    first = pretrained_lm(TINY, cache_dir=tmp_path)
    assert (tmp_path / "result.json").is_file()
    again = pretrained_lm(TINY, cache_dir=tmp_path)
    for (name, a), (_, b) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name
    windows = val_windows(again.data, TINY.seq_len, 4)
    assert bits_per_byte(again.model, windows) == pytest.approx(bits_per_byte(first.model, windows), rel=1e-6)
    # six steps of training already beat the uniform 8 bits per byte
    assert first.val_bpb < 8.0


def test_refuses_a_cache_of_another_configuration(tmp_path):
    pretrained_lm(TINY, cache_dir=tmp_path)
    other = TestbedConfig(**{**TINY.__dict__, "seed": 1})
    with pytest.raises(ValueError, match="cache_dir"):
        pretrained_lm(other, cache_dir=tmp_path)


def test_bad_configuration_names_the_field():
    with pytest.raises(ValueError, match="tokenizer"):
        TestbedConfig(tokenizer="words")
    with pytest.raises(ValueError, match="steps"):
        TestbedConfig(steps=0)


def test_bits_per_byte_checks_window_shape():
    with pytest.raises(ValueError, match="windows"):
        bits_per_byte(torch.nn.Identity(), torch.zeros(3, dtype=torch.long))


def test_testbed_from_reads_prefixed_fields_and_fixed_values():
    from dataclasses import dataclass

    from linearlab.lab.testbed import testbed_from

    @dataclass
    class RecipeConfig:
        bed_d_model: int = 48
        bed_steps: int = 7
        steps: int = 999  # not a bed field: must not leak into the test bed

    bed = testbed_from(RecipeConfig(), tokenizer="bpe")
    assert (bed.d_model, bed.steps, bed.tokenizer) == (48, 7, "bpe")
    assert bed.n_layers == TestbedConfig().n_layers


def test_window_batches_are_a_pure_function_of_the_step():
    from linearlab.tasks.text import window_batches

    data = torch.arange(1000)
    batches = window_batches(data, batch_size=3, seq_len=5, seed=1)
    x, y = batches(4)
    x2, y2 = batches(4)
    assert torch.equal(x, x2) and torch.equal(y[:, :-1], x[:, 1:])
    assert not torch.equal(batches(5)[0], x)
