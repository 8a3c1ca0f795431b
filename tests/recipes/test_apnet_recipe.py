"""The ``apnet`` recipe through the real CLI at smoke size; its synthetic signals and phase metrics."""

import json

import torch

from linearlab.cli import main
from linearlab.recipes.apnet import Config, harmonic_signals, phase_data, phase_metrics


def test_harmonic_signals_are_seeded_and_periodic_in_f0_range():
    x = harmonic_signals(3, 4000, seed=1)
    assert x.shape == (3, 4000) and torch.equal(x, harmonic_signals(3, 4000, seed=1))
    assert float(x.abs().max()) == 0.5 or abs(float(x.abs().max()) - 0.5) < 1e-6
    # the spectrum's strongest low bin lies in the f0 range (80-300 Hz) or at a low harmonic
    spec = torch.fft.rfft(x.double(), dim=-1).abs()
    peak_hz = spec[:, 1:].argmax(-1).double() + 1
    assert torch.all((peak_hz * 16000 / 4000 >= 75) & (peak_hz * 16000 / 4000 <= 3000))


def test_true_phase_resynthesises_the_signal_and_zero_phase_does_not():
    cfg = Config(n_train=2, n_test=3, segment=1600)
    data = phase_data(cfg)
    true = phase_metrics(data["test_phase"], data)
    zero = phase_metrics(torch.zeros_like(data["test_phase"]), data)
    assert true["ip"] < 1e-4 and true["snr_db"] > 40
    assert zero["ip"] > 0.5 and zero["snr_db"] < 3


def test_smoke_run_report_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "apnet", "--smoke", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["rtf"]["apnet"]["rtf"] > 0 and s["rtf"]["speedup"] > 0
    assert set(s["phase"]) == {"parallel", "direct"}
    assert (out / "apnet.png").stat().st_size > 0 and (out / "rtf.json").exists()
    assert main(["run", "apnet", "--smoke", "--out", str(out), "--resume"]) == 0
    again = json.loads((out / "summary.json").read_text())
    assert again["phase"] == s["phase"] and again["rtf"] == s["rtf"]
    capsys.readouterr()
    assert main(["report", str(out)]) == 0
    assert "HiFi-GAN time / APNet time" in capsys.readouterr().out
    assert main(["run", "apnet", "--smoke", "--out", str(tmp_path / "bad"), "--set", "segment=1000"]) == 2
    assert "segment: expected a multiple of the hop 80" in capsys.readouterr().err
