"""linearize_dit_: weights inherited, only attention replaced; distillation loss terms."""

import copy

import pytest
import torch

from linearlab.convert.linearize_dit import (
    LINFUSION_WEIGHTS,
    LIT_WEIGHTS,
    DistillWeights,
    attention_parameters,
    distillation_loss,
    linearize_dit_,
)
from linearlab.layers.vision.grid_attention import LinFusionAttention, LiTAttention
from linearlab.models.dit import DiT, DiTConfig, make_scheduler


def _teacher():
    torch.manual_seed(0)
    m = DiT(DiTConfig(image_size=8, hidden=16, depth=2, num_heads=2))
    for p in m.parameters():  # a "trained" teacher: no zero-initialised gates left
        torch.nn.init.normal_(p, std=0.2)
    return m


@pytest.mark.parametrize("method,cls", [("lit", LiTAttention), ("linfusion", LinFusionAttention)])
def test_every_non_attention_weight_and_the_projections_are_inherited(method, cls):
    teacher = _teacher()
    student = linearize_dit_(copy.deepcopy(teacher), method, num_heads=1)
    assert all(isinstance(b.attn, cls) and b.attn.num_heads == 1 for b in student.blocks)
    assert student.cfg.attention == method
    t_sd, s_sd = teacher.state_dict(), student.state_dict()
    for name, value in t_sd.items():
        assert torch.equal(s_sd[name], value), name  # same names: softmax has only q/k/v/o_proj
    new = set(s_sd) - set(t_sd)
    assert new and all(".attn." in n and "_proj" not in n for n in new)
    with pytest.raises(ValueError, match="block attention is"):
        linearize_dit_(student, method)


def test_bad_method():
    with pytest.raises(ValueError, match="method: expected one of"):
        linearize_dit_(_teacher(), "softmax")


def test_distillation_terms_vanish_for_a_copy_of_the_teacher_and_drive_the_student():
    teacher = _teacher()
    s = make_scheduler(True)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    t = torch.tensor([5, 100, 400, 900])
    noise = torch.randn(4, 1, 8, 8)
    xt = s.add_noise(x0, noise, t)
    y = torch.tensor([0, 1, 2, 3])
    _, parts = distillation_loss(copy.deepcopy(teacher), teacher, s, x0, xt, t, noise, y, LIT_WEIGHTS)
    assert parts["out"] == parts["var"] == 0.0 and parts["noise"] > 0
    _, parts = distillation_loss(copy.deepcopy(teacher), teacher, s, x0, xt, t, noise, y, LINFUSION_WEIGHTS)
    assert parts["feat"] == 0.0
    student = linearize_dit_(copy.deepcopy(teacher), "linfusion")
    for p in student.parameters():
        p.requires_grad_(False)
    for p in attention_parameters(student):
        p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], 3e-3)
    first = None
    # distillation terms only: the random "teacher" is no denoiser, so the noise term would pull away
    only_teacher = DistillWeights(noise=0.0, out=0.5, feat=0.5)
    for _ in range(25):
        loss, parts = distillation_loss(student, teacher, s, x0, xt, t, noise, y, only_teacher)
        first = first or parts
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert parts["feat"] < 0.5 * first["feat"] and parts["out"] < first["out"]
    assert all(p.grad is None for n, p in student.named_parameters() if ".attn." not in n)
