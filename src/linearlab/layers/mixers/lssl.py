"""Linear State-Space Layer (LSSL) with a fixed HiPPO-LegS matrix and learnable per-channel step sizes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.mixer_checks import check_mixer_input
from linearlab.layers.mixer_state import StateShapes, check_state, shape
from linearlab.layers.precision import compute_dtype
from linearlab.layers.registry import register_mixer
from linearlab.papers import MIXERS, declare_paper


def hippo_legs(N: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO-LegS ``A: [N, N]`` and ``B: [N]``.

    ``A_nk = -sqrt(2n+1) sqrt(2k+1)`` for ``n > k``, ``-(n+1)`` for ``n = k``, 0 above the diagonal;
    ``B_n = sqrt(2n+1)``.
    """
    r = torch.sqrt(2 * torch.arange(N, dtype=dtype) + 1)
    A = -torch.tril(torch.outer(r, r), diagonal=-1) - torch.diag(torch.arange(1, N + 1, dtype=dtype))
    return A, r.clone()


def bilinear(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) discretisation per channel.

    ``A: [N, N]``, ``B: [N]``, ``dt: [D]`` -> ``Ab: [D, N, N] = (I - dt/2 A)^-1 (I + dt/2 A)`` and
    ``Bb: [D, N] = (I - dt/2 A)^-1 dt B``.
    """
    eye = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)
    half = (dt / 2)[:, None, None] * A
    # one batched solve instead of an explicit inverse (better conditioned)
    rhs = torch.cat([eye + half, (dt[:, None] * B)[..., None]], dim=-1)
    if torch.equal(A, A.tril()):
        # lower-triangular A (HiPPO-LegS): a triangular solve, several times cheaper than LU
        sol = torch.linalg.solve_triangular(eye - half, rhs, upper=False)
    else:
        sol = torch.linalg.solve(eye - half, rhs)
    return sol[..., :-1], sol[..., -1]


def krylov(
    Ab: torch.Tensor, Bb: torch.Tensor, L: int, with_power: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[Bb, Ab Bb, ..., Ab^{L-1} Bb]: [D, N, L]`` and ``Ab^L: [D, N, N]`` (None unless ``with_power``).

    The full Krylov matrix, for analysis and tests; the layer itself never forms it (see
    :class:`LinearStateSpaceLayer`, which works in blocks with :func:`doubling` and :func:`left_rows`).

    Both by repeated squaring: each doubling step costs one batched matmul, so the length-L kernel
    needs ``O(log L)`` steps.
    """
    X = Bb[..., None]
    power = Ab  # Ab^(current length)
    while X.shape[-1] < L:
        X = torch.cat([X, power @ X], dim=-1)
        power = power @ power
    X = X[..., :L]
    if not with_power:
        return X, None
    # power is Ab^(2^k) >= L; recompute Ab^L exactly from the binary expansion of L
    result = torch.eye(Ab.shape[-1], dtype=Ab.dtype, device=Ab.device).expand_as(Ab)
    base, n = Ab, L
    while n:
        if n & 1:
            result = result @ base
        base = base @ base
        n >>= 1
    return X, result


def causal_fft_conv(u: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """``y_t = sum_{s<=t} K_{t-s} u_s`` along the last dim: ``u: [B, D, L]``, ``K: [D, L]``.

    Zero-padding to ``2L`` turns the FFT's circular convolution into a linear one.
    """
    L = u.shape[-1]
    n = 2 * L
    y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(K, n=n), n=n)
    return y[..., :L]


def split_lengths(T: int) -> tuple[int, int]:
    """Block length ``s`` (a power of two near ``sqrt(T)``) and block count ``n = ceil(T / s)``."""
    s = 1 << (T.bit_length() // 2)
    return s, -(-T // s)


def squarings(Ab: torch.Tensor, s: int) -> list[torch.Tensor]:
    """``[Ab, Ab^2, Ab^4, ..., Ab^(s/2)]`` for a power of two ``s`` (empty for ``s = 1``)."""
    powers = [Ab] if s > 1 else []
    while len(powers) and 1 << len(powers) < s:
        powers.append(powers[-1] @ powers[-1])
    return powers


def doubling(powers: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``[x, Ab x, ..., Ab^(s-1) x]`` stacked on a new last dim, from ``powers = squarings(Ab, s)``.

    ``x: [..., D, N]`` (any leading batch dims), ``powers[k]: [D, N, N]`` -> ``[..., D, N, s]``;
    each step doubles the length with one batched matmul.
    """
    X = x[..., None]
    for power in powers:
        X = torch.cat([X, power @ X], dim=-1)
    return X


def left_rows(C: torch.Tensor, p_powers: list[torch.Tensor], n: int) -> torch.Tensor:
    """``[C, C P, ..., C P^(n-1)]`` from ``p_powers = [P, P^2, P^4, ...]``: ``C: [D, N]`` -> ``[D, n, N]``.

    The row-vector form of :func:`doubling`: one batched matmul per doubling.
    """
    X = C[:, None, :]
    for power in p_powers:
        if X.shape[1] >= n:
            break
        X = torch.cat([X, X @ power], dim=1)
    return X[:, :n]


def horner_tree(z: torch.Tensor, p_powers: list[torch.Tensor]) -> torch.Tensor:
    """``sum_i P^(n-1-i) z_i`` for ``z: [n, ..., D, N]`` (a power of two ``n``), ``p_powers`` as in :func:`left_rows`.

    Pairwise: level k merges neighbouring partial sums with ``P^(2^k)`` in one batched matmul, so
    the ``n`` matrix-vector products of a sequential Horner scan become ``log2(n)`` calls.
    """
    level = 0
    while z.shape[0] > 1:
        # einsum batches over the D channels with every block as a column: broadcasting ``@``
        # would copy P once per block
        z = torch.einsum("dkn,...dn->...dk", p_powers[level], z[0::2]) + z[1::2]
        level += 1
    return z[0]


@register_mixer("lssl")
class LinearStateSpaceLayer(nn.Module):
    """LSSL: one HiPPO-LegS state-space model per channel, then GELU and a position-wise linear map.

    Paper: Gu, Johnson, Goel, Saab, Dao, Rudra, Re, "Combining Recurrent, Convolutional, and
    Continuous-time Models with Linear State-Space Layers" (NeurIPS 2021, arXiv 2110.13985).

    Per channel ``c``: ``x_t = Ab_c x_{t-1} + Bb_c u_t``, ``y_t = C_c x_t + D_c u_t`` with the bilinear
    discretisation of the fixed HiPPO-LegS ``(A, B)`` at a learnable step ``dt_c`` (log-uniform
    init in ``[dt_min, dt_max]``) ("LSSL-fixed": A and B are not trained). Training runs the
    convolution ``y = K * u + D u`` with ``K = (C Bb, C Ab Bb, ...)`` via FFT; a single-token step
    runs the recurrence. Output: ``W_o GELU(y)``.

    The kernel is built in blocks of ``s ~ sqrt(T)`` steps, ``K_(i s + j) = (C Ab^(i s)) (Ab^j Bb)``:
    ``log2 T`` squarings of the ``N x N`` matrix per channel (``O(N^3 log T)``), ``O(N^2 sqrt T)``
    for the two factor sets and ``O(N T)`` for their product; the FFT convolution is
    ``O(T log T)``. No ``[D, N, T]`` Krylov tensor is formed (at ``D = 256, N = 64, T = 2048``
    it would be 134 MB of float32 traffic per pass). The final state uses the same blocks.

    Args:
        d_model: model width ``D`` (= number of SSM channels).
        d_state: state size ``N`` per channel. Default: 64.
        dt_min, dt_max: range of the initial step sizes. Default: 1e-3, 1e-1.
        layer_idx, num_layers: position in the model (unused; accepted for the mixer contract).

    State: ``{"recurrent": [B, D, N]}`` (the SSM state after the last token; float32, or float64
    for float64 input: the SSM runs in ``compute_dtype(x)``).

    Example:
        >>> mixer = LinearStateSpaceLayer(32, d_state=16)
        >>> y, state = mixer(torch.randn(2, 100, 32))
    """

    A: torch.Tensor
    B: torch.Tensor

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        layer_idx: int = 0,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if d_state < 1:
            raise ValueError(f"d_state: must be >= 1, got {d_state}")
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"dt_min, dt_max: need 0 < dt_min <= dt_max, got {dt_min}, {dt_max}")
        self.d_model = d_model
        self.d_state = d_state
        A, B = hippo_legs(d_state)
        self.register_buffer("A", A.float())
        self.register_buffer("B", B.float())
        u = torch.rand(d_model)
        self.log_dt = nn.Parameter(math.log(dt_min) + u * (math.log(dt_max) - math.log(dt_min)))
        # C ~ N(0, 1/N) keeps the kernel's scale roughly independent of N
        self.C = nn.Parameter(torch.randn(d_model, d_state) / math.sqrt(d_state))
        self.D = nn.Parameter(torch.ones(d_model))
        self.o_proj = nn.Linear(d_model, d_model)
        self._disc_key: tuple | None = None
        self._disc: tuple[torch.Tensor, torch.Tensor] | None = None

    def discretize(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``Ab: [D, N, N]``, ``Bb: [D, N]`` at the current step sizes (computed in ``dtype``).

        Without autograd (decoding) the result is cached until ``log_dt`` changes: the batched
        ``N x N`` solve would otherwise dominate the cost of a single-token step.
        """
        if torch.is_grad_enabled():
            return bilinear(self.A.to(dtype), self.B.to(dtype), self.log_dt.to(dtype).exp())
        p = self.log_dt
        key = (p.data_ptr(), p._version, dtype, p.device, self.A.data_ptr(), self.A._version)
        if self._disc_key != key:
            self._disc = bilinear(self.A.to(dtype), self.B.to(dtype), p.to(dtype).exp())
            self._disc_key = key
        return self._disc

    def forward(
        self, x: torch.Tensor, state: dict[str, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``x: [B, T, D] -> y: [B, T, D]``; ``state`` as returned by the previous call (None at start)."""
        B, _ = check_mixer_input(x, self.d_model)
        check_state(state, self.state_shapes(B))
        # the powers of Ab and the long FFT convolution need at least float32
        sd = compute_dtype(x)
        u = x.to(sd).transpose(1, 2)  # [B, D, T]
        Ab, Bb = self.discretize(sd)
        C = self.C.to(sd)
        h0 = None if state is None else state["recurrent"].to(sd)
        if x.shape[1] == 1:
            h = Bb * u[..., 0, None]
            if h0 is not None:
                h = h + (Ab @ h0[..., None])[..., 0]
            y = (h * C).sum(-1)[..., None]
        else:
            y, h = self._convolve(u, Ab, Bb, C, h0)
        y = y + self.D.to(sd)[:, None] * u
        out = self.o_proj(F.gelu(y.transpose(1, 2).to(x.dtype)))
        return out, {"recurrent": h}

    @staticmethod
    def _convolve(
        u: torch.Tensor, Ab: torch.Tensor, Bb: torch.Tensor, C: torch.Tensor, h0: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convolutional mode. ``u: [B, D, T]`` -> ``y: [B, D, T]`` (without ``D u``), final state ``[B, D, N]``."""
        T = u.shape[-1]
        s, n = split_lengths(T)
        powers = squarings(Ab, s)
        P = powers[-1] @ powers[-1] if powers else Ab  # Ab^s
        R = doubling(powers, Bb)  # [D, N, s]: R[..., j] = Ab^j Bb
        p_powers = [P]  # P^(2^k) for 2^k < n: the left rows' doublings and the state's tree levels
        while 1 << len(p_powers) < n:
            p_powers.append(p_powers[-1] @ p_powers[-1])
        Lr = left_rows(C, p_powers, n)  # [D, n, N]: Lr[:, i] = C Ab^(i s)
        K = (Lr @ R).flatten(1)[:, :T]  # K_(i s + j) = C Ab^(i s) Ab^j Bb, without a [D, N, T] tensor
        y = causal_fft_conv(u, K)
        # final state sum_l Ab^(T-1-l) Bb u_l: per block of s steps one contraction with the
        # reversed right factors, then a pairwise Horner tree over the n blocks with P = Ab^s
        # (inputs left-padded to n*s, a power of two blocks, so the last block ends at step T - 1)
        n2 = 1 << (n - 1).bit_length()
        pad = n2 * s - T
        blocks = F.pad(u, (pad, 0)).unflatten(-1, (n2, s))  # [B, D, n2, s]
        z = torch.einsum("dkj,bdij->ibdk", R.flip(-1), blocks)  # [n2, B, D, N]
        h = horner_tree(z, p_powers)
        if h0 is not None:
            # the carried state adds C Ab^(t+1) h0 = Lr[i] . Ab^j (Ab h0) to y_(i s + j) and
            # Ab^T h0 to the final state
            Rh = doubling(powers, (Ab @ h0[..., None])[..., 0])  # [B, D, N, s]: Ab^(j+1) h0
            y = y + torch.einsum("dik,bdkj->bdij", Lr, Rh).flatten(-2)[..., :T]
            q, r = divmod(T - 1, s)  # T = q s + r + 1 with q < n
            carried = Rh[..., r]  # Ab^(r+1) h0
            for k, power in enumerate(p_powers):  # then P^q by the binary digits of q
                if q >> k & 1:
                    carried = (power @ carried[..., None])[..., 0]
            h = h + carried
        return y, h

    def state_shapes(self, batch_size: int) -> StateShapes:
        """The state a call takes and returns (see the class docstring and ``mixer_state``)."""
        return {"recurrent": shape("B D N", batch_size, self.d_model, self.d_state)}

    def state_size(self, seq_len: int) -> int:
        """Scalars per sequence: ``D * N``, independent of ``seq_len``."""
        return self.d_model * self.d_state


declare_paper(
    arxiv="2110.13985",
    short="LSSL",
    title="Combining Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers",
    authors="Gu, Johnson, Goel, Saab, Dao, Rudra, Ré",
    venue="NeurIPS 2021",
    area=MIXERS,
    status="partial",
    objects=(
        "linearlab.layers.mixers.lssl.LinearStateSpaceLayer",
        "linearlab.layers.mixers.lssl.hippo_legs",
        "linearlab.layers.mixers.lssl.bilinear",
    ),
    registered=("mixer:lssl",),
    usage=(
        "from linearlab.layers import create_mixer\n"
        'y, state = create_mixer("lssl", d_model=64, d_state=16)(x)  # FFT conv; recurrence when decoding'
    ),
    claim=(
        "sMNIST 99.53%, pMNIST 98.76%, sCIFAR 84.65%, and +24 accuracy points over prior methods on raw "
        "Speech Commands (length 16,000) (abstract)."
    ),
    note=(
        "LSSL-fixed only (HiPPO-LegS A and B are not trained); no recipe reproduces the sequence "
        "classification results yet."
    ),
)
