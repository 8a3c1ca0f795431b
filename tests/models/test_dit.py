"""Tiny DiT: adaLN-Zero start, patch layout, the VLB term vs diffusers' posterior, sampling, errors."""

import pytest
import torch

from linearlab.models.dit import (
    DiT,
    DiTConfig,
    diffusion_loss,
    make_scheduler,
    posterior_terms,
    sample,
    timestep_embedding,
    vlb_term,
)


def _model(**kw):
    torch.manual_seed(0)
    return DiT(DiTConfig(image_size=8, patch_size=2, hidden=16, depth=2, num_heads=2, **kw))


@pytest.mark.parametrize("attention", ["softmax", "lit", "linfusion"])
def test_adaln_zero_makes_a_new_model_output_zero_and_gives_learn_sigma_two_channels(attention):
    m = _model(attention=attention)
    out = m(torch.randn(3, 1, 8, 8), torch.tensor([1, 50, 999]), torch.tensor([0, 4, 9]))
    assert out.shape == (3, 2, 8, 8) and torch.equal(out, torch.zeros_like(out))
    assert _model(learn_sigma=False)(torch.randn(1, 1, 8, 8), torch.tensor([3]), torch.tensor([1])).shape == (
        1,
        1,
        8,
        8,
    )


def test_each_output_patch_depends_only_on_its_input_patch_when_blocks_are_identity():
    m = _model()
    torch.nn.init.normal_(m.out.weight)  # blocks keep their zero gates: they are the identity
    x = torch.randn(1, 1, 8, 8, requires_grad=True)
    out = m(x, torch.tensor([10]), torch.tensor([2]))
    (g,) = torch.autograd.grad(out[0, 0, 4, 7], x)  # output pixel in patch (row 2, col 3)
    nz = g[0, 0].abs() > 0
    assert (
        nz[4:6, 6:8].any()
        and not nz.clone()
        .index_put_((torch.arange(4, 6)[:, None], torch.arange(6, 8)), torch.tensor(False))
        .any()
    )


def test_runs_at_higher_resolution_and_rejects_sizes_not_divisible_by_the_patch():
    m = _model()
    assert m(torch.randn(1, 1, 16, 32), torch.tensor([5]), torch.tensor([1])).shape == (1, 2, 16, 32)
    with pytest.raises(ValueError, match="x: image size 9x8 is not divisible by patch_size=2"):
        m(torch.randn(1, 1, 9, 8), torch.tensor([5]), torch.tensor([1]))
    with pytest.raises(ValueError, match="image_size: 15 is not divisible by patch_size=2"):
        DiTConfig(image_size=15)
    with pytest.raises(ValueError, match="attention: unknown grid mixer"):
        DiTConfig(attention="mamba")
    with pytest.raises(ValueError, match=r"x: expected images \[B, 1, H, W\]"):
        m(torch.randn(1, 3, 8, 8), torch.tensor([5]), torch.tensor([1]))


def test_class_embedding_is_not_drowned_by_the_timestep_embedding_at_init():
    # Regression (issue 18): with DiT's std-0.02 class embedding next to a default-initialised
    # timestep MLP, c = emb(t) + emb(y) carried ~10x more timestep than class, and a tiny DiT trained
    # for 2400 steps on digits still sampled at chance for the conditioned class.
    torch.manual_seed(0)
    m = DiT(DiTConfig(hidden=48, depth=1, num_heads=4))
    t = torch.arange(0, 1000, 50)
    y = torch.arange(10).repeat(2)
    t_norm = m.t_mlp(timestep_embedding(t, 256)).norm(dim=1)
    y_norm = m.y_emb(y).norm(dim=1)
    assert y_norm.mean() > t_norm.mean()
    # the classes lie further apart in c than c travels over the whole timestep range
    t_emb = m.t_mlp(timestep_embedding(t, 256))
    assert torch.cdist(m.y_emb.weight, m.y_emb.weight).max() > torch.cdist(t_emb, t_emb).max()


class _ExactDenoiser(torch.nn.Module):
    """The optimal noise prediction for a finite dataset per class (a DiT stand-in with ``cfg``)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, scheduler) -> None:
        super().__init__()
        self.x, self.y, self.abar = x, y, scheduler.alphas_cumprod
        self.cfg = DiTConfig(image_size=x.shape[-1], patch_size=2, hidden=16, num_heads=2)

    def forward(self, xt, t, y):
        a = self.abar[t][:, None]
        data = self.x.flatten(1)[None]  # [1, M, P]
        d2 = ((xt.flatten(1)[:, None] - a[..., None].sqrt() * data) ** 2).sum(-1)  # [B, M]
        logits = -d2 / (2 * (1 - a)) + torch.where(y[:, None] == self.y[None], 0.0, -torch.inf)
        x0 = (logits.softmax(-1) @ self.x.flatten(1)).view_as(xt)
        eps = (xt - a.sqrt().view(-1, 1, 1, 1) * x0) / (1 - a).sqrt().view(-1, 1, 1, 1)
        return torch.cat([eps, torch.zeros_like(eps)], 1)  # v = 0: the middle of the learned range


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_sampling_with_the_exact_denoiser_returns_the_conditioned_class(sampler, beta_schedule):
    # checks everything between a perfect model and the samples: diffusers' step with learned
    # variance channels, the strided schedule, timesteps and class labels passed through
    s = make_scheduler(True, beta_schedule=beta_schedule)
    x = -torch.ones(4, 1, 4, 4)
    x[0, 0, :, :2] = x[1, 0, :2, :2] = 1.0  # class 0: left half / top-left quarter
    x[2, 0, :, 2:] = x[3, 0, 2:, 2:] = 1.0  # class 1: right half / bottom-right quarter
    y = torch.tensor([0, 0, 1, 1])
    labels = torch.tensor([0, 1] * 8)
    out = sample(_ExactDenoiser(x, y, s), s, labels, steps=20, sampler=sampler,
                 generator=torch.Generator().manual_seed(0))  # fmt: skip
    nearest = torch.cdist(out.flatten(1), x.flatten(1)).argmin(1)
    assert torch.equal(y[nearest], labels)
    assert torch.cdist(out.flatten(1), x.flatten(1)).min(1).values.max() < 0.5


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
def test_posterior_terms_match_diffusers(beta_schedule):
    s = make_scheduler(learn_sigma=False, beta_schedule=beta_schedule)
    # the cosine schedule ends at abar ~ 1e-9: x0 is not recoverable from x_t in float32 there
    t = torch.tensor([1, 10, 500, 999 if beta_schedule == "linear" else 900])
    pt = posterior_terms(s, t)
    ref = torch.stack([s._get_variance(int(i)) for i in t]).float()
    # diffusers works in float32 (1 - abar cancels at small t), we in float64
    torch.testing.assert_close(pt["post_logvar"].flatten().exp(), ref, rtol=1e-3, atol=0)
    # the posterior mean from (x0, x_t) equals the mean diffusers' step() computes from the true noise
    x0 = torch.rand(4, 1, 4, 4) * 2 - 1
    noise = torch.randn(4, 1, 4, 4)
    xt = s.add_noise(x0, noise, t)
    mean = pt["coef_x0"] * x0 + pt["coef_xt"] * xt
    for i in range(4):
        s_no_clip = make_scheduler(learn_sigma=False, beta_schedule=beta_schedule)
        s_no_clip.register_to_config(clip_sample=False)
        step = s_no_clip.step(
            noise[i : i + 1], int(t[i]), xt[i : i + 1], generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(step.pred_original_sample, x0[i : i + 1], rtol=1e-4, atol=1e-4)
        var = s._get_variance(int(t[i]))
        z = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(step.prev_sample, mean[i : i + 1] + var.sqrt() * z, rtol=1e-4, atol=1e-4)


def test_vlb_is_zero_for_the_true_noise_and_the_posterior_variance():
    s = make_scheduler(learn_sigma=True)
    t = torch.tensor([3, 400])
    x0 = torch.rand(2, 1, 4, 4) * 2 - 1
    noise = torch.randn(2, 1, 4, 4)
    xt = s.add_noise(x0, noise, t)
    kl = vlb_term(s, x0, xt, t, noise, -torch.ones_like(x0))  # v = -1: variance = beta~_t
    assert kl.abs().max() < 1e-5
    # v = +1: variance beta_t, same means: KL = (log(beta/beta~) + beta~/beta - 1) / (2 ln 2)
    pt = posterior_terms(s, t)
    r = (pt["post_logvar"].exp() / pt["beta"]).flatten()
    expected = (-torch.log(r) + r - 1) / (2 * torch.log(torch.tensor(2.0)))
    torch.testing.assert_close(
        vlb_term(s, x0, xt, t, noise, torch.ones_like(x0)), expected, rtol=1e-3, atol=1e-7
    )
    assert expected[0] > 1e-2  # early steps: beta~ << beta


def test_diffusion_loss_trains_a_little_and_sampling_is_reproducible():
    m = _model()
    s = make_scheduler(True)
    opt = torch.optim.Adam(m.parameters(), 3e-3)
    x0 = torch.zeros(16, 1, 8, 8)
    x0[:, :, 2:6, 2:6] = 1.0
    y = torch.zeros(16, dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        t = torch.randint(0, 1000, (16,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        loss, parts, _ = diffusion_loss(m, s, x0, s.add_noise(x0, noise, t), t, noise, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["mse"])
    assert sum(losses[-5:]) < sum(losses[:5])
    for sampler in ("ddpm", "ddim"):
        a = sample(
            m, s, torch.arange(2), steps=4, sampler=sampler, generator=torch.Generator().manual_seed(1)
        )
        b = sample(
            m, s, torch.arange(2), steps=4, sampler=sampler, generator=torch.Generator().manual_seed(1)
        )
        assert a.shape == (2, 1, 8, 8) and torch.equal(a, b)
    assert sample(m, s, torch.arange(2), size=16, steps=2).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="sampler: expected 'ddpm' or 'ddim'"):
        sample(m, s, torch.arange(2), sampler="euler")
    with pytest.raises(ValueError, match="beta_schedule: expected one of"):
        make_scheduler(True, beta_schedule="cosine")
