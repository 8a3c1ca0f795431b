import pytest
import torch

from linearlab.analysis.probes import LinearProbe, probe_r2, r2_score


def test_probe_r2_is_one_on_a_linear_target():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(600, 12, generator=g)
    a, c = torch.randn(12, 3, generator=g), torch.randn(3, generator=g)
    t = h @ a + c
    assert probe_r2(h[:400], t[:400], h[400:], t[400:], lam=1e-8) > 0.999999


def test_probe_r2_is_about_zero_on_noise():
    g = torch.Generator().manual_seed(1)
    h, t = torch.randn(4000, 10, generator=g), torch.randn(4000, 2, generator=g)
    r2 = probe_r2(h[:2000], t[:2000], h[2000:], t[2000:])
    assert abs(r2) < 0.02


def test_r2_score_reference_points_and_probe_roundtrip():
    t = torch.tensor([[1.0, 2.0], [2.0, 0.0], [3.0, 1.0]])
    torch.testing.assert_close(r2_score(t, t), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(r2_score(t.mean(0).expand(3, 2), t), torch.zeros(2, dtype=torch.float64))
    probe = LinearProbe.fit(torch.randn(50, 4), torch.randn(50))
    assert probe.predict(torch.randn(7, 4)).shape == (7, 1)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: r2_score(torch.zeros(3, 2), torch.zeros(3, 3)), "pred: expected the shape of target (3, 3)"),
        (lambda: r2_score(torch.zeros(1), torch.zeros(1)), "target: R^2 needs at least 2 rows, got 1"),
        (
            lambda: LinearProbe.fit(torch.zeros(4, 2, 2), torch.zeros(4)),
            "features: expected a [N] or [N, K] tensor",
        ),
        (
            lambda: LinearProbe.fit(torch.zeros(4, 2), torch.zeros(5)),
            "targets: expected 4 rows to match features",
        ),
        (lambda: LinearProbe.fit(torch.zeros(4, 2), torch.zeros(4), lam=-1), "lam: expected a value >= 0"),
        (lambda: LinearProbe.fit(torch.full((4, 2), float("nan")), torch.zeros(4)), "features: contains NaN"),
        (
            lambda: LinearProbe.fit(torch.randn(4, 2), torch.zeros(4)).predict(torch.zeros(2, 3)),
            "features: expected 2 columns, got 3",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)
