"""MgNO, FNO and CNN operators: the multigrid algebra, linearity, spectral-conv parity, budgets, errors."""

import math

import pytest
import torch

from linearlab.models.operators import ConvNet, FNO1d, MgConv, MgIte, MgNO, Restrict, SpectralConv1d


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


def test_mgite_and_restrict_compute_their_formulas():
    A, S = torch.nn.Conv1d(3, 2, 3, padding=1, bias=False), torch.nn.Conv1d(2, 3, 3, padding=1, bias=False)
    u, f = torch.randn(2, 3, 16), torch.randn(2, 2, 16)
    torch.testing.assert_close(MgIte(A, S)(u, f), u + S(f - A(u)))
    torch.testing.assert_close(MgIte(None, S)(None, f), S(f))
    Pi = torch.nn.Conv1d(3, 3, 3, stride=2, padding=1, bias=False)
    R = torch.nn.Conv1d(2, 2, 3, stride=2, padding=1, bias=False)
    cu, cf = Restrict(Pi, R, A)(u, f)
    assert cu.shape == (2, 3, 8) and cf.shape == (2, 2, 8)
    torch.testing.assert_close(cf, R(f - A(u)))


@pytest.mark.parametrize("dim", [1, 2])
def test_a_v_cycle_without_norm_is_a_linear_operator(dim):
    torch.manual_seed(0)
    mg = MgConv(dim, (2, 1, 1), channels_u=4, channels_f=2, normalize=False).double()
    grid = (16,) * dim
    f, g = torch.randn(3, 2, *grid, dtype=torch.float64), torch.randn(3, 2, *grid, dtype=torch.float64)
    torch.testing.assert_close(mg(2.0 * f - 0.5 * g), 2.0 * mg(f) - 0.5 * mg(g), rtol=1e-12, atol=1e-12)
    assert mg(f).shape == (3, 4, *grid)
    # its matrix (apply to the basis) reproduces it, as a linear operator must
    n = math.prod(grid) * 2
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 2, *grid)
    M = mg(basis).reshape(n, -1)  # [in, out]
    torch.testing.assert_close(f.reshape(3, -1) @ M, mg(f).reshape(3, -1), rtol=1e-10, atol=1e-10)


def test_the_v_cycle_uses_every_level_and_the_coarse_grid_corrections():
    torch.manual_seed(0)
    mg = MgConv(1, (1, 1, 1), 4, 1, normalize=False)
    f = torch.randn(2, 1, 16)
    before = mg(f)
    with torch.no_grad():
        mg.prolong[1].weight.zero_()  # cut the coarsest level's correction
    assert not torch.allclose(mg(f), before)


def test_mgno_shapes_padding_and_errors():
    net = MgNO(dim=1, channels=8, num_layers=2, num_iteration=(1, 1, 1, 1))
    assert net(torch.randn(2, 1, 64)).shape == (2, 1, 64)
    net2 = MgNO(dim=2, channels=4, num_layers=1, num_iteration=(1, 1))
    assert net2(torch.randn(2, 1, 8, 8)).shape == (2, 1, 8, 8)
    with pytest.raises(
        ValueError,
        match=r"f: expected 1 spatial dims divisible by 2\*\*\(levels-1\) = 8, got shape \(2, 1, 60\)",
    ):
        net(torch.randn(2, 1, 60))
    with pytest.raises(ValueError, match="dim: expected 1 or 2"):
        MgNO(dim=3)
    with pytest.raises(
        ValueError, match=r"num_iteration: expected >= 1 smoothing steps per level, got \[1, 0\]"
    ):
        MgConv(1, (1, 0), 4, 1)
    # periodic padding makes the operator commute with circular shifts; zero padding does not
    per = MgNO(dim=1, channels=4, num_layers=1, num_iteration=(1,), padding_mode="circular")
    x = torch.randn(1, 1, 32)
    torch.testing.assert_close(per(torch.roll(x, 5, -1)), torch.roll(per(x), 5, -1), rtol=1e-5, atol=1e-5)
    zero = MgNO(dim=1, channels=4, num_layers=1, num_iteration=(1,))
    assert not torch.allclose(zero(torch.roll(x, 5, -1)), torch.roll(zero(x), 5, -1), atol=1e-4)


def test_spectral_conv_matches_an_explicit_dft_and_is_shift_equivariant():
    torch.manual_seed(0)
    sc = SpectralConv1d(2, 3, modes=5).double()
    N = 16
    x = torch.randn(4, 2, N, dtype=torch.float64)
    n = torch.arange(N, dtype=torch.float64)
    k = torch.arange(5, dtype=torch.float64)
    E = torch.exp(-2j * math.pi * k[:, None] * n[None] / N)  # [modes, N]
    X = torch.einsum("kn,bin->bik", E, x.to(torch.complex128))
    W = torch.view_as_complex(sc.weight.detach().contiguous())
    Y = torch.einsum("bik,iok->bok", X, W)
    # real inverse: DC once, every other kept mode with its conjugate (k < N/2)
    weights = torch.full((5,), 2.0, dtype=torch.float64)
    weights[0] = 1.0
    y = torch.einsum("bok,kn->bon", Y * weights, torch.conj(E)).real / N
    torch.testing.assert_close(sc(x), y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sc(torch.roll(x, 3, -1)), torch.roll(sc(x), 3, -1), rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="x: 8 points carry 5 Fourier modes, fewer than modes=6"):
        SpectralConv1d(1, 1, 6)(torch.randn(1, 1, 8))


def test_fno_and_cnn_budget():
    fno = FNO1d(modes=16, width=32)
    assert fno(torch.randn(2, 1, 128)).shape == (2, 1, 128)
    # 4 spectral layers of 32 x 32 x 16 complex weights dominate
    assert _nparams(fno) > 4 * 32 * 32 * 16 * 2
    mg = MgNO(channels=16, num_layers=3, num_iteration=(1, 1, 1, 1))
    cnn = ConvNet.with_budget(1, _nparams(mg), depth=6)
    assert abs(_nparams(cnn) - _nparams(mg)) / _nparams(mg) < 0.05
    assert cnn(torch.randn(2, 1, 128)).shape == (2, 1, 128)
    with pytest.raises(ValueError, match="budget: expected a positive parameter count, got 0"):
        ConvNet.with_budget(1, 0)
