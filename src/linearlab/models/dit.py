"""A tiny class-conditional Diffusion Transformer (DiT, Peebles & Xie) with swappable grid attention.

``x: [B, C, H, W]`` is cut into ``p x p`` patches (a strided conv), given fixed 2-D sin-cos position
embeddings, and run through ``depth`` blocks conditioned by adaLN-Zero on ``c = emb(t) + emb(y)``:

    shift, scale, gate (x2) = Linear(SiLU(c))        # zero-initialised: each block starts as identity
    x = x + gate1 * attn(LN(x) * (1 + scale1) + shift1)
    x = x + gate2 * mlp(LN(x) * (1 + scale2) + shift2)

The head (adaLN + zero-initialised linear) predicts the noise and, with ``learn_sigma``, the
interpolation ``v`` of the log-variance between ``beta_t`` and the posterior's ``beta~_t`` (Improved
DDPM, as DiT). The attention of every block is a grid mixer from
:data:`~linearlab.layers.vision.grid_attention.GRID_MIXERS` (``softmax``, ``lit``, ``linfusion``).

Position embeddings are computed for the input's grid, with coordinates scaled to the training
grid's range, so a model trained at 16x16 runs at 32x32 or 64x64 (a finer sampling of the same
positions). Noise schedule and samplers come from ``diffusers`` (``DDPMScheduler``,
``DDIMScheduler``); :func:`diffusion_loss` is DiT's ``L_simple + L_vlb`` and :func:`sample` the
reverse process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from linearlab.layers.vision.grid_attention import GRID_MIXERS, create_grid_mixer


@dataclass
class DiTConfig:
    """Shape of a :class:`DiT`.

    ``image_size`` is the training resolution (position embeddings are scaled to its grid);
    ``attention`` names a grid mixer and ``attention_kwargs`` its extra arguments.
    """

    image_size: int = 16
    patch_size: int = 2
    in_channels: int = 1
    hidden: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 10
    learn_sigma: bool = True
    attention: str = "softmax"
    attention_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in (
            "image_size",
            "patch_size",
            "in_channels",
            "hidden",
            "depth",
            "num_heads",
            "num_classes",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size: {self.image_size} is not divisible by patch_size={self.patch_size}"
            )
        if self.hidden % self.num_heads or (self.hidden // self.num_heads) % 2:
            raise ValueError(
                f"num_heads: {self.num_heads} must divide hidden={self.hidden} into even head widths"
            )
        if self.hidden % 4:
            raise ValueError(f"hidden: must be a multiple of 4 (2-D sin-cos embedding), got {self.hidden}")
        GRID_MIXERS.check([self.attention], argument="attention")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels


def sincos_2d(hidden: int, h: int, w: int, base_grid: int) -> torch.Tensor:
    """``[h * w, hidden]`` sin-cos embedding of row/column coordinates scaled to ``[0, base_grid)``."""
    quarter = hidden // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    rows = torch.arange(h, dtype=torch.float64) * (base_grid / h)
    cols = torch.arange(w, dtype=torch.float64) * (base_grid / w)
    r, c = torch.meshgrid(rows, cols, indexing="ij")
    out = []
    for pos in (r.reshape(-1), c.reshape(-1)):
        ang = pos[:, None] * omega[None]
        out += [ang.sin(), ang.cos()]
    return torch.cat(out, dim=1).float()


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``t: [B]`` (any real) -> ``[B, dim]`` sinusoidal features."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.cos(), ang.sin()], dim=1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    """One adaLN-Zero transformer block around a grid mixer ``attn``."""

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        D = cfg.hidden
        self.norm1 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.attn = create_grid_mixer(cfg.attention, D, cfg.num_heads, **cfg.attention_kwargs)
        self.norm2 = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        hid = int(D * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(D, hid), nn.GELU(approximate="tanh"), nn.Linear(hid, D))
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))
        nn.init.zeros_(self.adaLN[-1].weight)
        nn.init.zeros_(self.adaLN[-1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        sh1, sc1, g1, sh2, sc2, g2 = self.adaLN(c).chunk(6, dim=1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), sh1, sc1), grid)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), sh2, sc2))


class DiT(nn.Module):
    """Tiny DiT: ``(x [B, C, H, W], t [B], y [B] long) -> [B, C_out, H, W]`` (noise, then the variance
    interpolation channels when ``learn_sigma``).

    Example:
        >>> model = DiT(DiTConfig(attention="lit"))
        >>> model(torch.randn(2, 1, 16, 16), torch.tensor([10, 500]), torch.tensor([3, 7])).shape
        torch.Size([2, 2, 16, 16])
    """

    def __init__(self, cfg: DiTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D, p = cfg.hidden, cfg.patch_size
        self.patch = nn.Conv2d(cfg.in_channels, D, p, stride=p)
        self.t_mlp = nn.Sequential(nn.Linear(256, D), nn.SiLU(), nn.Linear(D, D))
        self.y_emb = nn.Embedding(cfg.num_classes, D)
        self.blocks = nn.ModuleList(DiTBlock(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.adaLN_out = nn.Sequential(nn.SiLU(), nn.Linear(D, 2 * D))
        self.out = nn.Linear(D, p * p * cfg.out_channels)
        for layer in (self.adaLN_out[-1], self.out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        # The class embedding starts at unit scale (PyTorch's default), not DiT's std 0.02: DiT also
        # shrinks its timestep MLP to std 0.02 and trains for 400K steps, whereas here the timestep
        # MLP keeps PyTorch's default init and its output is ~10x a 0.02 class embedding, so the class
        # signal in c = emb(t) + emb(y) was drowned and a few thousand steps sampled at chance.
        nn.init.normal_(self.y_emb.weight, std=1.0)

    def check_input(self, x: torch.Tensor) -> tuple[int, int]:
        """``x`` must be ``[B, C, H, W]`` with H and W divisible by the patch size; returns the grid."""
        cfg = self.cfg
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != cfg.in_channels:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected images [B, {cfg.in_channels}, H, W], got {got}")
        H, W = x.shape[2:]
        if H % cfg.patch_size or W % cfg.patch_size:
            raise ValueError(
                f"x: image size {H}x{W} is not divisible by patch_size={cfg.patch_size}; "
                f"use sides that are multiples of {cfg.patch_size}"
            )
        return H // cfg.patch_size, W // cfg.patch_size

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h, w = self.check_input(x)
        cfg, B = self.cfg, x.shape[0]
        if t.shape != (B,) or y.shape != (B,):
            raise ValueError(f"t, y: expected shape [{B}] each, got {list(t.shape)} and {list(y.shape)}")
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        base = cfg.image_size // cfg.patch_size
        tokens = tokens + sincos_2d(cfg.hidden, h, w, base).to(tokens)[None]
        c = self.t_mlp(timestep_embedding(t, 256)) + self.y_emb(y)
        for block in self.blocks:
            tokens = block(tokens, c, (h, w))
        shift, scale = self.adaLN_out(c).chunk(2, dim=1)
        out = self.out(modulate(self.norm_out(tokens), shift, scale))  # [B, h*w, p*p*C]
        p, C = cfg.patch_size, cfg.out_channels
        out = out.view(B, h, w, p, p, C).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(B, C, h * p, w * p)


# ------------------------------------------------------------------------------- diffusion (diffusers)


BETA_SCHEDULES = ("linear", "squaredcos_cap_v2")


def make_scheduler(learn_sigma: bool, num_train_timesteps: int = 1000, beta_schedule: str = "linear"):
    """diffusers' ``DDPMScheduler``; ``learned_range`` variance when the model predicts it.

    ``beta_schedule="linear"`` is DiT's (betas 1e-4 .. 0.02); ``"squaredcos_cap_v2"`` is Improved
    DDPM's cosine schedule, which destroys small images less quickly (the linear schedule leaves a
    16x16 digit almost pure noise for the last ~40% of the timesteps).
    """
    from diffusers import DDPMScheduler

    if beta_schedule not in BETA_SCHEDULES:
        raise ValueError(f"beta_schedule: expected one of {BETA_SCHEDULES}, got {beta_schedule!r}")
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        beta_schedule=beta_schedule,
        variance_type="learned_range" if learn_sigma else "fixed_small",
        clip_sample=True,
    )


def _extract(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return a.to(torch.float32)[t][:, None, None, None]


def posterior_terms(scheduler, t: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample ``beta_t``, ``abar_t``, ``abar_{t-1}``, the posterior variance ``beta~_t`` (clipped at
    ``beta~_1`` for t = 0) and the posterior-mean coefficients of ``x0`` and ``x_t``, ``[B, 1, 1, 1]``."""
    betas = scheduler.betas.to(torch.float64)
    abar = scheduler.alphas_cumprod.to(torch.float64)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    post_var = betas * (1 - abar_prev) / (1 - abar)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    return {
        "beta": _extract(betas, t),
        "abar": _extract(abar, t),
        "post_logvar": _extract(post_logvar, t),
        "coef_x0": _extract(betas * abar_prev.sqrt() / (1 - abar), t),
        "coef_xt": _extract((1 - abar_prev) * (1 - betas).sqrt() / (1 - abar), t),
    }


def vlb_term(
    scheduler, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, v: torch.Tensor
) -> torch.Tensor:
    """Per-sample KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) in bits per dim, ``[B]``.

    ``eps`` is detached by the caller (the variance is learned through this term only, as in Improved
    DDPM); the model variance is ``exp(u log beta_t + (1 - u) log beta~_t)`` with ``u = (v + 1) / 2``.
    The t = 0 decoder term is this Gaussian KL as well (Improved DDPM uses a discretised likelihood there).
    """
    pt = posterior_terms(scheduler, t)
    mean_q = pt["coef_x0"] * x0 + pt["coef_xt"] * xt
    x0_pred = (xt - (1 - pt["abar"]).sqrt() * eps) / pt["abar"].sqrt()
    mean_p = pt["coef_x0"] * x0_pred + pt["coef_xt"] * xt
    u = (v + 1) / 2
    logvar_p = u * pt["beta"].log() + (1 - u) * pt["post_logvar"]
    kl = 0.5 * (
        -1
        + logvar_p
        - pt["post_logvar"]
        + (pt["post_logvar"] - logvar_p).exp()
        + (mean_q - mean_p) ** 2 * (-logvar_p).exp()
    )
    return kl.flatten(1).mean(1) / math.log(2.0)


def split_output(model: DiT, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(eps [B, C, H, W], v [B, C, H, W] or None)`` from a DiT output."""
    C = model.cfg.in_channels
    return (out[:, :C], out[:, C:]) if model.cfg.learn_sigma else (out, None)


def noisy_batch(scheduler, x0: torch.Tensor, generator: torch.Generator | None = None):
    """``(x_t, t, noise)`` with ``t`` uniform over the training timesteps."""
    B = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (B,), generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    return scheduler.add_noise(x0, noise, t), t, noise


def diffusion_loss(
    model: DiT, scheduler, x0, xt, t, noise, y
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
    """DiT's loss ``MSE(eps, noise) + L_vlb`` (the latter only with ``learn_sigma``).

    Returns ``(loss, {"mse": ..., "vlb": ...}, model output)``.
    """
    out = model(xt, t, y)
    eps, v = split_output(model, out)
    mse = F.mse_loss(eps, noise)
    parts = {"mse": float(mse.detach())}
    loss = mse
    if v is not None:
        vlb = vlb_term(scheduler, x0, xt, t, eps.detach(), v).mean()
        parts["vlb"] = float(vlb.detach())
        loss = loss + vlb
    return loss, parts, out


@torch.no_grad()
def sample(
    model: DiT,
    scheduler,
    y: torch.Tensor,
    size: int | None = None,
    steps: int = 50,
    sampler: str = "ddpm",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Generate ``[B, C, size, size]`` images of classes ``y: [B]`` in ``steps`` reverse steps.

    ``sampler="ddpm"`` is diffusers' ``DDPMScheduler`` on a strided schedule (it uses the learned
    variance when the model has one); ``"ddim"`` is a deterministic ``DDIMScheduler`` (eta = 0; the
    variance channels are ignored). ``size`` defaults to the training resolution; any multiple of the
    patch size works.
    """
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"sampler: expected 'ddpm' or 'ddim', got {sampler!r}")
    size = size or model.cfg.image_size
    if size % model.cfg.patch_size:
        raise ValueError(f"size: {size} is not divisible by patch_size={model.cfg.patch_size}")
    cls = DDPMScheduler if sampler == "ddpm" else DDIMScheduler
    config = dict(scheduler.config)
    if sampler == "ddim":
        config.pop("variance_type", None)
    sched = cls.from_config(config)
    sched.set_timesteps(steps)
    was_training = model.training
    model.eval()
    x = torch.randn(y.shape[0], model.cfg.in_channels, size, size, generator=generator)
    for t in sched.timesteps:
        out = model(x, t.expand(y.shape[0]), y)
        if sampler == "ddim":
            out = split_output(model, out)[0]
        x = sched.step(out, t, x, generator=generator).prev_sample
    model.train(was_training)
    return x
