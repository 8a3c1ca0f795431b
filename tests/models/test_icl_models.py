"""In-context regression models: linear self-attention as one GD step, the GPT-2 style regressor."""

import math

import pytest
import torch

from linearlab.analysis.icl_learners import gd, predict
from linearlab.layers import list_mixers
from linearlab.models.icl import GPT2Block, ICLTransformer, LinearSelfAttention, build_lsa_tokens, interleave
from linearlab.tasks.icl import ICLTask


def _prompts(d=4, n=10, m=3, batch=8, seed=0):
    b = ICLTask(d, n + m, seed=seed, dtype=torch.float64).sample(batch)
    return b.x[:, :n], b.y[:, :n], b.x[:, n:]


def test_lsa_set_by_hand_is_one_gd_step():
    x, y, xq = _prompts()
    lr = 0.8
    lsa = LinearSelfAttention.from_gd(4, lr)
    expected = predict(gd(x, y, 1, lr), xq)
    assert float((lsa.predict(x, y, xq).detach() - expected).abs().max()) < 1e-6
    p = torch.tensor([[1.0, 0.2, 0, 0], [0.0, 0.5, 0, 0], [0, 0, 2.0, 0], [0, 0, 0.3, 1.0]])
    lsa_p = LinearSelfAttention.from_gd(4, lr, preconditioner=p)
    expected_p = predict(gd(x, y, 1, lr, preconditioner=p.double()), xq)
    assert float((lsa_p.predict(x, y, xq).detach() - expected_p).abs().max()) < 1e-6
    torch.testing.assert_close(lsa_p.preconditioner, lr * p.T)


def test_lsa_keys_and_values_come_from_the_context_only():
    lsa = LinearSelfAttention(3, init_scale=0.5)
    x, y, xq = _prompts(d=3)
    one = lsa.predict(x, y, xq[:, :1])
    many = lsa.predict(x, y, xq)  # more queries must not change the first one's prediction
    torch.testing.assert_close(many[:, :1], one)


def test_lsa_label_only_masks_the_input_rows():
    lsa = LinearSelfAttention(3, init_scale=0.5, label_only=True)
    x, y, xq = _prompts(d=3)
    z = build_lsa_tokens(x, y, xq, 3)
    out = lsa(z, x.shape[1])
    torch.testing.assert_close(out[..., :3], z[..., :3])
    assert (lsa.effective_w_pv[:3] == 0).all() and (lsa.effective_w_pv[3] != 0).all()


def test_transformer_is_causal_and_predict_query_matches_forward():
    model = ICLTransformer(3, d_model=16, n_layers=2, max_points=8).eval()
    b = ICLTask(3, 6, seed=0).sample(4)
    pred, hidden = model(b.x, b.y, return_hidden=True)
    assert pred.shape == (4, 6) and len(hidden) == 3 and hidden[0].shape == (4, 6, 16)
    y2 = b.y.clone()
    y2[:, 3] += 5.0
    pred2 = model(b.x, y2)
    torch.testing.assert_close(pred2[:, :4], pred[:, :4])  # y_3 is only visible from prediction 4 on
    assert (pred2[:, 4:] - pred[:, 4:]).abs().min() > 0
    k = 3
    q = model.predict_query(b.x[:, :k], b.y[:, :k], b.x[:, k : k + 1])
    torch.testing.assert_close(q[:, 0], pred[:, k], atol=1e-5, rtol=1e-5)


def test_interleave_layout():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 3)
    t = interleave(x, y)
    assert t.shape == (2, 6, 6)
    torch.testing.assert_close(t[:, 0::2, :4], x)
    torch.testing.assert_close(t[:, 1::2, 4], y)
    assert (t[:, 0::2, 4:] == 0).all() and (t[:, 1::2, 5] == 1).all()


@pytest.mark.parametrize("name", list_mixers())
def test_transformer_with_registry_mixer_is_causal(name):
    model = ICLTransformer(3, d_model=16, n_layers=1, mixer=name, max_points=6).eval()
    b = ICLTask(3, 5, seed=1).sample(2)
    y2 = b.y.clone()
    y2[:, 2] -= 3.0
    with torch.no_grad():
        p1, p2 = model(b.x, b.y), model(b.x, y2)
    assert torch.isfinite(p1).all()
    torch.testing.assert_close(p1[:, :3], p2[:, :3])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: LinearSelfAttention(0), "d: expected an integer >= 1, got 0"),
        (
            lambda: LinearSelfAttention(3)(torch.zeros(2, 5, 3), 2),
            "z: expected [B, T, d + 1 = 4], got (2, 5, 3)",
        ),
        (
            lambda: LinearSelfAttention(3)(torch.zeros(2, 5, 4), 6),
            "n_context: expected an integer in [1, T=5], got 6",
        ),
        (lambda: LinearSelfAttention.from_gd(3, 0.1, torch.eye(2)), "preconditioner: expected shape [3, 3]"),
        (lambda: ICLTransformer(3, mixer="nope"), "mixer: unknown mixer 'nope'; choose 'builtin'"),
        (lambda: ICLTransformer(3, d_model=10, num_heads=4), "num_heads: 4 does not divide d_model=10"),
        (lambda: ICLTransformer(3, n_layers=0), "n_layers: expected an integer >= 1, got 0"),
        (
            lambda: ICLTransformer(3, max_points=2)(torch.zeros(1, 3, 3), torch.zeros(1, 3)),
            "exceed 2 * max_points = 4",
        ),
        (
            lambda: ICLTransformer(3).forward_tokens(torch.zeros(1, 4, 3)),
            "tokens: expected [B, T, d + 2 = 5]",
        ),
        (
            lambda: interleave(torch.zeros(2, 3, 4), torch.zeros(2, 2)),
            "interleave: expected x [B, N, d] and y [B, N]",
        ),
        (
            lambda: build_lsa_tokens(torch.zeros(2, 3, 4), torch.zeros(2, 3), torch.zeros(2, 1, 5), 4),
            "x_query: expected [B=2, m, d=4], got (2, 1, 5)",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as err:
        call()
    assert message in str(err.value)


def test_builtin_block_is_gpt2_causal_softmax_attention():
    """The built-in mixer written out by hand: biased q/k/v, softmax over earlier tokens, biased output."""
    block = GPT2Block(8, "builtin", num_heads=2, mlp_ratio=4).eval()
    h = torch.randn(3, 5, 8)
    x = block.norm1(h)
    q, k, v = block.qkv(x).reshape(3, 5, 3, 2, 4).permute(2, 0, 3, 1, 4)  # [3, B, H, T, 4]
    scores = q @ k.transpose(-1, -2) / math.sqrt(4)
    scores = scores.masked_fill(torch.ones(5, 5, dtype=torch.bool).triu(1), float("-inf"))
    attn = (scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 5, 8)
    h1 = h + block.out(attn)
    expected = h1 + block.mlp(block.norm2(h1))
    with torch.no_grad():
        torch.testing.assert_close(block(h), expected, atol=1e-6, rtol=1e-5)
    assert block.qkv.bias is not None and block.mixer is None
    assert sum(p.numel() for p in block.parameters()) == 2 * 16 + (8 * 24 + 24) + (8 * 8 + 8) + (
        8 * 32 + 32
    ) + (32 * 8 + 8)


def test_registered_mixer_block_uses_the_registry():
    block = GPT2Block(8, "softmax", num_heads=2, mlp_ratio=2, mixer_kwargs={"num_heads": 2, "rope": False})
    assert block.mixer is not None and block.mixer.mixer_name == "softmax" and block.qkv is None
    assert block(torch.randn(2, 4, 8)).shape == (2, 4, 8)
