"""``layers/precision.py``: the one dtype rule of the mixers."""

from __future__ import annotations

import pytest
import torch

from linearlab.layers.precision import compute_dtype


@pytest.mark.parametrize(
    "dtype, expected",
    [
        (torch.bfloat16, torch.float32),
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_compute_dtype(dtype, expected):
    assert compute_dtype(torch.zeros(1, dtype=dtype)) == expected
