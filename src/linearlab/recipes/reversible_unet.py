"""Recipe ``reversible-unet``: a 3-D U-Net of reversible MBConv blocks stores O(1) blocks of activations
(Pendse et al. 2020).

1. Exactness of one stack of N reversible MBConv3D blocks on a ``1 x C x S^3`` volume: the inversion
   error ``max|x - f^-1(f(x))|`` in float32 and float64, the largest relative difference between the
   parameter gradients of the custom autograd Function and plain autograd, and the bytes autograd
   saves for backward (counted with ``torch.autograd.graph.saved_tensors_hooks``) against N.
2. Memory of the whole U-Net: saved-activation bytes against blocks per level and volume side, for
   the reversible net and the same net under plain autograd; the largest cube that fits the budget
   the plain net needs at ``budget_side`` (bytes are linear in the voxel count: checked on two sides);
   and the peak resident memory of one forward + backward at each of ``rss_sides``, each in a fresh
   process (recomputation needs one block's activations at a time, so the peak ratio is smaller than
   the saved-bytes ratio), with the volume the reversible net fits in the plain net's peak.
3. Segmentation of synthetic volumes (noisy spheres, generated from the step number): the reversible
   net and the plain net, same initial weights and batches, trained through ``linearlab.train.train``;
   foreground Dice on held-out volumes and seconds per step.

Parts write ``exactness.json``, ``memory.json`` and ``train_<mode>/result.json``, so ``--resume``
skips what is done.

    linearlab run reversible-unet [--smoke]
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from linearlab.config import require_at_least_one
from linearlab.io import atomic_write_json
from linearlab.lab.tables import fmt, format_table
from linearlab.layers.vision.inverted_residual import InvertedResidual
from linearlab.layers.vision.reversible import ReversibleBlock, ReversibleSequence, SavedTensorBytes
from linearlab.models.unet3d import ReversibleUNet3d
from linearlab.papers import OTHER, declare_paper
from linearlab.recipes import Recipe
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train

NAME = "reversible-unet"
MODES = ("reversible", "standard")


@dataclass
class Config:
    """Everything ``linearlab run reversible-unet`` does; override fields with ``--set name=value``."""

    stack_depths: list[int] = field(default_factory=lambda: [2, 4, 8, 16])
    stack_channels: int = 16
    stack_side: int = 16
    base: int = 8
    levels: int = 3
    expand: int = 4
    memory_blocks: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    memory_sides: list[int] = field(default_factory=lambda: [16, 32])
    budget_side: int = 32
    rss_sides: list[int] = field(default_factory=lambda: [32, 48])
    train_side: int = 16
    train_blocks: int = 2
    batch_size: int = 2
    steps: int = 150
    lr: float = 3e-3
    eval_volumes: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        m = 2 ** (self.levels - 1)
        require_at_least_one(
            self,
            "stack_channels",
            "base",
            "levels",
            "expand",
            "train_blocks",
            "batch_size",
            "steps",
            "eval_volumes",
        )
        for name in ("stack_channels", "base"):
            if getattr(self, name) % 2:
                raise ValueError(
                    f"{name}: must be even (reversible blocks split channels), got {getattr(self, name)}"
                )
        for name in ("budget_side", "train_side"):
            v = getattr(self, name)
            if v < 1 or v % m:
                raise ValueError(f"{name}: expected a positive multiple of 2**(levels-1) = {m}, got {v}")
        if any(s < 1 or s % m for s in self.rss_sides) or len(set(self.rss_sides)) != len(self.rss_sides):
            raise ValueError(
                f"rss_sides: expected distinct multiples of 2**(levels-1) = {m} (or []), got {self.rss_sides}"
            )
        if not self.memory_sides or any(s < 1 or s % m for s in self.memory_sides):
            raise ValueError(
                f"memory_sides: expected multiples of 2**(levels-1) = {m}, got {self.memory_sides}"
            )
        for name in ("stack_depths", "memory_blocks"):
            if not getattr(self, name) or any(n < 1 for n in getattr(self, name)):
                raise ValueError(f"{name}: expected depths >= 1, got {getattr(self, name)}")
        if self.stack_side < 1:
            raise ValueError(f"stack_side: must be >= 1, got {self.stack_side}")


def _smoke() -> Config:
    return Config(stack_depths=[1, 2], stack_channels=4, stack_side=8, base=4, levels=2, memory_blocks=[1, 2],
                  memory_sides=[8, 16], budget_side=8, rss_sides=[], train_side=8, steps=6, eval_volumes=2)  # fmt: skip


# -------------------------------------------------------------------------------- part 1: one stack


def mbconv_stack(channels: int, depth: int, expand: int, seed: int) -> ReversibleSequence:
    """``depth`` reversible blocks whose F and G are linear-bottleneck MBConv3D branches."""
    torch.manual_seed(seed)

    def branch() -> InvertedResidual:
        return InvertedResidual(
            channels // 2, channels // 2, expand=expand, dims=3, norm="group", residual=False
        )

    return ReversibleSequence([ReversibleBlock(branch(), branch()) for _ in range(depth)])


def saved_bytes(module: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for backward after one forward of ``module`` on ``x`` (parameters excluded)."""
    with SavedTensorBytes(exclude=module.parameters()) as counter:
        module(x.requires_grad_(True))
    return counter.bytes


def exactness(cfg: Config) -> list[dict[str, Any]]:
    rows = []
    for depth in cfg.stack_depths:
        row: dict[str, Any] = {"depth": depth}
        for dtype, tag in ((torch.float32, "fp32"), (torch.float64, "fp64")):
            stack = mbconv_stack(cfg.stack_channels, depth, cfg.expand, cfg.seed).to(dtype)
            x = torch.randn(1, cfg.stack_channels, *[cfg.stack_side] * 3, dtype=dtype,
                            generator=torch.Generator().manual_seed(cfg.seed))  # fmt: skip
            with torch.no_grad():
                row[f"inversion_error_{tag}"] = float((stack.inverse(stack(x)) - x).abs().max())
        for dtype, tag in ((torch.float32, "fp32"), (torch.float64, "fp64")):
            stack = mbconv_stack(cfg.stack_channels, depth, cfg.expand, cfg.seed).to(dtype)
            x = torch.randn(
                1, cfg.stack_channels, *[cfg.stack_side] * 3, generator=torch.Generator().manual_seed(1)
            )
            w = torch.randn(x.shape, generator=torch.Generator().manual_seed(2))
            x, w = x.to(dtype), w.to(dtype)
            grads = {}
            for mode in MODES:
                stack.reversible = mode == "reversible"
                stack.zero_grad(set_to_none=True)
                (stack(x) * w).sum().backward()
                grads[mode] = [p.grad.clone() for p in stack.parameters()]
                if dtype == torch.float32:
                    row[f"saved_bytes_{mode}"] = saved_bytes(stack, x.clone())
            # the largest entry-wise difference over all parameters, relative to the largest gradient
            diff = max(float((a - b).abs().max()) for a, b in zip(grads["reversible"], grads["standard"]))
            row[f"grad_rel_diff_{tag}"] = diff / max(float(b.abs().max()) for b in grads["standard"])
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------- part 2: the U-Net


def _unet(cfg: Config, blocks: int, reversible: bool) -> ReversibleUNet3d:
    torch.manual_seed(cfg.seed)
    return ReversibleUNet3d(1, 2, cfg.base, cfg.levels, blocks, cfg.expand, reversible)


def largest_side(bytes_per_voxel: float, budget: float, multiple: int) -> int:
    """The largest cube side (a multiple of ``multiple``) whose activations fit ``budget`` bytes."""
    side = int((budget / bytes_per_voxel) ** (1 / 3) + 1e-9)
    return side - side % multiple


def _vm_hwm() -> int:
    """This process's resident-memory high-water mark in bytes (``VmHWM`` of /proc/self/status).

    ``getrusage``'s ``ru_maxrss`` would not do: a child started from a big parent inherits its peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (peak memory needs Linux)")


def peak_rss_child(cfg_json: str, side: int, reversible: bool) -> None:
    """Run in a fresh process: print the resident-memory growth (bytes) of one forward + backward."""
    cfg = Config(**json.loads(cfg_json))
    torch.set_num_threads(1)
    net = _unet(cfg, cfg.train_blocks, reversible)
    x = torch.randn(1, 1, side, side, side)
    try:  # reset the high-water mark to the current RSS (Linux >= 4.0)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    before = _vm_hwm()
    torch.nn.functional.cross_entropy(net(x), (x[:, 0] > 0).long()).backward()
    print(json.dumps({"peak_rss_growth": _vm_hwm() - before}))


def _peak_rss(cfg: Config, side: int, reversible: bool) -> float:
    from dataclasses import asdict

    code = (
        "import sys; from linearlab.recipes.reversible_unet import peak_rss_child; "
        "peak_rss_child(sys.argv[1], int(sys.argv[2]), sys.argv[3] == '1')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(asdict(cfg)), str(side), "1" if reversible else "0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_growth"])


def memory(cfg: Config) -> dict[str, Any]:
    m = 2 ** (cfg.levels - 1)
    by_depth = []
    side0 = cfg.memory_sides[0]
    for blocks in cfg.memory_blocks:
        row: dict[str, Any] = {"blocks": blocks, "side": side0}
        for mode in MODES:
            row[mode] = saved_bytes(
                _unet(cfg, blocks, mode == "reversible"), torch.randn(1, 1, side0, side0, side0)
            )
        by_depth.append(row)
    by_side = []
    for side in cfg.memory_sides:
        row = {"blocks": cfg.train_blocks, "side": side}
        for mode in MODES:
            row[mode] = saved_bytes(
                _unet(cfg, cfg.train_blocks, mode == "reversible"), torch.randn(1, 1, side, side, side)
            )
        by_side.append(row)
    per_voxel = {mode: [r[mode] / r["side"] ** 3 for r in by_side] for mode in MODES}
    budget = per_voxel["standard"][-1] * cfg.budget_side**3
    fit = {mode: largest_side(per_voxel[mode][-1], budget, m) for mode in MODES}
    out: dict[str, Any] = {
        "by_depth": by_depth,
        "by_side": by_side,
        "bytes_per_voxel": per_voxel,
        "linearity_spread": max(max(v) / min(v) - 1 for v in per_voxel.values()),
        "budget_bytes": budget,
        "budget_side": cfg.budget_side,
        "largest_side": fit,
        "volume_ratio_at_budget": per_voxel["standard"][-1] / per_voxel["reversible"][-1],
        "volume_ratio_whole_cubes": (fit["reversible"] / fit["standard"]) ** 3,
    }
    if cfg.rss_sides:
        sides = sorted(cfg.rss_sides)
        peaks = {mode: [_peak_rss(cfg, side, mode == "reversible") for side in sides] for mode in MODES}
        out["rss_sides"] = sides
        out["peak_rss_growth"] = peaks
        # peak ~ a + b * voxels per mode, through the two largest sides (one side: a = 0); the budget is
        # the standard net's peak at the largest side
        v = [sd**3 for sd in sides[-2:]]
        fits = {}
        for mode in MODES:
            p = peaks[mode][-2:]
            b = (p[-1] - p[0]) / (v[-1] - v[0]) if len(v) == 2 else p[-1] / v[-1]
            fits[mode] = (p[-1] - b * v[-1], b)
        a_r, b_r = fits["reversible"]
        out["peak_volume_ratio"] = (peaks["standard"][-1] - a_r) / b_r / v[-1] if b_r > 0 else math.inf
    return out


# ------------------------------------------------------------------------------ part 3: segmentation


def sphere_volumes(n: int, side: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy volumes ``[n, 1, side^3]`` with 1-3 spheres each and their masks ``[n, side^3]`` (long).

    Inside a sphere the intensity is raised by a per-volume contrast in [0.8, 1.5]; every volume gets
    a random offset and unit Gaussian noise, so single voxels are ambiguous and context is needed.
    """
    g = torch.Generator().manual_seed(seed)
    grid = torch.stack(torch.meshgrid(*[torch.arange(side, dtype=torch.float32)] * 3, indexing="ij"), dim=-1)
    masks = torch.zeros(n, side, side, side, dtype=torch.bool)
    for i in range(n):
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            r = side * (0.12 + 0.13 * torch.rand(1, generator=g))
            c = r + (side - 2 * r) * torch.rand(3, generator=g)
            masks[i] |= ((grid - c) ** 2).sum(-1) <= r**2
    contrast = 0.8 + 0.7 * torch.rand(n, 1, 1, 1, generator=g)
    offset = 0.5 * torch.randn(n, 1, 1, 1, generator=g)
    x = masks * contrast + offset + torch.randn(n, side, side, side, generator=g)
    return x[:, None], masks.long()


def dice(logits: torch.Tensor, mask: torch.Tensor) -> float:
    """Foreground Dice ``2|P & M| / (|P| + |M|)`` of the argmax prediction over the whole set."""
    pred = logits.argmax(1) == 1
    m = mask == 1
    denom = pred.sum() + m.sum()
    return float(2 * (pred & m).sum() / denom) if denom > 0 else 1.0


def train_segmentation(cfg: Config, mode: str, folder: RunDir) -> dict[str, Any]:
    done = folder.file("result.json")
    if done.exists():
        return json.loads(done.read_text())
    net = _unet(cfg, cfg.train_blocks, mode == "reversible")
    xe, me = sphere_volumes(cfg.eval_volumes, cfg.train_side, seed=10_000 + cfg.seed)

    def batch_fn(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        return sphere_volumes(cfg.batch_size, cfg.train_side, seed=cfg.seed * 1_000_003 + step)

    def loss_fn(model: nn.Module, batch) -> tuple[torch.Tensor, dict[str, float]]:
        return nn.functional.cross_entropy(model(batch[0]), batch[1]), {}

    def eval_fn(model: nn.Module) -> dict[str, float]:
        return {"dice": dice(torch.cat([model(xe[i : i + 2]) for i in range(0, len(xe), 2)]), me)}

    tc = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, weight_decay=0.0, warmup_steps=10,
                     grad_clip=1.0, log_every=10, checkpoint_every=50, seed=cfg.seed, progress=sys.stderr.isatty())  # fmt: skip
    t0 = time.perf_counter()
    res = train(net, batch_fn, loss_fn, tc, run_dir=folder, eval_fn=eval_fn, resume=True, desc=f"unet {mode}")
    seconds = time.perf_counter() - t0
    out = {"mode": mode, "dice": res.eval["dice"], "final_loss": res.final_loss,
           "seconds_per_step": res.train_seconds / max(1, len(res.losses)) if res.losses else seconds / cfg.steps}  # fmt: skip
    atomic_write_json(done, out)
    return out


# ------------------------------------------------------------------------------------------- output


def run(cfg: Config, run_dir: RunDir) -> dict[str, Any]:
    torch.set_num_threads(1)  # small volumes: extra threads mostly spin on a shared machine
    exact = run_dir.cached_json("exactness", lambda: exactness(cfg))
    mem = run_dir.cached_json("memory", lambda: memory(cfg))
    seg = [
        train_segmentation(cfg, mode, RunDir.create(NAME, run_dir.path / f"train_{mode}")) for mode in MODES
    ]
    summary = {
        "exactness": exact,
        "memory": mem,
        "segmentation": seg,
        "steps": cfg.steps,
        "train_side": cfg.train_side,
    }
    _plot(run_dir, summary)
    print(format_summary(summary))
    return summary


def _plot(run_dir: RunDir, s: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ex = s["exactness"]
    for mode in MODES:
        axes[0].plot(
            [r["depth"] for r in ex], [r[f"saved_bytes_{mode}"] / 2**20 for r in ex], "o-", label=mode
        )
    axes[0].set(
        xlabel="reversible MBConv3D blocks N",
        ylabel="saved for backward (MiB)",
        title="one stack",
        xscale="log",
    )
    axes[0].set_xticks([r["depth"] for r in ex], [str(r["depth"]) for r in ex])
    axes[0].minorticks_off()
    axes[0].legend()
    mem = s["memory"]
    for mode in MODES:
        axes[1].plot(
            [r["blocks"] for r in mem["by_depth"]],
            [r[mode] / 2**20 for r in mem["by_depth"]],
            "o-",
            label=mode,
        )
    axes[1].set(
        xlabel="blocks per level",
        ylabel="MiB",
        title=f"U-Net saved activations, side {mem['by_depth'][0]['side']}",
    )
    axes[1].legend()
    for mode in MODES:
        axes[2].plot(
            [r["side"] ** 3 for r in mem["by_side"]],
            [r[mode] / 2**20 for r in mem["by_side"]],
            "o-",
            label=mode,
        )
    axes[2].axhline(
        mem["budget_bytes"] / 2**20, color="k", ls=":", label=f"budget (standard at {mem['budget_side']}^3)"
    )
    axes[2].set(
        xlabel="voxels", ylabel="MiB", title="U-Net saved activations vs volume", xscale="log", yscale="log"
    )
    axes[2].legend(fontsize=8)
    run_dir.save_figure("reversible_unet.png", fig)


def format_summary(s: dict[str, Any]) -> str:
    mib = 2**20
    lines = [
        "(1) one stack of reversible MBConv3D blocks (notes: inversion ~1e-6 fp32, ~1e-14 fp64; saved bytes flat in N); "
        "grad diff = max |g_rev - g_std| / max |g_std| over all parameters (in fp32 the rebuilt inputs' rounding can "
        "flip ReLU6 kinks; fp64 shows the recomputation itself is exact)"
    ]
    lines.append(format_table(
        ["N", "inv err fp32", "inv err fp64", "grad diff fp32", "grad diff fp64", "saved MiB rev", "saved MiB std"],
        [[r["depth"], fmt(r["inversion_error_fp32"], 3), fmt(r["inversion_error_fp64"], 3), fmt(r["grad_rel_diff_fp32"], 3),
          fmt(r.get("grad_rel_diff_fp64", float("nan")), 3), fmt(r["saved_bytes_reversible"] / mib, 4),
          fmt(r["saved_bytes_standard"] / mib, 4)] for r in s["exactness"]],
    ))  # fmt: skip
    mem = s["memory"]
    lines.append("(2) U-Net saved activations (MiB)")
    lines.append(format_table(
        ["blocks/level", "side", "reversible", "standard", "standard/reversible"],
        [[r["blocks"], r["side"], fmt(r["reversible"] / mib, 4), fmt(r["standard"] / mib, 4), fmt(r["standard"] / r["reversible"], 3)]
         for r in mem["by_depth"] + mem["by_side"]],
    ))  # fmt: skip
    lines.append(
        f"budget = standard net at {mem['budget_side']}^3 ({fmt(mem['budget_bytes'] / mib, 4)} MiB): largest cube "
        f"reversible {mem['largest_side']['reversible']}^3 vs standard {mem['largest_side']['standard']}^3; volume ratio "
        f"{fmt(mem['volume_ratio_at_budget'], 3)} (whole cubes: {fmt(mem['volume_ratio_whole_cubes'], 3)}); paper: ~3x "
        f"the volume. Bytes/voxel spread over sides: {fmt(100 * mem['linearity_spread'], 3)}%"
    )
    if "peak_rss_growth" in mem:
        p = mem["peak_rss_growth"]
        lines.append("peak resident-memory growth of one forward + backward (fresh process each, batch 1)")
        lines.append(format_table(
            ["side", "reversible MiB", "standard MiB", "standard/reversible"],
            [[sd, fmt(r / mib, 4), fmt(st / mib, 4), fmt(st / r if r > 0 else math.inf, 3)]
             for sd, r, st in zip(mem["rss_sides"], p["reversible"], p["standard"])],
        ))  # fmt: skip
        lines.append(
            f"volume the reversible net fits in the standard net's peak at {mem['rss_sides'][-1]}^3: "
            f"{fmt(mem['peak_volume_ratio'], 3)}x (paper: ~3x)"
        )
    lines.append(
        f"(3) segmentation of noisy spheres ({s['train_side']}^3, {s['steps']} steps, same init and batches)"
    )
    lines.append(format_table(
        ["net", "test Dice", "final loss", "s/step"],
        [[r["mode"], fmt(r["dice"], 4), fmt(r["final_loss"], 4), fmt(r["seconds_per_step"], 3)] for r in s["segmentation"]],
    ))  # fmt: skip
    return "\n".join(lines)


def headline(summary: dict[str, Any]) -> dict[str, float]:
    """Inversion error, volume ratio at a fixed budget, Dice of both nets."""
    ex = summary["exactness"][-1]
    mem = summary["memory"]
    out = {
        f"inversion error fp32 N={ex['depth']}": ex["inversion_error_fp32"],
        f"grad rel diff fp32 N={ex['depth']}": ex["grad_rel_diff_fp32"],
        f"grad rel diff fp64 N={ex['depth']}": ex["grad_rel_diff_fp64"],
        "volume ratio at fixed saved-activation budget": mem["volume_ratio_at_budget"],
    }
    if "peak_volume_ratio" in mem:
        out["volume ratio at fixed peak memory"] = mem["peak_volume_ratio"]
    for r in summary["segmentation"]:
        out[f"dice {r['mode']}"] = r["dice"]
    return out


def report(run_dir: RunDir) -> str:
    return format_summary(run_dir.read_summary())


RECIPE = Recipe(
    name=NAME,
    help="reversible MBConv 3-D U-Net: exact inversion, activation memory flat in depth, volume at fixed budget",
    config=Config,
    presets={"default": Config, "smoke": _smoke},
    run=run,
    report=report,
    headline=headline,
)


declare_paper(
    arxiv="2104.09648",
    short="Reversible 3D U-Net",
    title="Memory Efficient 3D U-Net with Reversible Mobile Inverted Bottlenecks for Brain Tumor Segmentation",
    authors="Pendse, Thangarasa, Chiley, Holmdahl, Hestness, DeCoste",
    venue="BrainLes 2020",
    area=OTHER,
    status="implemented",
    objects=(
        "linearlab.layers.vision.reversible.ReversibleBlock",
        "linearlab.layers.vision.reversible.ReversibleSequence",
        "linearlab.layers.vision.reversible.SavedTensorBytes",
        "linearlab.models.unet3d.ReversibleUNet3d",
    ),
    recipes=(NAME,),
    usage=(
        "from linearlab.models.unet3d import ReversibleUNet3d\n"
        "logits = ReversibleUNet3d(1, 2, base=8, levels=3, blocks=2)(torch.randn(1, 1, 16, 16, 16))"
    ),
    claim=(
        "Reversible MobileNetV2-style blocks in a 3-D U-Net recompute activations in backward, allowing "
        "3x larger input volumes, 25% more depth or 2x the channels at fixed memory (BraTS 2020)."
    ),
    note="BraTS itself is not used (a download); synthetic sphere volumes stand in for it.",
)
