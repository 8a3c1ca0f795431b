"""Weight-free metrics for layered images: identities, known values and order sensitivity."""

import math

import numpy as np
import pytest
import torch

from linearlab.tasks.layered_metrics import (
    alpha_connectivity_error,
    alpha_gradient_error,
    alpha_iou,
    alpha_mse,
    alpha_sad,
    layer_distance,
    layer_sequence_distance,
    psnr,
    ssim,
)


def test_psnr_known_value_and_identity():
    x = torch.zeros(3, 4, 4)
    assert psnr(x, x) == math.inf
    assert psnr(x + 0.1, x) == pytest.approx(20.0)


def test_ssim_identity_symmetry_and_structure_sensitivity():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 24, 24, generator=g)
    noisy = (x + 0.2 * torch.randn(3, 24, 24, generator=g)).clamp(0, 1)
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim(x, noisy) == pytest.approx(ssim(noisy, x), abs=1e-12)
    assert ssim(x, noisy) < 0.9
    # a constant shift keeps structure and contrast: only the luminance term drops, slightly
    assert ssim(x * 0.5, x * 0.5 + 0.05) > ssim(x, noisy)
    # constant images: SSIM reduces to the luminance formula (2 m1 m2 + c1) / (m1^2 + m2^2 + c1)
    c1 = 0.01**2
    expected = (2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1)
    assert ssim(torch.full((1, 11, 11), 0.2), torch.full((1, 11, 11), 0.6)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="win_size: 11 is larger than the image"):
        ssim(torch.zeros(1, 5, 5), torch.zeros(1, 5, 5))


def test_alpha_errors():
    a = torch.zeros(10, 10)
    a[2:6, 2:6] = 1
    b = a.clone()
    b[2, 2] = 0.5
    assert alpha_mse(a, b) == pytest.approx(0.25 / 100)
    assert alpha_sad(a, b) == pytest.approx(0.5 / 1000)
    assert (
        alpha_mse(a, a)
        == alpha_sad(a, a)
        == alpha_gradient_error(a, a)
        == alpha_connectivity_error(a, a)
        == 0
    )
    # the gradient error ignores a constant offset (nearest padding), the SAD does not
    assert alpha_gradient_error(a * 0.5 + 0.25, a * 0.5) == pytest.approx(0.0, abs=1e-12)
    assert alpha_gradient_error(b, a) > 0
    with pytest.raises(ValueError, match=r"pred, target: shapes differ, \(10, 10\) vs \(9, 9\)"):
        alpha_mse(a, torch.zeros(9, 9))


def test_connectivity_error_hand_computed_cases():
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    # a gap splits the pred's bright run: the right half drops to level 0 in both, phi differs only
    # at the gap pixel: |1 - (1 - 0.3)| = 0.3
    assert alpha_connectivity_error(t([1, 1, 0, 1, 1]), t([1, 1, 0.3, 1, 1])) == pytest.approx(0.3 / 1000)
    # levels from the shared region: pixel 2 leaves it at t = 0.6 -> level 0.5; pred's excess 0.1 is
    # below theta = 0.15 (phi 1) while the target's 0.4 counts (phi 0.6): 0.4 / 1000, more than the SAD
    pred, target = t([1, 0.5, 0.6]), t([1, 0.5, 0.9])
    assert alpha_connectivity_error(pred, target) == pytest.approx(0.4 / 1000)
    assert alpha_sad(pred, target) == pytest.approx(0.3 / 1000)
    with pytest.raises(ValueError, match=r"pred: expected one alpha matte \[H, W\]"):
        alpha_connectivity_error(torch.zeros(2, 3, 3), torch.zeros(2, 3, 3))


def test_iou():
    a = torch.zeros(4, 4)
    a[:2] = 1
    b = torch.zeros(4, 4)
    b[1:3] = 1
    assert alpha_iou(a, b) == pytest.approx(4 / 12)
    assert alpha_iou(torch.zeros(3, 3), torch.zeros(3, 3)) == 1.0


def _layer(seed):
    return torch.rand(4, 6, 6, generator=torch.Generator().manual_seed(seed))


def _dtw_brute_force(P, T):
    """All monotone alignments enumerated recursively: min over paths of (sum / length) of the min-sum path."""
    best = None

    def walk(i, j, total, length):
        nonlocal best
        total += layer_distance(P[i], T[j])
        length += 1
        if i == len(P) - 1 and j == len(T) - 1:
            if best is None or (total, length) < best:
                best = (total, length)
            return
        if i + 1 < len(P):
            walk(i + 1, j, total, length)
        if j + 1 < len(T):
            walk(i, j + 1, total, length)
        if i + 1 < len(P) and j + 1 < len(T):
            walk(i + 1, j + 1, total, length)

    walk(0, 0, 0.0, 0)
    return best[0] / best[1]


def test_layer_sequence_distance_is_order_aware_and_matches_brute_force():
    L = [_layer(i) for i in range(4)]
    assert layer_sequence_distance(L, L) == 0
    swapped = [L[0], L[2], L[1], L[3]]
    assert layer_sequence_distance(swapped, L) > 0
    assert layer_sequence_distance(swapped, L) == pytest.approx(layer_sequence_distance(L, swapped))
    # a merged/missing layer costs less than a wrong one
    for P, T in [(L[:3], L), (swapped, L), ([L[3], L[0]], L[:3])]:
        assert layer_sequence_distance(P, T) == pytest.approx(_dtw_brute_force(P, T), abs=1e-12)
    # colour under zero alpha does not count
    a, b = _layer(7), _layer(8)
    a[3] = 0
    b[3] = 0
    assert layer_distance(a, b) == 0
    with pytest.raises(ValueError, match="expected non-empty stacks, got 0 and 4"):
        layer_sequence_distance([], L)
    assert np.isfinite(layer_sequence_distance(L[:1], L))
