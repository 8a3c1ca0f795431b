"""Linear long-horizon forecasters.

Every model maps a look-back window ``x: [B, L, C]`` to a forecast ``[B, H, C]`` and is
channel-independent (CI): one univariate map shared by all channels, unless a model offers
``individual=True`` (one map per channel). All models have ``loss(x, y)`` (MSE for point
forecasters, NLL for the probabilistic one) so one training loop serves all.

* ``repeat`` - the last observed value, repeated (LTSF-Linear's "Repeat" baseline).
* ``linear`` / ``nlinear`` / ``dlinear`` - Zeng, Chen, Zhang, Xu, "Are Transformers Effective for
  Time Series Forecasting?", AAAI 2023 (LTSF-Linear).
* ``mixlinear`` - Ma, Luo, Sha, "MixLinear: Extreme Low Resource Multivariate Time Series
  Forecasting with 0.1K Parameters", ICLR 2026 (arXiv 2410.02081).
* ``swift`` - Xie, Cao, "SWIFT: Mapping Sub-series with Wavelet Decomposition Improves Time Series
  Forecasting", arXiv 2501.16178 (SWIFT-Linear).
* ``fourier`` - a probabilistic forecaster whose per-step distribution over value bins comes from
  :class:`linearlab.layers.heads.fourier.FourierHead` (Gillman et al., ICLR 2025).

Example::

    model = create_forecaster("dlinear", lookback=336, horizon=96, n_channels=7)
    y_hat = model(x)                      # x: [32, 336, 7] -> [32, 96, 7]
    print(model.num_parameters())         # 64704
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from linearlab.layers.heads.fourier import FourierHead
from linearlab.papers import FORECASTING, declare_paper
from linearlab.registry import Registry

#: Forecaster classes by name (each class registers itself below); unknown names raise
#: ``UnknownNameError`` listing the known ones.
FORECASTERS: Registry[type[Forecaster]] = Registry("forecaster", argument="models")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")


class Forecaster(nn.Module):
    """Base class: shape checks, MSE loss and parameter counts.

    Shapes: ``forward(x: [B, L, C]) -> [B, H, C]``.
    """

    def __init__(self, lookback: int, horizon: int, n_channels: int) -> None:
        super().__init__()
        _check_positive(lookback=lookback, horizon=horizon, n_channels=n_channels)
        self.lookback = lookback
        self.horizon = horizon
        self.n_channels = n_channels

    def _check_input(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.lookback or x.shape[2] != self.n_channels:
            raise ValueError(
                f"x: expected [B, L={self.lookback}, C={self.n_channels}], got shape {tuple(x.shape)}"
            )

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Training loss for ``x: [B, L, C]``, ``y: [B, H, C]`` (MSE)."""
        return F.mse_loss(self(x), y)

    def num_parameters(self) -> int:
        """Parameter count as the papers report it (``numel``: a complex weight counts once)."""
        return sum(p.numel() for p in self.parameters())

    def num_real_parameters(self) -> int:
        """Real scalars: a complex weight counts twice."""
        return sum(p.numel() * (2 if p.is_complex() else 1) for p in self.parameters())


LINEAR_INITS = ("default", "average")


class _TimeLinear(nn.Module):
    """``nn.Linear(L, H)`` along time, shared by channels or one per channel (``individual``).

    Shapes: ``[B, C, L] -> [B, C, H]``. ``init="default"`` is ``nn.Linear``'s initialisation, as in
    LTSF-Linear at HEAD; ``init="average"`` sets every weight to ``1/L`` (each output starts as the
    window mean), as TSLib's DLinear and, per LTSF-Linear issue #39, the first DLinear release did.
    Biases keep the default initialisation in both cases.
    """

    def __init__(
        self, lookback: int, horizon: int, n_channels: int, individual: bool, init: str = "default"
    ) -> None:
        super().__init__()
        if init not in LINEAR_INITS:
            raise ValueError(f"init: expected one of {LINEAR_INITS}, got {init!r}")
        self.individual = individual
        shape = (n_channels, horizon, lookback) if individual else (horizon, lookback)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.empty(shape[:-1]))
        bound = 1.0 / math.sqrt(lookback)  # nn.Linear's default: U(-1/sqrt(in), 1/sqrt(in))
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        if init == "average":
            nn.init.constant_(self.weight, 1.0 / lookback)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.individual:
            return torch.einsum("bcl,chl->bch", x, self.weight) + self.bias
        return x @ self.weight.T + self.bias


@FORECASTERS.register("repeat")
class Repeat(Forecaster):
    """The last observed value repeated H times; no parameters (LTSF-Linear's "Repeat")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return x[:, -1:, :].expand(-1, self.horizon, -1)


@FORECASTERS.register("linear")
class Linear(Forecaster):
    """LTSF-Linear "Linear": ``y_c = W x_c + b`` along time (Zeng et al., AAAI 2023).

    Parameters: ``L*H + H`` (shared) or ``C*(L*H + H)`` (``individual=True``). ``init``:
    ``"default"`` (``nn.Linear``) or ``"average"`` (weights ``1/L``).
    """

    def __init__(
        self, lookback: int, horizon: int, n_channels: int, individual: bool = False, init: str = "default"
    ) -> None:
        super().__init__(lookback, horizon, n_channels)
        self.map = _TimeLinear(lookback, horizon, n_channels, individual, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        return self.map(x.transpose(1, 2)).transpose(1, 2)


@FORECASTERS.register("nlinear")
class NLinear(Linear):
    """LTSF-Linear "NLinear": subtract the last value, map linearly, add it back.

    The subtracted value is detached, as in the reference code. Same parameters as :class:`Linear`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        last = x[:, -1:, :].detach()
        return self.map((x - last).transpose(1, 2)).transpose(1, 2) + last


def moving_average(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Centred moving average along time of ``x: [B, L, C]``, edges padded by repeating the end values.

    This is Autoformer's ``series_decomp`` trend (``kernel_size`` odd keeps the length L).
    """
    front = (kernel_size - 1) // 2
    back = kernel_size - 1 - front
    padded = torch.cat([x[:, :1].expand(-1, front, -1), x, x[:, -1:].expand(-1, back, -1)], dim=1)
    return F.avg_pool1d(padded.transpose(1, 2), kernel_size, stride=1).transpose(1, 2)


@FORECASTERS.register("dlinear")
class DLinear(Forecaster):
    """LTSF-Linear "DLinear": trend = 25-step moving average, seasonal = rest, one linear map each.

    ``y = W_s seasonal + b_s + W_t trend + b_t``. Parameters: ``2 (L*H + H)`` shared. ``init``:
    ``"default"`` (``nn.Linear``, LTSF-Linear at HEAD) or ``"average"`` (weights ``1/L``, TSLib).
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_channels: int,
        individual: bool = False,
        kernel_size: int = 25,
        init: str = "default",
    ) -> None:
        super().__init__(lookback, horizon, n_channels)
        _check_positive(kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size (keeps length L), got {kernel_size}")
        self.kernel_size = kernel_size
        self.seasonal = _TimeLinear(lookback, horizon, n_channels, individual, init)
        self.trend = _TimeLinear(lookback, horizon, n_channels, individual, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        trend = moving_average(x, self.kernel_size)
        seasonal = x - trend
        out = self.seasonal(seasonal.transpose(1, 2)) + self.trend(trend.transpose(1, 2))
        return out.transpose(1, 2)


def conv1d_same(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Zero-padded "same" 1-D convolution: ``x: [N, C_in, T]``, ``weight: [C_out, C_in, k]`` (k odd).

    Equals ``F.conv1d(x, weight, padding=k // 2)``, computed as a sum of ``k`` shifted slices:
    CPU convolution kernels (and an unfold, which materialises ``k`` copies) are slow for the 1-2
    channel, many-series, long-window shapes used here.
    """
    k, length = weight.shape[-1], x.shape[-1]
    padded = F.pad(x, (k // 2, k // 2))
    out = None
    for j in range(k):
        term = torch.einsum("nct,oc->not", padded[..., j : j + length], weight[..., j])
        out = term if out is None else out + term
    return out


def _channel_independent(x: torch.Tensor) -> torch.Tensor:
    """``[B, L, C] -> [B*C, L]``: every channel becomes its own univariate series."""
    return x.transpose(1, 2).reshape(-1, x.shape[1])


def _back_to_channels(y: torch.Tensor, batch: int) -> torch.Tensor:
    """``[B*C, H] -> [B, H, C]``."""
    return y.reshape(batch, -1, y.shape[-1]).transpose(1, 2)


@FORECASTERS.register("mixlinear")
class MixLinear(Forecaster):
    """MixLinear (Ma, Luo, Sha, ICLR 2026): a time branch and a low-rank frequency branch on segments.

    With period ``w`` (24 for hourly data), ``n = L/w`` input and ``m = ceil(H/w)`` output segments,
    ``s_x = ceil(sqrt(n))`` and ``s_y = ceil(sqrt(m))``:

    1. subtract the window mean and add a shared ``Conv1d(1, 1, w+1)`` smoothing of the series;
    2. segment into ``X: [w, n]`` (phase x segment);
    3. time branch: pad segments to ``s_x^2``, view each phase as ``S: [s_x, s_x]``, compute
       ``W2 S W1^T`` with ``W1, W2: [s_y, s_x]`` (a Kronecker-factored segment map), flatten to
       ``s_y^2`` output segments;
    4. frequency branch: FFT over segments, keep ``lpf`` low bins, a rank-``rank`` complex map
       ``lpf -> rank -> m``, inverse FFT, real part;
    5. ``y = alpha * time + (1 - alpha) * freq + mean``, truncated to H.

    Parameters (complex weights counted once, as in the paper):
    ``(w+1) + 2 s_x s_y + rank*lpf + rank*m``; on ETTh1 (L=720) 59/87/105/195 for H=96/192/336/720
    with the official per-horizon ``lpf``. The complex weights start as real ``nn.Linear``-style
    uniform values (imaginary part 0); this initialisation is our reading of the reference.
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_channels: int,
        period: int = 24,
        lpf: int = 1,
        alpha: float = 0.95,
        rank: int = 2,
    ) -> None:
        super().__init__(lookback, horizon, n_channels)
        _check_positive(period=period, lpf=lpf, rank=rank)
        if period % 2:
            raise ValueError(
                f"period: expected an even period (smoothing kernel period+1 is odd), got {period}"
            )
        if lookback % period:
            raise ValueError(
                f"lookback: MixLinear needs a multiple of period={period}, got lookback={lookback}"
            )
        self.period = period
        self.n_in = lookback // period
        self.n_out = math.ceil(horizon / period)
        if lpf > self.n_in:
            raise ValueError(f"lpf: expected at most L/period={self.n_in} frequency bins, got {lpf}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha: expected a mixing weight in [0, 1], got {alpha}")
        self.lpf, self.alpha, self.rank = lpf, float(alpha), rank
        self.s_x = math.ceil(math.sqrt(self.n_in))
        self.s_y = math.ceil(math.sqrt(self.n_out))
        self.smooth = nn.Conv1d(1, 1, period + 1, padding=period // 2, bias=False)
        self.w1 = nn.Parameter(torch.empty(self.s_y, self.s_x))
        self.w2 = nn.Parameter(torch.empty(self.s_y, self.s_x))
        # Complex weights in the precision of the default dtype (``.double()`` would drop their
        # imaginary part, so build float64 models under ``torch.set_default_dtype(torch.float64)``).
        cdtype = torch.promote_types(torch.get_default_dtype(), torch.complex64)
        self.v = nn.Parameter(torch.empty(rank, lpf, dtype=cdtype))
        self.u = nn.Parameter(torch.empty(self.n_out, rank, dtype=cdtype))
        with torch.no_grad():
            for weight in (self.w1, self.w2, self.v, self.u):
                bound = 1.0 / math.sqrt(weight.shape[1])
                weight.copy_(torch.empty(weight.shape, dtype=torch.float64).uniform_(-bound, bound))

    def _unsegment(self, seg: torch.Tensor) -> torch.Tensor:
        """``[N, w, k]`` (phase x segment) -> ``[N, H]`` in time order, truncated to H."""
        return seg.transpose(1, 2).reshape(seg.shape[0], -1)[:, : self.horizon]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        series = _channel_independent(x)  # [N, L]
        mean = series.mean(dim=1, keepdim=True)
        series = series - mean
        series = series + conv1d_same(series[:, None], self.smooth.weight).squeeze(1)
        seg = series.reshape(-1, self.n_in, self.period).transpose(1, 2)  # [N, w, n]

        padded = F.pad(seg, (0, self.s_x**2 - self.n_in))
        square = padded.reshape(*seg.shape[:2], self.s_x, self.s_x)
        out = torch.einsum("ai,nwij,bj->nwab", self.w2, square, self.w1)
        time_part = self._unsegment(out.reshape(*seg.shape[:2], self.s_y**2))

        spec = torch.fft.fft(seg, dim=-1)[..., : self.lpf]  # [N, w, lpf]
        low_rank = (spec @ self.v.T) @ self.u.T  # [N, w, m]
        freq_part = self._unsegment(torch.fft.ifft(low_rank, dim=-1).real)

        y = self.alpha * time_part + (1.0 - self.alpha) * freq_part + mean
        return _back_to_channels(y, x.shape[0])


def haar_forward(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-level Haar DWT along the last axis (even length): approximation and detail, each half length."""
    even, odd = x[..., 0::2], x[..., 1::2]
    return (even + odd) / math.sqrt(2.0), (even - odd) / math.sqrt(2.0)


def haar_inverse(approx: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`haar_forward`: interleave ``(a+d)/sqrt2`` and ``(a-d)/sqrt2``."""
    even = (approx + detail) / math.sqrt(2.0)
    odd = (approx - detail) / math.sqrt(2.0)
    return torch.stack([even, odd], dim=-1).flatten(-2)


@FORECASTERS.register("swift")
class SWIFT(Forecaster):
    """SWIFT-Linear (Xie & Cao, arXiv 2501.16178): Haar wavelet, band mixing, one shared linear map.

    1. subtract the window mean (the ETT scripts' ``--no_revin``);
    2. one-level Haar DWT: bands ``[a; d]: [2, L/2]``;
    3. ``B + Conv1d(2, 2, kernel_size)(B)`` mixes the bands (no bias), then dropout;
    4. one ``nn.Linear(L/2, H/2)`` shared by both bands and every channel;
    5. inverse Haar DWT to length H and add the mean back.

    Parameters: ``(L/2)(H/2) + H/2 + 4 k``: 17,380 for L=720, H=96, k=13 (a quarter of one L x H map).
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_channels: int,
        kernel_size: int = 13,
        dropout: float = 0.4,
    ) -> None:
        super().__init__(lookback, horizon, n_channels)
        for name, value in (("lookback", lookback), ("horizon", horizon)):
            if value % 2:
                raise ValueError(f"{name}: the Haar split needs an even length, got {value}")
        _check_positive(kernel_size=kernel_size)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size: expected an odd size (keeps length L/2), got {kernel_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        self.mix = nn.Conv1d(2, 2, kernel_size, padding=kernel_size // 2, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.map = nn.Linear(lookback // 2, horizon // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x)
        series = _channel_independent(x)
        mean = series.mean(dim=1, keepdim=True)
        bands = torch.stack(haar_forward(series - mean), dim=1)  # [N, 2, L/2]
        bands = self.dropout(bands + conv1d_same(bands, self.mix.weight))
        out = self.map(bands)  # [N, 2, H/2]
        y = haar_inverse(out[:, 0], out[:, 1]) + mean
        return _back_to_channels(y, x.shape[0])


@FORECASTERS.register("fourier")
class FourierForecaster(Forecaster):
    """Probabilistic forecaster: a per-step distribution over value bins from a :class:`FourierHead`.

    Each channel's window is normalised by its own mean and std; a linear body
    ``gelu(Linear(L, d))`` plus a learned per-step embedding ``[H, d]`` gives one feature vector per
    forecast step, and the Fourier head turns it into log-probabilities over ``num_bins`` bins
    covering ``[-value_range, value_range]`` normalised units. Training minimises the bin NLL plus
    the head's smoothness penalty; ``forward`` returns the distribution's mean in data units, so the
    point metrics (MSE, MAE) compare with the other models.

    Shapes: ``forward(x: [B, L, C]) -> [B, H, C]``; ``distribution(x)`` returns
    ``(log_probs: [B, H, C, m], values: [B, 1, C, m])`` (bin centres in data units).
    """

    def __init__(
        self,
        lookback: int,
        horizon: int,
        n_channels: int,
        d_model: int = 64,
        num_bins: int = 64,
        num_frequencies: int = 12,
        value_range: float = 4.0,
        regularization_gamma: float = 1e-6,
    ) -> None:
        super().__init__(lookback, horizon, n_channels)
        _check_positive(d_model=d_model, num_bins=num_bins, num_frequencies=num_frequencies)
        if value_range <= 0:
            raise ValueError(f"value_range: expected > 0, got {value_range}")
        self.value_range = float(value_range)
        self.body = nn.Linear(lookback, d_model)
        self.step_embedding = nn.Parameter(torch.randn(horizon, d_model) * 0.02)
        self.head = FourierHead(d_model, num_bins, num_frequencies, regularization_gamma=regularization_gamma)

    def _normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        series = _channel_independent(x)
        mean = series.mean(dim=1, keepdim=True)
        std = series.std(dim=1, keepdim=True, unbiased=False) + 1e-5
        return (series - mean) / std, mean, std

    def _log_probs(self, u: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.body(u))[:, None, :] + self.step_embedding  # [N, H, d]
        return self.head(hidden)  # [N, H, m]

    def distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``[B, H, C, m]`` and bin-centre values ``[B, 1, C, m]`` in data units."""
        self._check_input(x)
        u, mean, std = self._normalise(x)
        log_probs = self._log_probs(u)
        centres = self.head.bin_centres(u.dtype, u.device) * self.value_range  # [m]
        values = centres * std + mean  # [N, m]
        batch = x.shape[0]
        log_probs = log_probs.reshape(batch, self.n_channels, self.horizon, -1).transpose(1, 2)
        return log_probs, values.reshape(batch, 1, self.n_channels, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        log_probs, values = self.distribution(x)
        return (log_probs.exp() * values).sum(dim=-1)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bin negative log-likelihood of ``y: [B, H, C]`` plus the head's smoothness penalty."""
        self._check_input(x)
        u, mean, std = self._normalise(x)
        target = (_channel_independent(y) - mean) / std / self.value_range  # [N, H] in [-1, 1] units
        m = self.head.num_bins
        bins = ((target.clamp(-1.0, 1.0) + 1.0) / 2.0 * m).long().clamp(0, m - 1)
        log_probs = self._log_probs(u)
        nll = F.nll_loss(log_probs.reshape(-1, m), bins.reshape(-1))
        return nll + self.head.regularization_loss


def list_forecasters() -> list[str]:
    """Names accepted by :func:`create_forecaster`, sorted."""
    return FORECASTERS.names()


def create_forecaster(name: str, lookback: int, horizon: int, n_channels: int, **kwargs) -> Forecaster:
    """Build a forecaster by name (see :data:`FORECASTERS`); extra keyword arguments go to its class.

    Raises:
        UnknownNameError (a ValueError and a KeyError) naming the known forecasters.
    """
    return FORECASTERS.create(name, lookback, horizon, n_channels, **kwargs)


# the recipe command that measures the forecasting papers' ETTh1 claims (the published protocol)
_ETTH1 = "forecast --data ../shared/data/ETT-small/ETTh1.csv --legacy-drop-last"

declare_paper(
    arxiv="2205.13504",
    short="LTSF-Linear",
    title="Are Transformers Effective for Time Series Forecasting?",
    authors="Zeng, Chen, Zhang, Xu",
    venue="AAAI 2023",
    area=FORECASTING,
    status="implemented",
    objects=(
        "linearlab.models.forecast.create_forecaster",
        "linearlab.models.forecast.Linear",
        "linearlab.models.forecast.NLinear",
        "linearlab.models.forecast.DLinear",
        "linearlab.models.forecast.Repeat",
        "linearlab.tasks.forecasting.prepare",
    ),
    registered=("forecaster:repeat", "forecaster:linear", "forecaster:nlinear", "forecaster:dlinear"),
    recipes=(_ETTH1,),
    usage=(
        "from linearlab.models.forecast import create_forecaster\n"
        'y = create_forecaster("dlinear", lookback=336, horizon=96, n_channels=7)(torch.randn(32, 336, 7))  # [32, 96, 7]'
    ),
    claim=(
        "ETTh1, L=336, test MSE at H=96/192/336/720 (Table 2, published protocol with drop_last): "
        "DLinear 0.375/0.405/0.439/0.472, NLinear 0.374/0.408/0.429/0.440, Linear "
        "0.375/0.418/0.479/0.624, Repeat 1.295/1.325/1.323/1.339."
    ),
    figures=(
        "forecast:repeat *",
        "forecast:linear *",
        "forecast:nlinear *",
        "forecast:dlinear *",
    ),
)

declare_paper(
    arxiv="2410.02081",
    short="MixLinear",
    title="MixLinear: Extreme Low Resource Multivariate Time Series Forecasting with 0.1K Parameters",
    authors="Ma, Luo, Sha",
    venue="ICLR 2026",
    area=FORECASTING,
    status="implemented",
    objects=("linearlab.models.forecast.MixLinear", "linearlab.models.forecast.create_forecaster"),
    registered=("forecaster:mixlinear",),
    recipes=(_ETTH1,),
    usage=(
        "from linearlab.models.forecast import create_forecaster\n"
        'y = create_forecaster("mixlinear", lookback=720, horizon=96, n_channels=7)(torch.randn(8, 720, 7))  # 59 params'
    ),
    claim=(
        "About 0.1K parameters (45 to 176), up to 16.2% lower MSE than SparseTSF and 3.2x faster "
        "inference; ETTh1 test MSE 0.351 (H=96) and 0.395 (H=192) with L=720 (appendix table as "
        "quoted second-hand; H=336 and 720 not recovered)."
    ),
    figures=("forecast:mixlinear *",),
)

declare_paper(
    arxiv="2501.16178",
    short="SWIFT",
    title="SWIFT: Mapping Sub-series with Wavelet Decomposition Improves Time Series Forecasting",
    authors="Xie, Cao",
    area=FORECASTING,
    status="partial",
    objects=(
        "linearlab.models.forecast.SWIFT",
        "linearlab.models.forecast.haar_forward",
        "linearlab.models.forecast.haar_inverse",
    ),
    registered=("forecaster:swift",),
    recipes=(_ETTH1,),
    usage=(
        "from linearlab.models.forecast import create_forecaster\n"
        'y = create_forecaster("swift", lookback=720, horizon=96, n_channels=7)(torch.randn(8, 720, 7))  # [8, 96, 7]'
    ),
    claim=(
        "State of the art on several datasets with SWIFT-Linear using a quarter of the parameters of "
        "one L x H linear layer; Haar is the best wavelet in the ablation (its ETT table was not "
        "recovered in our notes)."
    ),
    figures=("forecast:swift *",),
    note="SWIFT-Linear only; SWIFT-MLP (the paper's choice for Electricity and Traffic) is not implemented.",
)
