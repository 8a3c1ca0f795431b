"""Grid mixers: each equals its formula written out, weight inheritance, resolution behaviour, errors."""

import pytest
import torch
from torch.nn import functional as F

from linearlab.layers.vision.grid_attention import GRID_MIXERS, create_grid_mixer


def _x(B=2, h=4, w=3, D=16, seed=0):
    return torch.randn(B, h * w, D, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_registry_holds_the_three_grid_mixers_and_not_the_causal_registry():
    from linearlab.layers.registry import list_mixers

    assert GRID_MIXERS.names() == ["linfusion", "lit", "softmax"]
    assert not {"lit", "linfusion"} & set(list_mixers())


def test_softmax_matches_the_attention_matrix():
    m = create_grid_mixer("softmax", 16, 2).double()
    x = _x()
    q, k, v = (p(x).view(2, 12, 2, 8) for p in (m.q_proj, m.k_proj, m.v_proj))
    A = torch.softmax(torch.einsum("bihd,bjhd->bhij", q, k) / 8**0.5, -1)
    ref = m.o_proj(torch.einsum("bhij,bjhd->bihd", A, v).reshape(2, 12, 16))
    torch.testing.assert_close(m(x, (4, 3)), ref)


@pytest.mark.parametrize("heads", [1, 2, 4])
def test_lit_is_relu_linear_attention_plus_a_depthwise_conv(heads):
    m = create_grid_mixer("lit", 16, heads).double()
    x = _x()
    d = 16 // heads
    q, k = (torch.relu(p(x)).view(2, 12, heads, d) for p in (m.q_proj, m.k_proj))
    v = m.v_proj(x)
    A = torch.einsum("bihd,bjhd->bhij", q, k) * d**-0.5 / 12  # mean over the 12 keys
    A = A / (A.sum(-1, keepdim=True) + 1e-4)  # a query of ReLU zeros gives 0, not 0/0
    attn = torch.einsum("bhij,bjhd->bihd", A, v.view(2, 12, heads, d)).reshape(2, 12, 16)
    img = v.transpose(1, 2).reshape(2, 16, 4, 3)
    local = F.conv2d(img, m.dwc.weight, m.dwc.bias, padding=2, groups=16).reshape(2, 16, 12).transpose(1, 2)
    torch.testing.assert_close(m(x, (4, 3)), m.o_proj(attn + local))


def test_linfusion_starts_from_the_inherited_projections_and_is_mean_normalised():
    m = create_grid_mixer("linfusion", 16, 2, eps=0.0).double()
    x = _x()
    q, k = (F.elu(p(x)).view(2, 12, 2, 8) + 1 for p in (m.q_proj, m.k_proj))  # MLPs start at zero
    A = torch.einsum("bihd,bjhd->bhij", q, k)
    A = A / A.sum(-1, keepdim=True)
    ref = m.o_proj(torch.einsum("bhij,bjhd->bihd", A, m.v_proj(x).view(2, 12, 2, 8)).reshape(2, 12, 16))
    torch.testing.assert_close(m(x, (4, 3)), ref)
    # the feature MLPs are trainable and change q, k once their last layer moves off zero
    torch.nn.init.normal_(m.q_mlp[-1].weight)
    assert not torch.allclose(m(x, (4, 3)), ref)


def test_all_mixers_share_projection_names_so_weights_load_across():
    sd = create_grid_mixer("softmax", 16, 2).state_dict()
    for name in ("lit", "linfusion"):
        m = create_grid_mixer(name, 16, 4)
        missing, unexpected = m.load_state_dict(sd, strict=False)
        assert not unexpected and all(not k.split(".")[0].endswith("proj") for k in missing)
        assert torch.equal(m.q_proj.weight, sd["q_proj.weight"])


def test_normalised_linfusion_is_resolution_stable_and_sums_are_not():
    """Tiling the grid 2x2 (4x the tokens, same content) leaves the normalised attention's output on
    each token unchanged, while the un-normalised sum grows 4x."""
    x = _x(B=1, h=3, w=3)
    x4 = x.view(1, 3, 3, 16).repeat(1, 2, 2, 1).reshape(1, 36, 16)
    norm = create_grid_mixer("linfusion", 16, 2, eps=0.0).double()
    summ = create_grid_mixer("linfusion", 16, 2, normalize=False).double()
    summ.load_state_dict(norm.state_dict())
    tiled = norm(x4, (6, 6)).view(1, 6, 6, 16)[:, :3, :3].reshape(1, 9, 16)
    torch.testing.assert_close(tiled, norm(x, (3, 3)))
    bias = summ.o_proj.bias
    grown = summ(x4, (6, 6)).view(1, 6, 6, 16)[:, :3, :3].reshape(1, 9, 16) - bias
    torch.testing.assert_close(grown, 4 * (summ(x, (3, 3)) - bias))


def test_gradients_reach_every_parameter():
    for name in ("softmax", "lit", "linfusion"):
        m = create_grid_mixer(name, 16, 2)
        torch.nn.init.normal_(
            getattr(m, "q_mlp", m.q_proj)[-1].weight if name == "linfusion" else m.q_proj.weight
        )
        if name == "linfusion":
            torch.nn.init.normal_(m.k_mlp[-1].weight)
        m(_x().float(), (4, 3)).square().sum().backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters()), name


def test_bad_input_is_a_clear_error():
    m = create_grid_mixer("lit", 16, 2)
    with pytest.raises(ValueError, match=r"grid: \(h, w\) = \(4, 4\) holds 16 tokens but x has N = 12"):
        m(_x().float(), (4, 4))
    with pytest.raises(ValueError, match=r"x: expected tokens \[B, N, D\]"):
        m(torch.randn(12, 16), (4, 3))
    with pytest.raises(ValueError, match="num_heads: expected a positive divisor of d_model=16, got 3"):
        create_grid_mixer("linfusion", 16, 3)
    with pytest.raises(ValueError, match="attention: unknown grid mixer 'gla'"):
        create_grid_mixer("gla", 16, 2)
