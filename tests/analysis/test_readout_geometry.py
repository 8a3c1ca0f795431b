"""Readout geometry: the random |cos| baseline, probes and directions, row refit, counting task."""

import math

import pytest
import torch

from linearlab.analysis.readout_geometry import (
    constrained_accuracy,
    random_cos_baseline,
    readout_geometry,
    refit_rows,
)
from linearlab.runs import RunDir
from linearlab.tasks.counting import END, SEP, counting_batch, end_accuracy


def test_random_baseline_matches_sampled_random_directions_and_the_asymptote():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(20000, 64, generator=g), torch.randn(20000, 64, generator=g)
    sampled = float(torch.nn.functional.cosine_similarity(a, b).abs().mean())
    assert random_cos_baseline(64) == pytest.approx(sampled, rel=0.02)
    assert random_cos_baseline(2) == pytest.approx(2 / math.pi)  # E|cos theta|, theta uniform
    assert random_cos_baseline(4096) == pytest.approx(math.sqrt(2 / (math.pi * 4096)), rel=1e-3)


def test_a_planted_direction_is_found_and_its_cosine_with_the_rows_is_exact():
    g = torch.Generator().manual_seed(1)
    n, d = 2000, 16
    u = torch.nn.functional.normalize(torch.randn(d, generator=g), dim=0)
    count = torch.randint(1, 10, (n,), generator=g).double()
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    noise -= (noise @ u.double()).unsqueeze(1) * u.double()  # orthogonal to u: the count is exactly linear
    h = noise + count.unsqueeze(1) * u.double()
    rows = torch.randn(9, d, generator=g)
    geo = readout_geometry([noise, h], count, rows, lam=1e-9)
    assert geo.r2[1] == pytest.approx(1.0, abs=1e-6) and geo.r2[0] < 0.05
    # isotropic features: the probe direction is u itself (sign aside)
    assert abs(float(geo.directions[1] @ u.double())) == pytest.approx(1.0, abs=1e-4)
    expected = (torch.nn.functional.normalize(rows.double(), dim=-1) @ u.double()).abs()
    torch.testing.assert_close(geo.abs_cos[1], expected, rtol=1e-3, atol=1e-4)


def test_refitting_rows_makes_a_separable_readout_accurate(tmp_path):
    g = torch.Generator().manual_seed(2)
    k, d, n = 5, 12, 600
    centers = torch.randn(k, d, generator=g) * 3
    labels = torch.randint(0, k, (n,), generator=g)
    h = centers[labels] + 0.3 * torch.randn(n, d, generator=g)
    rows = torch.randn(k, d, generator=g)
    before = constrained_accuracy(h, rows, labels)
    new = refit_rows(h, labels, rows, steps=200, lr=5e-2, run_dir=RunDir.create("t", tmp_path / "r"))
    assert constrained_accuracy(h, new, labels) > 0.98 > before
    assert (tmp_path / "r" / "checkpoint.safetensors").exists()
    with pytest.raises(ValueError, match=r"labels: expected classes in \[0, 5\), got \[1, 7\]"):
        refit_rows(h, torch.where(labels == 0, 7, labels), rows, steps=1)


def test_counting_task_layout_and_errors():
    b = counting_batch(64, seed=3)
    seps = set()
    for row, tgt, n, sep in zip(b.tokens, b.targets, b.counts.tolist(), b.sep_pos.tolist()):
        assert row[sep] == SEP and row[sep + n + 1] == END and (row[sep - n : sep] >= 12).all()
        assert not ((row >= 1) & (row <= 9)).any()  # no digit token ever appears
        scored = (tgt != -100).nonzero().flatten().tolist()
        assert scored == list(range(sep, sep + n + 1)) and tgt[sep + n] == END
        seps.add(sep - n)
    assert len(seps) > 3  # the filler makes the count differ from the position
    always_end = torch.zeros(64, b.tokens.shape[1], 21)
    always_end[..., END] = 1
    assert end_accuracy(always_end, b) == 0.0  # END too early in every list
    exact = torch.zeros(64, b.tokens.shape[1], 21)
    for i, (n, sep) in enumerate(zip(b.counts.tolist(), b.sep_pos.tolist())):
        exact[i, sep + n, END] = 1
    assert end_accuracy(exact, b) == 1.0
    with pytest.raises(ValueError, match="max_count: expected an int in \\[1, 9\\]"):
        counting_batch(4, 0, max_count=10)
    with pytest.raises(ValueError, match=r"rows: expected \[K, 4\] unembedding rows"):
        readout_geometry([torch.randn(10, 4)], torch.randn(10), torch.randn(3, 5))
