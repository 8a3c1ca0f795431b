"""Test helpers shared by the op test files: error metrics, random inputs and the op-parity harness.

Import from a test file in this folder with ``from _helpers import rmse, rel_err, ...`` (pytest puts
``tests/ops`` on ``sys.path`` because the test folders have no ``__init__.py``).

The parity harness is how every family compares a fast op with its reference: :func:`run_op` runs
one op forward and backward with fixed random cotangents on the output and the final state and
returns the output, final state and every gradient by name; :func:`assert_results_close` compares
two such results; :func:`assert_parity` does both for a fast op and its reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

#: what :func:`run_op` returns: ``"o"``, ``"ht"`` (ops with a state) and ``"d<input name>"``
Results = dict[str, torch.Tensor | None]


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


def _differentiable(x: object) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def run_op(
    fn: Callable[..., object],
    inputs: Mapping[str, object],
    *,
    final_state: bool = True,
    seed: int = 1,
    **kwargs,
) -> Results:
    """Forward and backward of ``fn(**inputs, **kwargs)``; returns ``{"o", "ht", "d<name>", ...}``.

    Every floating-point tensor in ``inputs`` is differentiated: ``fn`` gets a fresh leaf copy (so
    runs never share ``.grad``) and its gradient comes back as ``"d" + name`` (None if it got
    none). Other inputs (flags, ints, None, integer ``cu_seqlens``) and ``kwargs`` pass through.
    With ``final_state`` the op is called with ``output_final_state=True`` and must return
    ``(o, ht)``; otherwise it returns ``o`` alone and the result has no ``"ht"``.

    The loss is ``sum(o * do) + sum(ht * dht)`` in float64, with ``do`` then ``dht`` drawn standard
    normal from a generator seeded with ``seed``: every op run on the same shapes gets the same
    cotangents (cast to the output's dtype by autograd).
    """
    leaves = {
        n: (x.detach().clone().requires_grad_() if _differentiable(x) else x) for n, x in inputs.items()
    }
    if final_state:
        o, ht = fn(**leaves, output_final_state=True, **kwargs)
        assert ht is not None, "output_final_state=True returned no final state"
    else:
        o, ht = fn(**leaves, **kwargs), None
    gen = torch.Generator().manual_seed(seed)
    loss = (o.double() * torch.randn(o.shape, generator=gen, dtype=torch.float64)).sum()
    results: Results = {"o": o.detach()}
    if ht is not None:
        loss = loss + (ht.double() * torch.randn(ht.shape, generator=gen, dtype=torch.float64)).sum()
        results["ht"] = ht.detach()
    loss.backward()
    results.update({f"d{n}": x.grad for n, x in leaves.items() if _differentiable(x)})
    return results


def assert_results_close(
    got: Results,
    ref: Results,
    tol: float,
    what: str = "",
    nonzero: bool = True,
) -> None:
    """Every entry of ``got`` matches the reference ``ref`` (two :func:`run_op` results).

    Same names, None on both sides or neither, same dtype and shape, finite, and relative RMSE
    below ``tol``. With ``nonzero`` (the default) every reference entry must have a nonzero value,
    so no comparison passes vacuously; turn it off only where zeros are the right answer.
    """
    assert got.keys() == ref.keys(), f"{what}: results {sorted(got)} != reference {sorted(ref)}"
    for name, b in ref.items():
        a = got[name]
        assert (a is None) == (b is None), f"{what} {name}: one side has no value"
        if b is None:
            continue
        assert a.dtype == b.dtype, f"{what} {name}: dtype {a.dtype} != reference {b.dtype}"
        if nonzero:
            assert b.abs().sum() > 0, f"{what} {name}: the reference is all zero (vacuous comparison)"
        assert_rel_close(a, b, tol, f"{what} {name}")


def assert_parity(
    fast: Callable[..., object],
    reference: Callable[..., object],
    inputs: Mapping[str, object],
    *,
    tol: float | None = None,
    what: str = "",
    final_state: bool = True,
    nonzero: bool = True,
) -> tuple[Results, Results]:
    """Run ``fast`` and ``reference`` on the same inputs and cotangents (:func:`run_op`) and compare
    the output, final state and every gradient (:func:`assert_results_close`).

    ``tol`` defaults to :func:`tol_for` the dtype of ``inputs["q"]``. Returns ``(got, ref)`` for
    further checks (dtypes of the outputs, say).
    """
    if tol is None:
        tol = tol_for(inputs["q"].dtype)  # type: ignore[union-attr]
    ref = run_op(reference, inputs, final_state=final_state)
    got = run_op(fast, inputs, final_state=final_state)
    assert_results_close(got, ref, tol, what, nonzero=nonzero)
    return got, ref


# ------------------------------------------------------------------------------------------------
# references for fla's layout and direction options, built from a reference op by plain tensor
# reshuffles (so the option is proven against the naive loop, not against its own implementation)


def v_first_reference(fn: Callable[..., object]) -> Callable[..., object]:
    """``fn`` (states ``[N, H, K, V]``) taking and returning fla's ``state_v_first`` layout
    ``[N, H, V, K]`` instead: the state is transposed on the way in and out."""

    def call(*args, initial_state=None, output_final_state=False, **kwargs):
        h0 = None if initial_state is None else initial_state.transpose(-1, -2)
        o, ht = fn(*args, initial_state=h0, output_final_state=output_final_state, **kwargs)
        return o, (None if ht is None else ht.transpose(-1, -2))

    return call


def reversal_index(T: int, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    """Time indices that reverse each packed sequence (the whole of ``0..T-1`` without
    ``cu_seqlens``); applying them twice is the identity."""
    cu = [0, T] if cu_seqlens is None else cu_seqlens.tolist()
    return torch.cat([torch.arange(b - 1, a - 1, -1) for a, b in zip(cu[:-1], cu[1:])])


def time_reversed_reference(fn: Callable[..., object], per_token: tuple[str, ...]) -> Callable[..., object]:
    """``fn`` run on time-reversed inputs with its output reversed back: the reference for
    ``reverse=True`` (each packed sequence reversed on its own when ``cu_seqlens`` is given).

    ``per_token`` names the keyword inputs with time on dim 1; the final state is the one after
    the last step taken, i.e. after each sequence's first token.
    """

    def call(**kwargs):
        idx = reversal_index(kwargs["q"].shape[1], kwargs.get("cu_seqlens"))
        flipped = {
            n: (x.index_select(1, idx) if n in per_token and x is not None else x) for n, x in kwargs.items()
        }
        o, ht = fn(**flipped)
        return o.index_select(1, idx), ht

    return call
