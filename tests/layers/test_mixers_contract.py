"""The mixer contract, checked for every registered mixer (and variants that take other code paths).

For each case, in float64 at tiny size: output shape and finiteness, gradients reaching every
parameter, causality, one call == token-by-token stepping == two pieces with the state carried,
``state_size``, the error for a badly shaped ``x`` and for a wrong state, the declared
``state_shapes``, the dtype rule (``layers/precision.py``) and, for chunked mixers, independence of
the chunk size.
"""

from __future__ import annotations

import inspect

import pytest
import torch

from linearlab.layers import create_mixer, list_mixers
from linearlab.layers.feature_maps import list_feature_maps
from linearlab.layers.mixer_state import check_state
from linearlab.layers.precision import compute_dtype

D_MODEL = 16
T = 12
B = 2

# small settings so that windows / blocks / state sizes matter within T = 12 tokens
SMALL: dict[str, dict] = {
    "sliding_window": {"window_size": 4},
    "transnormer": {"block_size": 5},
    "lssl": {"d_state": 8},
}

# variants of one registered mixer that take a different code path
VARIANTS: list[tuple[str, dict]] = [
    *[("linear_attention", {"feature_map": fm}) for fm in list_feature_maps() if fm != "elu1"],
    ("linear_attention", {"normalize": False}),
    ("transnormer", {"attn_type": "diag", "block_size": 5}),
    ("transnormer", {"decay": 0.9, "feature_map": "elu1"}),
    ("retnet", {"position": "xpos"}),
    ("retnet", {"position": "none"}),
    ("softmax", {"rope": False}),
    ("sliding_window", {"window_size": 1}),
    ("deltanet", {"use_short_conv": False}),
    ("mom", {"mode": "mask", "shared_memory": False}),
]

CASES = [(name, SMALL.get(name, {})) for name in list_mixers()] + VARIANTS

# mixers whose state is a KV cache that grows with the sequence; every other state is bounded
GROWING_STATE = {"softmax"}


def _case_id(case: tuple[str, dict]) -> str:
    name, kw = case
    return name + "".join(f"-{k}={v}" for k, v in kw.items())


def takes(name: str, argument: str) -> bool:
    """Whether the mixer registered as ``name`` has a constructor argument ``argument``."""
    return argument in inspect.signature(type(create_mixer(name, d_model=D_MODEL))).parameters


def build(name: str, kwargs: dict) -> torch.nn.Module:
    """The mixer in float64, with 2 heads if it takes ``num_heads``, as layer 1 of 2."""
    cls_kwargs = dict(kwargs)
    if takes(name, "num_heads") and "num_heads" not in cls_kwargs:
        cls_kwargs["num_heads"] = 2
    torch.manual_seed(0)
    return create_mixer(name, d_model=D_MODEL, layer_idx=1, num_layers=2, **cls_kwargs).double()


def inputs(seed: int = 1, length: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, length, D_MODEL, generator=g, dtype=torch.float64)


def assert_states_close(a, b, where: str) -> None:
    """States are (nested) dicts of tensors; compare every entry."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (
            f"{where}: state keys differ: {sorted(a)} vs {sorted(b)}"
        )
        for key in a:
            assert_states_close(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_states_close(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.shape == b.shape, f"{where}: shapes differ {list(a.shape)} vs {list(b.shape)}"
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=lambda m: f"{where}: {m}")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def clone_state(s):
    if isinstance(s, dict):
        return {k: clone_state(v) for k, v in s.items()}
    if isinstance(s, (list, tuple)):
        return type(s)(clone_state(v) for v in s)
    return s.detach().clone() if isinstance(s, torch.Tensor) else s


# every test below runs for every registered mixer and variant
each_case = pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])


@each_case
def test_shape_dtype_and_finite(case):
    mixer = build(*case)
    x = inputs()
    y, state = mixer(x)
    assert y.shape == x.shape
    assert y.dtype == torch.float64
    assert torch.isfinite(y).all()
    assert isinstance(state, dict) and state, "state must be a non-empty dict"


@each_case
def test_float32_forward(case):
    mixer = build(*case).float()
    y, _ = mixer(inputs().float())
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()


@each_case
def test_gradients_reach_every_parameter(case):
    mixer = build(*case).train()
    x = inputs().requires_grad_(True)
    y, _ = mixer(x)
    # a random projection of the output: a plain sum can be blind to parameters (e.g. through norms)
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype)
    loss = (y * w).sum()
    if getattr(mixer, "aux_loss", None) is not None:
        loss = loss + mixer.aux_loss
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for pname, p in mixer.named_parameters():
        assert p.grad is not None, f"{pname}: no gradient"
        assert torch.isfinite(p.grad).all(), f"{pname}: non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{pname}: gradient is all zero"


@each_case
def test_causal(case):
    mixer = build(*case).eval()
    x = inputs()
    y, _ = mixer(x)
    for t in (0, 4, T - 2):
        x2 = x.clone()
        x2[:, t + 1 :] = inputs(seed=7)[:, t + 1 :]
        y2, _ = mixer(x2)
        torch.testing.assert_close(y2[:, : t + 1], y[:, : t + 1], rtol=1e-9, atol=1e-10)
        assert not torch.allclose(y2[:, t + 1 :], y[:, t + 1 :]), "changed future tokens had no effect"


@torch.no_grad()
@each_case
def test_token_by_token_equals_one_call(case):
    mixer = build(*case).eval()
    x = inputs()
    y, final = mixer(x)
    state, outs = None, []
    for t in range(T):
        y_t, state = mixer(x[:, t : t + 1], state)
        outs.append(y_t)
    torch.testing.assert_close(torch.cat(outs, dim=1), y, rtol=1e-9, atol=1e-10)
    assert_states_close(state, final, "stepped state")


@torch.no_grad()
@each_case
def test_two_pieces_equal_one_call_and_state_is_not_mutated(case):
    mixer = build(*case).eval()
    x = inputs()
    y, final = mixer(x)
    split = 5  # deliberately not aligned with any window, block or chunk size
    y1, s1 = mixer(x[:, :split])
    s1_copy = clone_state(s1)
    y2, s2 = mixer(x[:, split:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y, rtol=1e-9, atol=1e-10)
    assert_states_close(s2, final, "carried state")
    assert_states_close(s1, s1_copy, "input state after reuse")


@each_case
def test_state_size(case):
    name, _ = case
    mixer = build(*case)
    sizes = [mixer.state_size(n) for n in (1, 8, 1024, 2048)]
    for n, s in zip((1, 8, 1024, 2048), sizes):
        assert isinstance(s, int) and not isinstance(s, bool), f"state_size({n}) = {s!r} is not an int"
        assert s > 0, f"state_size({n}) = {s} must be positive"
    assert sizes == sorted(sizes), f"state_size must not shrink with seq_len: {sizes}"
    if name in GROWING_STATE:
        assert sizes[3] == 2 * sizes[2], f"a KV cache grows linearly: {sizes}"
    else:
        assert sizes[2] == sizes[3], f"a recurrent state is bounded in seq_len: {sizes}"


@each_case
def test_bad_rank_raises_naming_x(case):
    mixer = build(*case)
    x = inputs()
    for bad in (x[0], x[..., None]):
        with pytest.raises(ValueError, match=r"\bx\b"):
            mixer(bad)


@each_case
def test_state_shapes_describe_the_returned_state(case):
    """``state_shapes(B)`` is what the mixer returns, so the entry check accepts its own states."""
    mixer = build(*case)
    for length in (1, T):
        _, state = mixer(inputs(length=length))
        assert list(state) == list(mixer.state_shapes(B)), "state keys differ from state_shapes"
        check_state(state, mixer.state_shapes(B))


@each_case
def test_wrong_state_is_a_value_error_naming_the_expected_keys(case):
    """A wrong key, a wrong shape, a wrong batch size and a non-dict: one ValueError naming what is expected."""
    mixer = build(*case)
    x = inputs()
    _, state = mixer(x)
    keys = list(state)
    names = "".join(rf"(?=.*'{k}': \[)" for k in keys)  # every expected key, with its shape, in any order
    wrong = {
        "renamed key": {("S" if k == keys[0] else k): v for k, v in state.items()},
        "missing key": {k: v for k, v in state.items() if k != keys[-1]},
        "extra key": {**state, "extra": state[keys[0]]},
        "not a tensor": {**state, keys[0]: state[keys[0]].tolist()},
        "wrong shape": {**state, keys[0]: torch.zeros(3, 1, dtype=torch.float64)},
        "list": [state[k] for k in keys],
    }
    for what, bad in wrong.items():
        with pytest.raises(ValueError, match=names) as info:
            mixer(x, bad)
        assert str(info.value).startswith("state"), f"{what}: {info.value}"
    # a state for another batch size
    with pytest.raises(ValueError, match=r"state\['[a-z_]+'\]: batch size must match x's B = 1"):
        mixer(x[:1], state)


@each_case
def test_state_size_counts_the_state(case):
    """``state_size`` counts the float entries of the state (``pos`` is bookkeeping); it is exact for
    bounded states and an upper bound for caches whose length varies (``P``)."""
    mixer = build(*case)
    _, state = mixer(inputs())
    counted = sum(t[0].numel() for t in state.values() if t.dtype.is_floating_point)
    cached = any(None in s.sizes for s in mixer.state_shapes(B).values())
    if cached:
        assert counted <= mixer.state_size(T)
    else:
        assert counted == mixer.state_size(T)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@each_case
def test_dtype_rule(case, dtype):
    """``y`` in x's dtype; the recurrent state in ``compute_dtype(x)``; buffers and caches in x's dtype."""
    mixer = build(*case).to(dtype)
    x = inputs().to(dtype)
    y, state = mixer(x)
    y2, state2 = mixer(x[:, :1], state)
    assert y.dtype == y2.dtype == dtype
    assert torch.isfinite(y).all() and torch.isfinite(y2).all()
    for key, t in state2.items():
        if key == "pos":
            assert t.dtype == torch.long
        elif key == "recurrent":
            assert t.dtype == compute_dtype(x), key
            assert torch.isfinite(t).all(), key
        else:
            assert t.dtype == dtype, key


@pytest.mark.parametrize("chunked_case", [c for c in CASES if takes(c[0], "chunk_size")], ids=_case_id)
def test_chunk_size_does_not_change_the_result(chunked_case):
    """T = 37 spans three chunks of 16: the cross-chunk state passing is exercised at layer level.
    (Only mixers that take ``chunk_size``; the others have no chunked form to compare.)"""
    name, kwargs = chunked_case
    x = torch.randn(B, 37, D_MODEL, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    (y16, s16), (y64, s64) = (build(name, {**kwargs, "chunk_size": c})(x) for c in (16, 64))
    torch.testing.assert_close(y16, y64, rtol=1e-10, atol=1e-12)
    assert_states_close(s16, s64, "state")
