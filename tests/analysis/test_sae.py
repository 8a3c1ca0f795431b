"""TopK SAE and the dark-matter measures: sparsity, training, save/load, exact regression identities."""

import pytest
import torch

from linearlab.analysis.sae import TopKSAE, fraction_of_variance_unexplained, train_sae
from linearlab.analysis.sae_dark_matter import error_norm_correlation, pooled_r2, sae_dark_matter
from linearlab.runs import RunDir
from linearlab.tasks.sparse_features import sparse_feature_activations


def test_topk_keeps_the_k_largest_nonnegative_latents():
    sae = TopKSAE(16, 40, k=5, seed=1)
    with torch.no_grad():
        sae.W_dec.mul_(torch.linspace(0.5, 2, 40))
        sae.b_enc.normal_()
    x = torch.randn(7, 16)
    x_hat, z = sae(x)
    assert z.shape == (7, 40) and ((z > 0).sum(-1) <= 5).all() and (z >= 0).all()
    pre = torch.relu((x - sae.b_dec) @ sae.W_enc.T + sae.b_enc)
    kth = pre.topk(5, dim=-1).values[:, -1:]
    torch.testing.assert_close(z, torch.where(pre >= kth, pre, 0.0))
    torch.testing.assert_close(x_hat, z @ sae.W_dec.T + sae.b_dec)
    sae.normalize_decoder_()
    torch.testing.assert_close(sae.W_dec.norm(dim=0), torch.ones(40))


def test_training_learns_sparse_data_and_resumes_identically(tmp_path):
    data = sparse_feature_activations(2000, d=16, n_features=24, p=0.1, dense_rank=0, seed=0).x
    sae = train_sae(data, width=32, k=4, steps=300, lr=3e-3, seed=0)
    fvu = fraction_of_variance_unexplained(data, sae(data)[0].detach())
    untrained = TopKSAE(16, 32, 4)
    with torch.no_grad():
        untrained.b_dec.copy_(data.mean(0))
    assert fvu < 0.35 < fraction_of_variance_unexplained(data, untrained(data)[0].detach())
    # interrupted after its first checkpoint and resumed: the same weights as straight through
    whole = train_sae(data, width=32, k=4, steps=40, seed=3, run_dir=RunDir.create("t", tmp_path / "a"))
    import linearlab.analysis.sae as mod

    real = mod.train
    mod.train = lambda *a, **kw: real(*a, stop_after=20, **kw)
    try:
        train_sae(data, width=32, k=4, steps=40, seed=3, run_dir=RunDir.create("t", tmp_path / "b"))
    finally:
        mod.train = real
    resumed = train_sae(data, width=32, k=4, steps=40, seed=3, run_dir=RunDir.create("t", tmp_path / "b"))
    for a, b in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_save_load_round_trip_and_width_errors(tmp_path):
    sae = TopKSAE(8, 12, 3, seed=2)
    path = sae.save(tmp_path / "sae.safetensors")
    again = TopKSAE.load(path)
    x = torch.randn(5, 8)
    assert torch.equal(again(x)[0], sae(x)[0]) and again.k == 3
    with pytest.raises(
        ValueError, match=r"x: expected activations \[\.\.\., 8\] \(the SAE's d_in\), got \(5, 9\)"
    ):
        sae(torch.randn(5, 9))
    with pytest.raises(ValueError, match="k: expected k <= width = 12, got 13"):
        TopKSAE(8, 12, 13)
    with pytest.raises(FileNotFoundError, match="path: .*nope.safetensors' does not exist"):
        TopKSAE.load(tmp_path / "nope.safetensors")


def test_an_error_linear_in_x_is_fully_predicted_and_noise_is_not():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 10, generator=g, dtype=torch.float64)
    a = torch.randn(10, 10, generator=g, dtype=torch.float64)
    # the "SAE" misses a linear map of x: the error is all linear
    dm = sae_dark_matter(x, x - x @ a)
    # (the probe's 1e-8 ridge penalty shrinks the fit by ~1e-8)
    assert dm.vector_r2 == pytest.approx(1.0, abs=1e-6)
    assert dm.linear_share == pytest.approx(1.0, abs=1e-6)
    # an error independent of x is not predictable: vector R^2 ~ 0, norm R^2 ~ 0
    noise = torch.randn(3000, 10, generator=g, dtype=torch.float64)
    dm = sae_dark_matter(x, x - noise)
    assert abs(dm.vector_r2) < 0.02 and abs(dm.norm_r2["error"]) < 0.03
    # norm R^2 uses a bias column: an error whose |e|^2 = 3 + w.x (affine, not linear) is exact
    xu = torch.rand(2000, 10, generator=g, dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.randn(2000, 10, generator=g, dtype=torch.float64), dim=-1)
    e = (3 + xu @ torch.rand(10, generator=g, dtype=torch.float64)).sqrt().unsqueeze(-1) * u
    dm = sae_dark_matter(xu, xu - e)
    assert dm.norm_r2["error"] == pytest.approx(1.0, abs=1e-6)
    assert abs(dm.vector_r2) < 0.02  # random directions: the vector itself is not predictable


def test_pooled_r2_and_error_correlation():
    t = torch.randn(50, 3, dtype=torch.float64)
    assert pooled_r2(t, t) == 1.0
    assert pooled_r2(t.mean(0).expand_as(t), t) == pytest.approx(0.0, abs=1e-12)
    e1 = torch.randn(100, 4)
    corr = error_norm_correlation([e1, 2 * e1, torch.randn(100, 4)])
    assert corr.shape == (3, 3) and corr[0, 1] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="errors: expected the errors of at least 2 SAEs"):
        error_norm_correlation([e1])
    with pytest.raises(
        ValueError, match=r"x_hat: expected the reconstruction with the shape of x \(100, 4\)"
    ):
        sae_dark_matter(e1, e1[:, :3])
