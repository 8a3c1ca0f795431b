"""The 1-D Darcy generator: exactness of the scheme, the discrete equation, determinism and the cache."""

import numpy as np
import pytest
import torch

from linearlab.tasks.darcy import darcy_1d, relative_l2, solve_darcy_1d


def test_constant_coefficient_is_solved_exactly():
    x = np.linspace(0, 1, 33)
    for a in (3.0, 12.0):
        np.testing.assert_allclose(solve_darcy_1d(np.full(33, a)), x * (1 - x) / (2 * a), atol=1e-14)


def test_the_solution_satisfies_the_discrete_flux_balance_and_continuity():
    rng = np.random.default_rng(0)
    a = np.where(rng.standard_normal(65) > 0, 12.0, 3.0)
    u = solve_darcy_1d(a)
    h = 1 / 64
    mid = 2 * a[:-1] * a[1:] / (a[:-1] + a[1:])
    flux = mid * np.diff(u) / h  # a u' at the midpoints
    np.testing.assert_allclose(-(np.diff(flux)) / h, np.ones(63), atol=1e-9)
    assert u[0] == u[-1] == 0 and np.all(u[1:-1] > 0)
    with pytest.raises(ValueError, match="a: the coefficient must be positive everywhere, got min -1"):
        solve_darcy_1d(np.array([1.0, -1.0, 1.0]))


def test_seeded_values_and_cache_round_trip(tmp_path):
    a, u = darcy_1d(20, resolution=32, seed=1)
    a2, u2 = darcy_1d(20, resolution=32, seed=1, cache_dir=tmp_path)
    assert torch.equal(a, a2) and torch.equal(u, u2)
    assert set(a.unique().tolist()) == {3.0, 12.0}
    files = list(tmp_path.glob("darcy1d_*.safetensors"))
    assert len(files) == 1
    a3, u3 = darcy_1d(20, resolution=32, seed=1, cache_dir=tmp_path)  # read back
    assert torch.equal(a3, a) and torch.equal(u3, u)
    assert not torch.equal(darcy_1d(20, resolution=32, seed=2)[0], a)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match=r"lo, hi: expected 0 < lo < hi, got 5, 3"):
        darcy_1d(2, lo=5, hi=3)


def test_relative_l2():
    t = torch.ones(2, 1, 4)
    torch.testing.assert_close(relative_l2(t * 1.1, t), torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="pred, target: shapes differ"):
        relative_l2(t, t[:1])
