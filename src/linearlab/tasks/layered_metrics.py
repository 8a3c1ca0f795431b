"""Metrics for layered images that need no pretrained weights.

- :func:`psnr`, :func:`ssim` (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03,
  per channel, mean over the valid window positions) for composites and single layers;
- alpha-matte errors of the matting benchmark (Rhemann et al. 2009): :func:`alpha_mse`, :func:`alpha_sad`,
  :func:`alpha_gradient_error`, :func:`alpha_connectivity_error`; and :func:`alpha_iou` of thresholded alpha;
- :func:`layer_sequence_distance`: an order-aware distance between two layer stacks (dynamic time
  warping over the back-to-front order, as LayerD's order-aware evaluation does), so a stack with the
  right layers in the wrong order scores worse than the right stack.

Images are float tensors in ``[0, 1]``: ``[..., C, H, W]`` for images, ``[..., H, W]`` for alpha.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F


def _same_shape(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB over all elements; ``inf`` for identical inputs."""
    _same_shape(pred, target, "pred, target")
    mse = float(((pred.double() - target.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


def _gauss_window(size: int, sigma: float, dtype: torch.dtype) -> torch.Tensor:
    t = torch.arange(size, dtype=dtype) - (size - 1) / 2
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    return k[:, None] * k[None, :]


def ssim(
    pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5
) -> float:
    """Mean structural similarity of ``[..., C, H, W]`` images (channels separately, then averaged).

    Needs ``H, W >= win_size``. 1 for identical images.
    """
    _same_shape(pred, target, "pred, target")
    if pred.dim() < 3:
        raise ValueError(f"pred: expected [..., C, H, W], got shape {tuple(pred.shape)}")
    H, W = pred.shape[-2:]
    if min(H, W) < win_size:
        raise ValueError(f"win_size: {win_size} is larger than the image ({H}x{W})")
    x = pred.double().reshape(-1, 1, H, W)
    y = target.double().reshape(-1, 1, H, W)
    w = _gauss_window(win_size, sigma, torch.float64)[None, None]
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def _check_alpha(pred: torch.Tensor, target: torch.Tensor) -> None:
    _same_shape(pred, target, "pred, target")
    if pred.dim() < 2:
        raise ValueError(f"pred: expected alpha [..., H, W], got shape {tuple(pred.shape)}")


def alpha_mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared alpha error."""
    _check_alpha(pred, target)
    return float(((pred.double() - target.double()) ** 2).mean())


def alpha_sad(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Sum of absolute alpha differences, divided by 1000 (the matting benchmark's unit)."""
    _check_alpha(pred, target)
    return float((pred.double() - target.double()).abs().sum()) / 1000


def _gauss_gradient(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    gy = gaussian_filter(a, sigma, order=(1, 0), mode="nearest")
    gx = gaussian_filter(a, sigma, order=(0, 1), mode="nearest")
    return np.sqrt(gx**2 + gy**2)


def alpha_gradient_error(pred: torch.Tensor, target: torch.Tensor, sigma: float = 1.4) -> float:
    """Sum over pixels of the squared difference of Gaussian-derivative gradient magnitudes
    (std ``sigma``), divided by 1000. ``pred, target: [H, W]`` (or batches, summed)."""
    _check_alpha(pred, target)
    p = pred.double().reshape(-1, *pred.shape[-2:]).numpy()
    t = target.double().reshape(-1, *target.shape[-2:]).numpy()
    return (
        float(
            sum(
                ((_gauss_gradient(pi, sigma) - _gauss_gradient(ti, sigma)) ** 2).sum() for pi, ti in zip(p, t)
            )
        )
        / 1000
    )


def _largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy.ndimage import label

    labels, n = label(mask, structure=np.ones((3, 3), dtype=int))  # 8-connectivity
    if n == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def alpha_connectivity_error(
    pred: torch.Tensor, target: torch.Tensor, step: float = 0.1, theta: float = 0.15
) -> float:
    """Connectivity error (Rhemann et al. 2009), divided by 1000. ``pred, target: [H, W]``.

    For thresholds ``t = step, 2 step, ..., 1`` it finds the largest 8-connected region where both
    alphas are ``>= t``; a pixel's level ``l`` is the last threshold before it drops out of that region.
    The error sums ``|phi_pred - phi_target|`` with ``phi = 1 - (alpha - l) [alpha - l >= theta]``:
    a pixel that is only weakly connected to the main region costs more.
    """
    _check_alpha(pred, target)
    if pred.dim() != 2:
        raise ValueError(f"pred: expected one alpha matte [H, W], got shape {tuple(pred.shape)}")
    p = pred.double().numpy()
    t = target.double().numpy()
    levels = np.arange(0, 1 + step / 2, step)
    l_map = np.full(p.shape, -1.0)
    for i in range(1, len(levels)):
        omega = _largest_component((p >= levels[i]) & (t >= levels[i]))
        newly = (l_map == -1) & ~omega
        l_map[newly] = levels[i - 1]
    l_map[l_map == -1] = 1.0
    dp, dt = p - l_map, t - l_map
    phi_p = 1 - dp * (dp >= theta)
    phi_t = 1 - dt * (dt >= theta)
    return float(np.abs(phi_p - phi_t).sum()) / 1000


def alpha_iou(pred: torch.Tensor, target: torch.Tensor, threshold: float = 0.5) -> float:
    """Intersection over union of ``alpha > threshold``; 1 when both are empty."""
    _check_alpha(pred, target)
    p, t = pred > threshold, target > threshold
    union = int((p | t).sum())
    return 1.0 if union == 0 else int((p & t).sum()) / union


def layer_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Distance between two straight RGBA layers ``[4, H, W]``: mean absolute difference of their
    premultiplied RGBA, so colour under zero alpha does not count. In ``[0, 1]``."""
    _same_shape(a, b, "a, b")
    pa = torch.cat([a[:3] * a[3:], a[3:]])
    pb = torch.cat([b[:3] * b[3:], b[3:]])
    return float((pa.double() - pb.double()).abs().mean())


def layer_sequence_distance(
    pred: Sequence[torch.Tensor] | torch.Tensor,
    target: Sequence[torch.Tensor] | torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor], float] = layer_distance,
) -> float:
    """Order-aware distance between two back-to-front layer stacks (possibly of different lengths).

    Dynamic time warping: the cheapest monotone alignment of the two sequences, in which every layer
    is matched to at least one layer of the other stack, in order; the sum of matched distances is
    divided by the alignment length. 0 iff the stacks agree layer by layer (for a distance that is 0
    only on equal layers); swapping two distinct layers costs more than 0.
    """
    P, T = list(pred), list(target)
    if not P or not T:
        raise ValueError(f"pred, target: expected non-empty stacks, got {len(P)} and {len(T)} layers")
    n, m = len(P), len(T)
    d = [[distance(P[i], T[j]) for j in range(m)] for i in range(n)]
    inf = math.inf
    # cost[i][j]: (total, length) of the best path to (i, j); ties broken by the shorter path
    cost: list[list[tuple[float, int]]] = [[(inf, 0)] * m for _ in range(n)]
    for i in range(n):
        for j in range(m):
            if i == 0 and j == 0:
                cost[i][j] = (d[0][0], 1)
                continue
            prev = [cost[a][b] for a, b in ((i - 1, j), (i, j - 1), (i - 1, j - 1)) if a >= 0 and b >= 0]
            best = min(prev)
            cost[i][j] = (best[0] + d[i][j], best[1] + 1)
    total, length = cost[n - 1][m - 1]
    return total / length
