"""Recipe ``apnet``: APNet's speed against HiFi-GAN v1 and its parallel phase head (Ai & Ling 2023).

(a) Speed: the APNet generator in the official release's configuration and a HiFi-GAN-v1-style
    generator for the same 16 kHz / hop 80 features, random weights (speed does not depend on them),
    ``torch.set_num_threads(threads)``; real-time factor = synthesis seconds / audio seconds on
    ``rtf_seconds`` of audio (best of ``rtf_repeats`` after a short warm-up). Paper: APNet is about 8x
    faster than HiFi-GAN v1 on a CPU.
(b) Phase head: synthetic harmonic signals (f0 80-300 Hz gliding, 10 harmonics, amplitude envelope,
    a little noise; 16 kHz). A small phase predictor (``psp_channels`` channels, one ResBlock per kernel
    in ``psp_kernels``) maps log-mel to the STFT phase, trained on the sum of the three anti-wrapping
    losses, once with the parallel R/I head + atan2 and once with direct phase regression (same data and
    batches). Test: the three losses and the resynthesis SNR from the true amplitude and the predicted
    phase. Paper's ablation: without the parallel estimation the phase (and the speech) is far worse.
    Baselines on the test set: the zero phase, and the true phase (which gives back the signal).

Files: ``rtf.json``, ``phase/<head>/`` (checkpoint + ``result.json``); ``--resume`` skips what is done.

    linearlab run apnet [--smoke] [--set rtf_seconds=10 --set steps=1000]
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.parallel import default_workers, run_jobs, step_done
from linearlab.lab.tables import fmt, format_table
from linearlab.models.vocoder.apnet import PHASE_HEADS, APNet, PhasePredictor
from linearlab.models.vocoder.hifigan import HiFiGANGenerator
from linearlab.models.vocoder.losses import phase_losses, snr_db
from linearlab.models.vocoder.mel import LogMel
from linearlab.papers import OTHER, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

NAME = "apnet"
SAMPLE_RATE, N_FFT, HOP, WIN, N_MELS = 16000, 1024, 80, 320, 80


@dataclass
class Config:
    """Everything ``linearlab run apnet`` does; override fields with ``--set name=value``."""

    rtf_seconds: float = 10.0
    rtf_repeats: int = 1
    threads: int = 2
    apnet_channels: int = 512
    hifigan_channels: int = 512
    n_train: int = 256
    n_test: int = 32
    segment: int = 8000
    psp_channels: int = 64
    psp_kernels: list[int] = field(default_factory=lambda: [3, 7])
    steps: int = 800
    batch_size: int = 8
    lr: float = 1e-3
    checkpoint_every: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.rtf_seconds > 0:
            raise ValueError(f"rtf_seconds: must be > 0, got {self.rtf_seconds}")
        require_at_least_one(
            self,
            "rtf_repeats",
            "threads",
            "apnet_channels",
            "hifigan_channels",
            "n_train",
            "n_test",
            "psp_channels",
            "steps",
            "batch_size",
        )
        if self.hifigan_channels % 16:
            raise ValueError(
                f"hifigan_channels: must be divisible by 16 (halved 4 times), got {self.hifigan_channels}"
            )
        if self.segment < 4 * HOP or self.segment % HOP:
            raise ValueError(
                f"segment: expected a multiple of the hop {HOP} of at least {4 * HOP}, got {self.segment}"
            )
        if not self.psp_kernels or any(k < 1 or k % 2 == 0 for k in self.psp_kernels):
            raise ValueError(f"psp_kernels: expected odd kernel sizes, got {self.psp_kernels}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")


def _smoke() -> Config:
    return Config(rtf_seconds=0.5, apnet_channels=64, hifigan_channels=64, n_train=16, n_test=4, segment=1600,
                  psp_channels=8, psp_kernels=[3], steps=10, batch_size=4)  # fmt: skip


# ------------------------------------------------------------------------------------------ (a) speed


def _time(fn, x: torch.Tensor, repeats: int) -> float:
    best = math.inf
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn(x)
            best = min(best, time.perf_counter() - t0)
    return best


def speed(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    path = run_dir.file("rtf.json")
    if path.exists():
        return json.loads(path.read_text())
    torch.manual_seed(cfg.seed)
    dil = [[1, 3, 5]] * 3
    apnet = APNet(N_MELS, N_FFT, HOP, WIN, cfg.apnet_channels, (3, 7, 11), dil).eval()
    hifigan = HiFiGANGenerator(
        N_MELS, (5, 4, 2, 2), (10, 8, 4, 4), cfg.hifigan_channels, (3, 7, 11), dil
    ).eval()
    frames = int(round(cfg.rtf_seconds * SAMPLE_RATE / HOP))
    mel = torch.randn(1, N_MELS, frames + 1)
    warm = torch.randn(1, N_MELS, 20)
    out: dict[str, Any] = {"audio_seconds": frames * HOP / SAMPLE_RATE, "threads": cfg.threads}
    for name, model, fn in (("apnet", apnet, lambda m: apnet(m)[2]), ("hifigan", hifigan, hifigan)):
        _time(fn, warm, 1)
        seconds = _time(fn, mel, cfg.rtf_repeats)
        out[name] = {
            "params": sum(p.numel() for p in model.parameters()),
            "seconds": seconds,
            "rtf": seconds / out["audio_seconds"],
        }
    out["speedup"] = out["hifigan"]["seconds"] / out["apnet"]["seconds"]
    atomic_write_json(path, out)
    return out


# ------------------------------------------------------------------------------------------ (b) phase


def harmonic_signals(n: int, length: int, seed: int) -> torch.Tensor:
    """``[n, length]`` synthetic voiced signals at 16 kHz: f0 gliding within 80-300 Hz, 10 harmonics
    (amplitudes ~ 1/k with random gains, phases locked to the fundamental), a slow amplitude envelope
    and white noise 30 dB down. Peak-normalised to 0.5."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length, dtype=torch.float64) / SAMPLE_RATE
    out = []
    for _ in range(n):
        f_start, f_end = 80 + 220 * torch.rand(2, generator=g, dtype=torch.float64)
        f0 = f_start + (f_end - f_start) * t / t[-1]
        phase = 2 * math.pi * torch.cumsum(f0, 0) / SAMPLE_RATE + 2 * math.pi * float(
            torch.rand((), generator=g)
        )
        x = torch.zeros(length, dtype=torch.float64)
        for k in range(1, 11):
            below = (k * f0 < SAMPLE_RATE / 2).double()
            x += below * (0.5 + float(torch.rand((), generator=g))) / k * torch.cos(k * phase)
        rate = 1 + 4 * float(torch.rand((), generator=g))
        env = 0.6 + 0.4 * torch.sin(2 * math.pi * rate * t + 2 * math.pi * float(torch.rand((), generator=g)))
        x = x * env
        x = x + 10 ** (-30 / 20) * x.std() * torch.randn(length, generator=g, dtype=torch.float64)
        out.append(0.5 * x / x.abs().max())
    return torch.stack(out).float()


def phase_data(cfg: Config) -> dict[str, torch.Tensor]:
    """Waveforms, log-mels and STFT log-amplitude / phase targets for the training and test signals."""
    analysis = APNet(N_MELS, N_FFT, HOP, WIN, channels=1, resblock_kernels=(1,), resblock_dilations=((1,),))
    logmel = LogMel(SAMPLE_RATE, N_FFT, HOP, WIN, N_MELS, 0.0, 8000.0)
    data = {}
    for split, n, seed in (("train", cfg.n_train, cfg.seed * 2 + 1), ("test", cfg.n_test, cfg.seed * 2 + 2)):
        wav = harmonic_signals(n, cfg.segment, seed)
        log_amp, phase = analysis.analyze(wav)
        data.update(
            {
                f"{split}_wav": wav,
                f"{split}_mel": logmel(wav),
                f"{split}_logamp": log_amp,
                f"{split}_phase": phase,
            }
        )
    return data


def _synth(log_amp: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    window = torch.hann_window(WIN)
    return torch.istft(torch.polar(torch.exp(log_amp), phase), N_FFT, HOP, WIN, window, center=True)


def phase_metrics(pred: torch.Tensor, data: dict[str, torch.Tensor]) -> dict[str, float]:
    """The three anti-wrapping losses of ``pred`` against the test phase, and the resynthesis SNR from
    the true amplitude with ``pred`` (mean over test signals, in dB)."""
    losses = phase_losses(pred, data["test_phase"])
    wav = _synth(data["test_logamp"], pred)
    snrs = [snr_db(wav[i], data["test_wav"][i]) for i in range(wav.shape[0])]
    return {
        **{k: float(v) for k, v in losses.items()},
        "snr_db": float(sum(min(s, 100.0) for s in snrs) / len(snrs)),
    }


def _train_head(cfg: Config, head: str, folder_path: str) -> dict[str, Any]:
    """One job of :func:`run_jobs`: train the phase predictor with ``head`` and score it on the test set.

    Each job builds the (seeded, deterministic) data itself rather than receiving ~100 MB of spectra
    through a pipe.
    """
    folder = RunDir.create(NAME, folder_path)
    done = folder.file("result.json")
    if done.exists():
        return json.loads(done.read_text())
    data = phase_data(cfg)
    torch.manual_seed(cfg.seed)
    net = PhasePredictor(
        N_MELS, N_FFT // 2 + 1, cfg.psp_channels, cfg.psp_kernels, [[1, 3, 5]] * len(cfg.psp_kernels), head
    )
    n = cfg.n_train

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        return data["train_mel"][idx], data["train_phase"][idx]

    def loss_fn(m: nn.Module, b) -> tuple[torch.Tensor, dict[str, float]]:
        parts = phase_losses(m(b[0]), b[1])
        return sum(parts.values()), {k: float(v.detach()) for k, v in parts.items()}

    tc = TrainConfig(
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        weight_decay=0.0,
        betas=(0.8, 0.99),  # APNet's Adam betas
        warmup_steps=min(50, cfg.steps // 10),
        grad_clip=0.0,
        log_every=25,
        checkpoint_every=cfg.checkpoint_every,
        seed=cfg.seed,
        progress=False,  # run_jobs shows one bar for both heads
    )
    res = train(
        net, batch_fn, loss_fn, tc, run_dir=folder, resume=True, desc=f"phase {head}", on_step=step_done
    )
    net.eval()
    with torch.no_grad():
        pred = net(data["test_mel"])
    out = {"head": head, "params": sum(p.numel() for p in net.parameters()), "final_loss": res.final_loss,
           **phase_metrics(pred, data)}  # fmt: skip
    atomic_write_json(done, out)
    return out


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    rtf = speed(cfg, run_dir)
    # the two heads train side by side, one core each (speed above used every thread alone)
    results = run_jobs(_train_head, [(cfg, h, str(run_dir.path / "phase" / h)) for h in PHASE_HEADS],
                       workers=min(default_workers(), cfg.threads), desc="phase heads",
                       steps=[cfg.steps] * len(PHASE_HEADS))  # fmt: skip
    heads = dict(zip(PHASE_HEADS, results))
    data = phase_data(cfg)
    baselines = {
        "zero phase": phase_metrics(torch.zeros_like(data["test_phase"]), data),
        "true phase": phase_metrics(data["test_phase"], data),
    }
    summary = {"rtf": rtf, "phase": heads, "baselines": baselines, "steps": cfg.steps, "n_train": cfg.n_train}
    _plot(run_dir, summary, data, cfg)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any], data: dict[str, torch.Tensor], cfg: Config) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    r = s["rtf"]
    axes[0].bar(["APNet", "HiFi-GAN"], [r["apnet"]["rtf"], r["hifigan"]["rtf"]], color=["C0", "C1"])
    axes[0].set(title=f"real-time factor, {r['audio_seconds']:g} s audio, {r['threads']} threads "
                f"(speed-up {r['speedup']:.2f}x; paper ~8x)", ylabel="seconds per second of audio")  # fmt: skip
    axes[0].title.set_fontsize(8)
    names = ["ip", "gd", "iaf"]
    rows = list(s["phase"].items()) + list(s["baselines"].items())
    w = 0.8 / len(rows)
    for i, (label, m) in enumerate(rows):
        axes[1].bar([j + i * w for j in range(3)], [m[k] for k in names], w, label=label)
    axes[1].set_xticks([j + 0.4 - w / 2 for j in range(3)], ["IP", "GD", "IAF"])
    axes[1].set(title="test anti-wrapping losses (lower is better; pi/2 = random)")
    axes[1].legend(fontsize=7)
    axes[2].bar([label for label, _ in rows], [min(m["snr_db"], 40) for _, m in rows], color="C2")
    axes[2].set(title="resynthesis SNR with the true amplitude (dB, capped at 40)")
    axes[2].tick_params(axis="x", labelsize=7)
    run_dir.save_figure("apnet.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    r = s["rtf"]
    lines = [
        f"(a) speed: {r['audio_seconds']:g} s of 16 kHz audio, random weights, {r['threads']} threads",
        format_table(
            ["generator", "params", "seconds", "RTF"],
            [
                [
                    m.replace("apnet", "APNet").replace("hifigan", "HiFi-GAN v1-style"),
                    f"{r[m]['params']:,}",
                    fmt(r[m]["seconds"], 4),
                    fmt(r[m]["rtf"], 4),
                ]
                for m in ("apnet", "hifigan")
            ],
        ),  # fmt: skip
        f"(b) phase from log-mel, {s['n_train']} synthetic harmonic signals, {s['steps']} steps; test metrics",
        format_table(
            ["phase", "IP loss", "GD loss", "IAF loss", "resynth SNR dB"],
            [
                [label, fmt(m["ip"], 4), fmt(m["gd"], 4), fmt(m["iaf"], 4), fmt(m["snr_db"], 4)]
                for label, m in [*(("head: " + h, m) for h, m in s["phase"].items()), *s["baselines"].items()]
            ],
        ),  # fmt: skip
        "measured vs paper:",
        format_table(
            ["quantity", "measured", "paper"],
            [
                ["HiFi-GAN time / APNet time (CPU)", fmt(r["speedup"], 3), "about 8"],
                [
                    "IP loss direct - parallel",
                    f"{s['phase']['direct']['ip'] - s['phase']['parallel']['ip']:+.4f}",
                    "> 0 (parallel essential)",
                ],
                [
                    "GD loss direct - parallel",
                    f"{s['phase']['direct']['gd'] - s['phase']['parallel']['gd']:+.4f}",
                    "> 0",
                ],
                [
                    "IAF loss direct - parallel",
                    f"{s['phase']['direct']['iaf'] - s['phase']['parallel']['iaf']:+.4f}",
                    "> 0",
                ],
                [
                    "SNR parallel - direct (dB)",
                    f"{s['phase']['parallel']['snr_db'] - s['phase']['direct']['snr_db']:+.3f}",
                    "> 0",
                ],
            ],
        ),  # fmt: skip
    ]
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """The speed-up, both RTFs, and the phase metrics of both heads."""
    r = summary["rtf"]
    out = {
        "speedup hifigan/apnet": r["speedup"],
        "apnet rtf": r["apnet"]["rtf"],
        "hifigan rtf": r["hifigan"]["rtf"],
    }
    for h, m in summary["phase"].items():
        for k in ("ip", "gd", "iaf", "snr_db"):
            out[f"{h} head {k}"] = m[k]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="APNet: real-time factor vs a HiFi-GAN v1 generator; parallel R/I phase head vs direct regression",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
    resume_may_change=("checkpoint_every",),
)


declare_paper(
    arxiv="2305.07952",
    short="APNet",
    title=(
        "APNet: An All-Frame-Level Neural Vocoder Incorporating Direct Prediction of Amplitude and "
        "Phase Spectra"
    ),
    authors="Ai, Ling",
    area=OTHER,
    status="partial",
    objects=(
        "linearlab.models.vocoder.APNet",
        "linearlab.models.vocoder.PhasePredictor",
        "linearlab.models.vocoder.HiFiGANGenerator",
        "linearlab.models.vocoder.phase_losses",
        "linearlab.models.vocoder.consistency_loss",
        "linearlab.models.vocoder.LogMel",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.models.vocoder import APNet\n"
        "log_amp, phase, wav = APNet(channels=32)(torch.randn(1, 80, 20))  # [1, 513, 20] x2, [1, 1520]"
    ),
    claim=(
        "Amplitude and phase spectra predicted at frame level (the phase as atan2 of two parallel linear "
        "convolutions) and an ISTFT make a vocoder about 8x faster than HiFi-GAN v1 on a CPU with comparable "
        "quality; the ablation shows the parallel phase estimation is essential."
    ),
    note=(
        "No GAN training and no speech corpus: the speed is measured with random weights and the phase "
        "ablation on synthetic harmonic signals; quality (MOS, LJSpeech metrics) is not reproduced."
    ),
)
