"""In-context regression tasks: each prompt is a fresh function f and points (x_i, f(x_i) + noise).

Function classes (Garg et al. 2022; Akyürek et al. 2022; Mahankali et al. 2023):

- ``"linear"``: ``y = w^T x + sigma * eps`` with ``w ~ N(0, w_std^2 I_d)``;
- ``"sparse_linear"``: as linear, but ``w`` has ``sparsity`` non-zero entries on a random support;
- ``"relu2"``: a random two-layer ReLU net ``y = sqrt(2 / hidden) * a^T relu(U x)`` with ``U, a ~ N(0, 1)``.

Inputs are ``x ~ N(0, I_d)`` or ``x ~ N(0, covariance)``. Batches are generated on the fly from the
task's own seeded ``torch.Generator``, so two tasks built with the same seed give the same stream;
``state_dict`` / ``load_state_dict`` save and restore the stream's position, which is how
:class:`PromptStream` (the training loop's batch source) resumes exactly.

Example:
    >>> task = ICLTask(d=5, n_points=21, noise_std=0.0, seed=0)
    >>> batch = task.sample(64)          # batch.x: [64, 21, 5], batch.y: [64, 21], batch.w: [64, 5]
    >>> ctx_x, ctx_y = batch.x[:, :20], batch.y[:, :20]
    >>> batches = PromptStream(task, batch_size=64)   # linearlab.train.train(model, batches, ...)
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

TARGETS = ("linear", "sparse_linear", "relu2")


@dataclass
class ICLBatch:
    """One batch of prompts.

    Attributes:
        x: ``[B, N, d]`` inputs.
        y: ``[B, N]`` noisy targets.
        w: ``[B, d]`` the task weights for linear targets, ``None`` for ``"relu2"``.
    """

    x: torch.Tensor
    y: torch.Tensor
    w: torch.Tensor | None


class ICLTask:
    """A seeded stream of in-context regression prompts.

    Args:
        d: input dimension (>= 1).
        n_points: points per prompt ``N`` (context plus queries; >= 1).
        noise_std: label noise ``sigma`` (>= 0).
        target: one of ``"linear"``, ``"sparse_linear"``, ``"relu2"``.
        covariance: optional ``[d, d]`` symmetric positive-definite input covariance (default ``I``).
        w_std: standard deviation of the linear weights ``tau`` (default 1).
        sparsity: non-zeros of ``w`` for ``"sparse_linear"`` (default ``max(1, d // 3)``).
        hidden: width of the ``"relu2"`` target net (default 100).
        seed: seed of the task's generator.
        dtype: dtype of the generated tensors (default float32).
    """

    def __init__(
        self,
        d: int,
        n_points: int,
        noise_std: float = 0.0,
        target: str = "linear",
        covariance: torch.Tensor | None = None,
        w_std: float = 1.0,
        sparsity: int | None = None,
        hidden: int = 100,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(d, int) or d < 1:
            raise ValueError(f"d: expected an integer >= 1, got {d!r}")
        if not isinstance(n_points, int) or n_points < 1:
            raise ValueError(f"n_points: expected an integer >= 1, got {n_points!r}")
        if not (noise_std >= 0 and math.isfinite(noise_std)):
            raise ValueError(f"noise_std: expected a finite value >= 0, got {noise_std!r}")
        if target not in TARGETS:
            raise ValueError(f"target: expected one of {TARGETS}, got {target!r}")
        if not (w_std > 0 and math.isfinite(w_std)):
            raise ValueError(f"w_std: expected a finite value > 0, got {w_std!r}")
        if sparsity is None:
            sparsity = max(1, d // 3)
        if not isinstance(sparsity, int) or not 1 <= sparsity <= d:
            raise ValueError(f"sparsity: expected an integer in [1, d={d}], got {sparsity!r}")
        if not isinstance(hidden, int) or hidden < 1:
            raise ValueError(f"hidden: expected an integer >= 1, got {hidden!r}")
        self.d, self.n_points, self.noise_std, self.target = d, n_points, float(noise_std), target
        self.w_std, self.sparsity, self.hidden, self.dtype = float(w_std), sparsity, hidden, dtype
        self.covariance = None if covariance is None else _check_covariance(covariance, d)
        # the Cholesky factor maps white noise to N(0, covariance); computed once in float64
        self._chol = None if self.covariance is None else torch.linalg.cholesky(self.covariance.double())
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, batch_size: int, n_points: int | None = None) -> ICLBatch:
        """Draw ``batch_size`` fresh prompts of ``n_points`` (default ``self.n_points``) points each."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        n = self.n_points if n_points is None else n_points
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n_points: expected an integer >= 1, got {n!r}")
        # generate directly in the output dtype: float64 sampling is several times slower on CPU
        g, d, dt = self.generator, self.d, self.dtype
        x = torch.randn(batch_size, n, d, generator=g, dtype=dt)
        if self._chol is not None:
            x = x @ self._chol.T.to(dt)
        w = None
        if self.target == "relu2":
            u = torch.randn(batch_size, self.hidden, d, generator=g, dtype=dt)
            a = torch.randn(batch_size, self.hidden, generator=g, dtype=dt)
            f = torch.relu(x @ u.transpose(1, 2)) @ a.unsqueeze(-1)
            f = f.squeeze(-1) * math.sqrt(2.0 / self.hidden)
        else:
            w = torch.randn(batch_size, d, generator=g, dtype=dt) * self.w_std
            if self.target == "sparse_linear":
                # keep `sparsity` coordinates chosen uniformly at random per prompt
                ranks = torch.rand(batch_size, d, generator=g, dtype=dt).argsort(-1).argsort(-1)
                w = w * (ranks < self.sparsity)
            f = (x @ w.unsqueeze(-1)).squeeze(-1)
        y = f + self.noise_std * torch.randn(batch_size, n, generator=g, dtype=dt)
        return ICLBatch(x=x, y=y, w=w)

    def batches(self, batch_size: int, n_points: int | None = None) -> Iterator[ICLBatch]:
        """An endless stream of ``sample(batch_size, n_points)``."""
        while True:
            yield self.sample(batch_size, n_points)

    def state_dict(self) -> dict[str, Any]:
        """The generator's position as JSON values (the state bytes in base64)."""
        state = self.generator.get_state().numpy().tobytes()
        return {"generator": base64.b64encode(state).decode("ascii")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the stream from a :meth:`state_dict`: the next ``sample`` is the one that followed it."""
        try:
            raw = base64.b64decode(state["generator"], validate=True)
            self.generator.set_state(torch.frombuffer(bytearray(raw), dtype=torch.uint8))
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise ValueError(
                f"state: expected {{'generator': <base64 generator state>}}, got {state!r:.80} ({err})"
            ) from None


class PromptStream:
    """The batch source of a training loop: ``stream(step) -> (x [B, N, d], y [B, N])``, the next
    ``task.sample(batch_size)`` on every call.

    Batches come from the task's generator in call order, not from the step number, so the stream
    carries its position in ``state_dict`` / ``load_state_dict`` (JSON values): ``linearlab.train.train``
    stores it in every checkpoint, and a resumed run draws exactly the batches an uninterrupted one
    would have drawn.
    """

    def __init__(self, task: ICLTask, batch_size: int) -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size!r}")
        self.task, self.batch_size = task, batch_size

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.task.sample(self.batch_size)
        return batch.x, batch.y

    def state_dict(self) -> dict[str, Any]:
        return self.task.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.load_state_dict(state)


def _check_covariance(cov: torch.Tensor, d: int) -> torch.Tensor:
    if not isinstance(cov, torch.Tensor) or cov.shape != (d, d):
        shape = tuple(cov.shape) if isinstance(cov, torch.Tensor) else type(cov).__name__
        raise ValueError(f"covariance: expected a [{d}, {d}] tensor, got {shape}")
    cov = cov.double()
    if not torch.allclose(cov, cov.T, atol=1e-10):
        raise ValueError("covariance: expected a symmetric matrix")
    if torch.linalg.eigvalsh(cov).min() <= 0:
        raise ValueError("covariance: expected a positive-definite matrix (smallest eigenvalue <= 0)")
    return cov
