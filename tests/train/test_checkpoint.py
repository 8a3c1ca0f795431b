"""Checkpoints of models whose weights are tied (one tensor under two names)."""

import torch
from torch import nn

from linearlab.train.checkpoint import load_checkpoint, save_checkpoint


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.head = nn.Linear(4, 7, bias=False)
        self.head.weight = self.embed.weight  # as tie_word_embeddings does


def test_tied_weights_are_stored_once_and_restored_tied(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    opt = torch.optim.AdamW(model.parameters())
    path = save_checkpoint(tmp_path / "c.safetensors", model, opt, {"step": 3})
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        names = [k for k in f.keys() if k.startswith("model.")]  # noqa: SIM118
    assert names == ["model.embed.weight"]
    again = Tied()
    state = load_checkpoint(path, again, torch.optim.AdamW(again.parameters()))
    assert state["step"] == 3
    assert torch.equal(again.embed.weight, model.embed.weight)
    assert again.head.weight is again.embed.weight
