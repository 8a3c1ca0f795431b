"""Non-causal linear attention: fused form vs the query-by-query reference, gradients, scale laws, errors."""

import pytest
import torch

from linearlab.ops.noncausal_linear_attn import fused_noncausal_linear_attn, naive_noncausal_linear_attn

MODES = [(True, True), (True, False), (False, True), (False, False)]


def _qkv(B=2, T=13, H=3, K=8, V=5, dtype=torch.float64, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    q = torch.relu(torch.randn(B, T, H, K, generator=g, dtype=dtype))
    k = torch.nn.functional.elu(torch.randn(B, T, H, K, generator=g, dtype=dtype)) + 1
    v = torch.randn(B, T, H, V, generator=g, dtype=dtype)
    return [t.requires_grad_(grad) for t in (q, k, v)]


def _dense(q, k, v, scale, normalize, mean):
    """The attention matrix written out: A = scale q k^T (optionally row-normalised)."""
    A = scale * torch.einsum("bihk,bjhk->bhij", q, k)
    c = 1 / q.shape[1] if mean else 1.0
    o = c * torch.einsum("bhij,bjhv->bihv", A, v)
    if normalize:
        o = o / (c * A.sum(-1).transpose(1, 2)[..., None] + 1e-4)
    return o


@pytest.mark.parametrize("normalize,mean", MODES)
def test_fused_equals_naive_and_the_dense_matrix(normalize, mean):
    q, k, v = _qkv()
    o = fused_noncausal_linear_attn(q, k, v, normalize=normalize, mean=mean)
    ref = naive_noncausal_linear_attn(q, k, v, normalize=normalize, mean=mean)
    torch.testing.assert_close(o, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(o, _dense(q, k, v, 8**-0.5, normalize, mean), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("normalize,mean", MODES)
def test_every_gradient_matches_the_naive_form(normalize, mean):
    q, k, v = _qkv(grad=True, seed=1)
    do = torch.randn(2, 13, 3, 5, dtype=torch.float64)
    grads = torch.autograd.grad(
        (fused_noncausal_linear_attn(q, k, v, 0.3, normalize, mean) * do).sum(), (q, k, v)
    )
    ref = torch.autograd.grad(
        (naive_noncausal_linear_attn(q, k, v, 0.3, normalize, mean) * do).sum(), (q, k, v)
    )
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("normalize,mean", MODES)
def test_gradcheck_against_finite_differences(normalize, mean):
    q, k, v = _qkv(B=1, T=5, H=2, K=3, V=2, seed=2)
    # positive queries: a query of ReLU zeros puts the denominator at eps, where finite differences
    # of step 1e-6 are no longer in the linear regime
    q = (q + 0.1).requires_grad_(True)
    k.requires_grad_(True)
    v.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a, b, c: fused_noncausal_linear_attn(a, b, c, None, normalize, mean), (q, k, v)
    )


def test_float32_and_bfloat16_follow_the_float64_result():
    q, k, v = _qkv(seed=3)
    ref = fused_noncausal_linear_attn(q, k, v)
    o32 = fused_noncausal_linear_attn(q.float(), k.float(), v.float())
    obf = fused_noncausal_linear_attn(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert o32.dtype == torch.float32 and obf.dtype == torch.bfloat16
    torch.testing.assert_close(o32.double(), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(obf.double(), ref, rtol=0.05, atol=0.05)


def test_normalised_output_is_independent_of_the_token_count_and_sums_grow_with_it():
    """Repeating every key/value r times (an upsampled image) leaves the normalised output unchanged
    and multiplies the un-normalised sum by r: LinFusion's cross-resolution argument, exactly."""
    q, k, v = _qkv(seed=4)
    r = 4
    k4, v4 = k.repeat_interleave(r, dim=1), v.repeat_interleave(r, dim=1)
    q4 = q.repeat_interleave(r, dim=1)
    for mean in (True, False):
        o1 = fused_noncausal_linear_attn(q, k, v, normalize=True, mean=mean, eps=0.0)
        o4 = fused_noncausal_linear_attn(q4, k4, v4, normalize=True, mean=mean, eps=0.0)
        torch.testing.assert_close(o4, o1.repeat_interleave(r, dim=1), rtol=1e-12, atol=1e-12)
    s1 = fused_noncausal_linear_attn(q, k, v, normalize=False, mean=False)
    s4 = fused_noncausal_linear_attn(q4, k4, v4, normalize=False, mean=False)
    torch.testing.assert_close(s4, r * s1.repeat_interleave(r, dim=1), rtol=1e-12, atol=1e-12)
    m4 = fused_noncausal_linear_attn(q4, k4, v4, normalize=False, mean=True)
    torch.testing.assert_close(
        m4, fused_noncausal_linear_attn(q, k, v, normalize=False).repeat_interleave(r, 1)
    )


def test_normalised_output_is_a_convex_combination_of_values():
    q, k, v = _qkv(seed=5)
    o = fused_noncausal_linear_attn(q, k, v, eps=0.0)
    assert (o <= v.amax(1, keepdim=True) + 1e-12).all() and (o >= v.amin(1, keepdim=True) - 1e-12).all()


def test_token_order_is_irrelevant_except_for_the_query_position():
    q, k, v = _qkv(seed=6)
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(0))
    o = fused_noncausal_linear_attn(q, k, v)
    torch.testing.assert_close(fused_noncausal_linear_attn(q[:, perm], k[:, perm], v[:, perm]), o[:, perm])


@pytest.mark.parametrize("fn", [fused_noncausal_linear_attn, naive_noncausal_linear_attn])
def test_bad_input_is_a_clear_error(fn):
    q, k, v = _qkv(B=1)
    with pytest.raises(ValueError, match="cu_seqlens: non-causal linear attention does not support packed"):
        fn(q, k, v, cu_seqlens=torch.tensor([0, 5, 13]))
    with pytest.raises(ValueError, match=r"q: expected 4 dims \[B, T, H, D\]"):
        fn(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="v: shape"):
        fn(q, k, v[:, :5])
    with pytest.raises(ValueError, match="normalize: expected a bool, got 'mean'"):
        fn(q, k, v, normalize="mean")
    with pytest.raises(ValueError, match="eps: expected a float >= 0, got -1"):
        fn(q, k, v, eps=-1)
