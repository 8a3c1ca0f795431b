"""A TopK sparse autoencoder (Gao et al. 2024 style) and its trainer on captured activations.

``z = TopK_k(ReLU(W_enc (x - b_dec) + b_enc))``, ``x_hat = W_dec z + b_dec``, decoder columns kept
at unit norm. Written here rather than taken from SAELens, whose trainer is built around a
TransformerLens model; activations from :func:`linearlab.analysis.hooks.run_with_cache` go straight
in. Training runs through :func:`linearlab.train.train` (resumable with a run directory).

Example:
    >>> sae = train_sae(acts, width=256, k=8, steps=2000)      # acts: [N, D]
    >>> x_hat, z = sae(acts)                                    # [N, D], [N, 256] with k non-zeros
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from linearlab.io import atomic_save_safetensors, check_input_path
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train


class TopKSAE(nn.Module):
    """TopK sparse autoencoder ``[..., d_in] -> ([..., d_in], [..., width])``.

    Args:
        d_in: activation width ``D``.
        width: dictionary size (number of latents).
        k: active latents per input (``1 <= k <= width``).
        seed: initialisation seed (encoder = decoder transpose at the start, as in Gao et al.).
    """

    def __init__(self, d_in: int, width: int, k: int, seed: int = 0) -> None:
        super().__init__()
        for name, value in (("d_in", d_in), ("width", width), ("k", k)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if k > width:
            raise ValueError(f"k: expected k <= width = {width}, got {k}")
        self.d_in, self.width, self.k = d_in, width, k
        g = torch.Generator().manual_seed(seed)
        w = torch.randn(d_in, width, generator=g)
        w = w / w.norm(dim=0, keepdim=True)
        self.W_dec = nn.Parameter(w)
        self.W_enc = nn.Parameter(w.T.clone())
        self.b_enc = nn.Parameter(torch.zeros(width))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.d_in:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected activations [..., {self.d_in}] (the SAE's d_in), got {got}")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x: [..., D] -> z: [..., width]`` with at most ``k`` non-zeros per row."""
        self._check(x)
        pre = torch.relu((x - self.b_dec) @ self.W_enc.T + self.b_enc)
        vals, idx = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, idx, vals)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z: [..., width] -> [..., D]``."""
        return z @ self.W_dec.T + self.b_dec

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encode(x)
        return self.decode(z), z

    @torch.no_grad()
    def normalize_decoder_(self) -> None:
        """Project decoder columns back to unit norm (the constraint after each optimizer step; a
        compensating encoder rescale would change which latents TopK picks, so there is none)."""
        self.W_dec.div_(self.W_dec.norm(dim=0).clamp_min(1e-8))

    def save(self, path: str | Path) -> Path:
        """Write weights and ``d_in/width/k`` as safetensors (atomically)."""
        meta = {"d_in": str(self.d_in), "width": str(self.width), "k": str(self.k)}
        return atomic_save_safetensors(path, dict(self.state_dict()), metadata=meta)

    @classmethod
    def load(cls, path: str | Path) -> TopKSAE:
        """Read an SAE written by :meth:`save`."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        path = check_input_path(path, "file", "path")
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        try:
            sae = cls(int(meta["d_in"]), int(meta["width"]), int(meta["k"]))
        except KeyError as err:
            raise ValueError(
                f"path: {str(path)!r} has no SAE metadata ({err}); was it written by TopKSAE.save?"
            ) from None
        sae.load_state_dict(load_file(str(path)))
        return sae


def fraction_of_variance_unexplained(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """``sum |x - x_hat|^2 / sum |x - mean(x)|^2`` over rows ``[N, D]``."""
    x, x_hat = x.double(), x_hat.double()
    return float(((x - x_hat) ** 2).sum() / ((x - x.mean(0)) ** 2).sum().clamp_min(1e-300))


def train_sae(
    acts: torch.Tensor,
    width: int,
    k: int,
    steps: int = 2000,
    lr: float = 1e-3,
    batch_size: int = 256,
    seed: int = 0,
    run_dir: RunDir | None = None,
    progress: bool = False,
) -> TopKSAE:
    """Train a :class:`TopKSAE` on ``acts: [N, D]`` with Adam on the mean squared error.

    Batches are drawn with a generator seeded by ``(seed, step)``, so a resumed run (``run_dir``
    with a checkpoint) sees the same batches. Decoder columns are renormalised after every step.
    """
    if not isinstance(acts, torch.Tensor) or acts.dim() != 2 or acts.shape[0] < 2:
        got = tuple(acts.shape) if isinstance(acts, torch.Tensor) else type(acts).__name__
        raise ValueError(f"acts: expected an [N, D] tensor of activations with N >= 2, got {got}")
    data = acts.detach().float()
    sae = TopKSAE(data.shape[1], width, k, seed=seed)
    with torch.no_grad():
        # start the decoder bias at the data mean (geometric-median-like init of Gao et al.)
        sae.b_dec.copy_(data.mean(0))
    n = data.shape[0]

    def batch_fn(step: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        return data[torch.randint(0, n, (min(batch_size, n),), generator=g)]

    def loss_fn(model: TopKSAE, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x_hat, _ = model(x)
        return ((x_hat - x) ** 2).sum(-1).mean(), {}

    cfg = TrainConfig(
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=0.0,
        warmup_steps=min(100, steps // 10),
        grad_clip=0.0,
        log_every=max(1, steps // 20),
        checkpoint_every=max(1, steps // 4) if run_dir is not None else 0,
        seed=seed,
        progress=progress,
        betas=(0.9, 0.999),
    )
    train(sae, batch_fn, loss_fn, cfg, run_dir=run_dir, resume=True, desc=f"SAE w={width} k={k}",
          on_step=lambda _s, m: m.normalize_decoder_())  # fmt: skip
    return sae.eval()
