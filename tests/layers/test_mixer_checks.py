"""``layers/mixer_checks.py``: the argument and ``x`` checks, directly and through mixers."""

from __future__ import annotations

import pytest
import torch

from linearlab.layers import create_mixer
from linearlab.layers.mixer_checks import check_choice, check_mixer_input, check_positive_int


def test_check_mixer_input():
    assert check_mixer_input(torch.zeros(3, 5, 16), 16) == (3, 5)
    with pytest.raises(ValueError, match=r"x: expected 3 dims \[B, T, D\] with D = 16, got shape \[16\]"):
        check_mixer_input(torch.zeros(16), 16)
    with pytest.raises(ValueError, match=r"x: last dim must equal d_model = 16, got shape \[1, 2, 8\]"):
        check_mixer_input(torch.zeros(1, 2, 8), 16)
    with pytest.raises(ValueError, match="x: sequence length T must be at least 1, got 0"):
        check_mixer_input(torch.zeros(1, 0, 16), 16)
    with pytest.raises(ValueError, match="x: expected a floating-point tensor, got dtype torch.int64"):
        check_mixer_input(torch.zeros(1, 2, 16, dtype=torch.long), 16)
    with pytest.raises(ValueError, match=r"x: expected a torch.Tensor \[B, T, D\], got list"):
        check_mixer_input([[0.0] * 16], 16)


def test_argument_checks():
    check_positive_int("n", 3)
    for bad in (0, -1, 2.0, True, "3"):
        with pytest.raises(ValueError, match=r"n: expected a positive int, got"):
            check_positive_int("n", bad)
    check_choice("mode", "a", ("a", "b"))
    with pytest.raises(ValueError, match=r"mode: expected one of \['a', 'b'\], got 'c'"):
        check_choice("mode", "c", ("a", "b"))


# every mixer runs check_mixer_input first; a few, through the registry, as users see it
ERRORS = [
    (
        lambda: create_mixer("slab", d_model=16)(torch.randn(2, 3, 8)),
        r"x: last dim must equal d_model = 16, got shape \[2, 3, 8\]",
    ),
    (
        lambda: create_mixer("slab", d_model=16)(torch.randn(2, 0, 16)),
        r"x: sequence length T must be at least 1, got 0",
    ),
    (
        lambda: create_mixer("lssl", d_model=4)(torch.ones(1, 2, 4, dtype=torch.long)),
        r"x: expected a floating-point tensor, got dtype torch.int64",
    ),
    (
        lambda: create_mixer("retnet", d_model=16)([[0.0] * 16]),
        r"x: expected a torch.Tensor \[B, T, D\], got list",
    ),
    (
        lambda: create_mixer("lightning", d_model=16)(torch.randn(3, 16)),
        r"x: expected 3 dims \[B, T, D\] with D = 16, got shape \[3, 16\]",
    ),
]


@pytest.mark.parametrize("make, message", ERRORS, ids=["last_dim", "empty", "dtype", "type", "rank"])
def test_mixers_check_x_first(make, message):
    with pytest.raises(ValueError, match=message):
        make()
