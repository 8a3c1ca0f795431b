"""A tiny training job run as a subprocess by the train tests (kill/resume and torchrun DDP)."""

import argparse
import sys
import time

import torch
from torch import nn

from linearlab.io import atomic_save_safetensors
from linearlab.runs import RunDir
from linearlab.train import TrainConfig, train


def make_model() -> nn.Module:
    torch.manual_seed(123)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))


def batch_fn_factory(batch_size: int, delay: float):
    w = torch.linspace(-1, 1, 6)

    def batch_fn(step: int):
        gen = torch.Generator().manual_seed(1000 + step)
        x = torch.randn(batch_size, 6, generator=gen)
        y = (x @ w).unsqueeze(-1) + 0.1 * torch.randn(batch_size, 1, generator=gen)
        if delay:
            time.sleep(delay)
        return x, y

    return batch_fn


def loss_fn(model, batch):
    x, y = batch
    loss = ((model(x) - y) ** 2).mean()
    return loss, {}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--run-dir", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--delay", type=float, default=0.0)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint-every", type=int, default=5)
    p.add_argument("--out", required=True, help="safetensors file for the final weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    model = make_model()
    cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=1e-2,
        warmup_steps=3,
        checkpoint_every=args.checkpoint_every,
        log_every=1,
        progress=False,
    )
    train(
        model,
        batch_fn_factory(args.batch_size, args.delay),
        loss_fn,
        cfg,
        RunDir.create("t", args.run_dir),
        resume=args.resume,
    )
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        atomic_save_safetensors(args.out, model.state_dict())
    if dist.is_initialized():
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
