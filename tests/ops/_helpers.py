"""Test helpers shared by the op test files: error metrics and random inputs.

Import from a test file in this folder with ``from _helpers import rmse, rel_err, ...`` (pytest puts
``tests/ops`` on ``sys.path`` because the test folders have no ``__init__.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rmse(x: torch.Tensor) -> float:
    """Root mean square of ``x`` (computed in float64)."""
    return x.detach().double().pow(2).mean().sqrt().item()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative RMSE ``rmse(a - b) / rmse(b)``; ``b`` is the reference. 0 when both are exactly 0."""
    num = rmse(a.detach().double() - b.detach().double())
    den = rmse(b)
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den


def assert_rel_close(a: torch.Tensor, b: torch.Tensor, tol: float, what: str = "") -> None:
    """Assert same shape, all finite, and ``rel_err(a, b) < tol``, with a readable message."""
    assert a.shape == b.shape, f"{what}: shape {tuple(a.shape)} != {tuple(b.shape)}"
    assert torch.isfinite(a).all(), f"{what}: non-finite values in the result"
    err = rel_err(a, b)
    assert err < tol, f"{what}: relative RMSE {err:.3e} >= {tol:.1e}"


def tol_for(dtype: torch.dtype) -> float:
    """Parity tolerance on relative RMSE used across op tests."""
    return {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 2e-2, torch.float16: 2e-2}[dtype]


def randn(*shape: int, dtype: torch.dtype = torch.float64, requires_grad: bool = True) -> torch.Tensor:
    """A standard normal leaf tensor."""
    return torch.randn(*shape, dtype=dtype).requires_grad_(requires_grad)


def make_qkv(
    B: int,
    T: int,
    H: int,
    K: int,
    V: int,
    dtype: torch.dtype = torch.float64,
    requires_grad: bool = True,
    positive: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k: [B, T, H, K]``, ``v: [B, T, H, V]`` leaves; ``positive`` maps q, k through elu + 1."""
    q = torch.randn(B, T, H, K, dtype=torch.float64)
    k = torch.randn(B, T, H, K, dtype=torch.float64)
    v = torch.randn(B, T, H, V, dtype=torch.float64)
    if positive:
        q, k = F.elu(q) + 1, F.elu(k) + 1
    return tuple(x.to(dtype).requires_grad_(requires_grad) for x in (q, k, v))  # type: ignore[return-value]


def make_log_gate(
    *shape: int,
    low: float = -1.0,
    high: float = 0.0,
    dtype: torch.dtype = torch.float64,
    requires_grad: bool = True,
) -> torch.Tensor:
    """Log-space decay gate, uniform in ``[low, high]`` (both <= 0), as a leaf tensor."""
    if not low <= high <= 0:
        raise ValueError(f"make_log_gate: need low <= high <= 0, got low={low}, high={high}")
    g = low + (high - low) * torch.rand(*shape, dtype=torch.float64)
    return g.to(dtype).requires_grad_(requires_grad)


def grads(tensors: list[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """Copies of ``.grad`` of each tensor (None stays None), then clears them for the next run."""
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        out.append(None if t.grad is None else t.grad.detach().clone())
        t.grad = None
    return out


def backward_with_cotangents(
    o: torch.Tensor, ht: torch.Tensor | None, do: torch.Tensor, dht: torch.Tensor | None
) -> None:
    """Back-propagate random cotangents on the output and (if given) the final state."""
    loss = (o.double() * do.double()).sum()
    if ht is not None and dht is not None:
        loss = loss + (ht.double() * dht.double()).sum()
    loss.backward()
