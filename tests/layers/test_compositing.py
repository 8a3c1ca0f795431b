"""Compositing: the over operator's algebra, blend-mode bounds, linearity in colour, edits and errors."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from linearlab.layers.compositing import (
    BLEND_MODES,
    blend_colour,
    blend_over,
    composite,
    composite_weights,
    duplicate,
    over,
    over_premultiplied,
    premultiply,
    recolour,
    recomposition_loss,
    remove,
    scale,
    translate,
    unpremultiply,
)


def _rgba(seed, n=None, h=5, w=6, opaque=False):
    g = torch.Generator().manual_seed(seed)
    shape = (4, h, w) if n is None else (n, 4, h, w)
    x = torch.rand(shape, generator=g, dtype=torch.float64)
    if opaque:
        x[..., 3, :, :] = 1
    return x


@given(st.integers(0, 10_000))
def test_over_is_associative_in_both_alpha_conventions(seed):
    a, b, c = _rgba(seed), _rgba(seed + 1), _rgba(seed + 2)
    left, right = over(over(a, b), c), over(a, over(b, c))
    torch.testing.assert_close(left, right, rtol=0, atol=1e-12)
    pa, pb, pc = premultiply(a), premultiply(b), premultiply(c)
    torch.testing.assert_close(
        over_premultiplied(over_premultiplied(pa, pb), pc),
        over_premultiplied(pa, over_premultiplied(pb, pc)),
        rtol=0,
        atol=1e-14,
    )
    torch.testing.assert_close(premultiply(over(a, b)), over_premultiplied(pa, pb), rtol=0, atol=1e-12)


@pytest.mark.parametrize("mode", BLEND_MODES)
def test_a_transparent_layer_is_the_identity_for_every_mode(mode):
    x = _rgba(1)
    clear = _rgba(2)
    clear[3] = 0
    torch.testing.assert_close(blend_over(clear, x, mode), x, rtol=0, atol=1e-12)
    assert torch.equal(composite([x, clear], ["normal", mode]), composite([x]))


def test_composite_equals_the_closed_form_and_is_linear_in_colour_for_fixed_alpha():
    layers = _rgba(3, n=4)
    layers[0, 3] = 1  # opaque bottom: the composite's premultiplied colour is its colour
    w = composite_weights(layers[:, 3])  # [N, H, W]
    closed = (w[:, None] * layers[:, :3]).sum(0)
    img = composite(layers)
    torch.testing.assert_close(img[:3], closed, rtol=0, atol=1e-12)
    torch.testing.assert_close(w.sum(0), torch.ones_like(w[0]), rtol=0, atol=1e-12)
    other = _rgba(4, n=4)
    mix = layers.clone()
    mix[:, :3] = 0.3 * layers[:, :3] + 0.7 * other[:, :3]
    other_img = layers.clone()
    other_img[:, :3] = other[:, :3]
    torch.testing.assert_close(
        composite(mix)[:3], 0.3 * img[:3] + 0.7 * composite(other_img)[:3], rtol=0, atol=1e-12
    )


def test_recomposing_ground_truth_layers_is_exact_and_the_loss_is_zero():
    bg, fg1, fg2 = _rgba(5, opaque=True), _rgba(6), _rgba(7)
    img = over(fg2, over(fg1, bg))
    assert torch.equal(composite([bg, fg1, fg2]), img)
    fg = composite([fg1, fg2])  # both foreground layers merged into one RGBA layer
    assert float(recomposition_loss(fg[None], bg[None, :3], img[None, :3])) < 1e-12
    assert float(recomposition_loss(fg[None], bg[None, :3], 1 - img[None, :3])) > 0.01


@given(st.integers(0, 10_000))
def test_blend_bounds_multiply_darkens_screen_lightens(seed):
    b, s = _rgba(seed)[:3], _rgba(seed + 1)[:3]
    assert torch.all(blend_colour("multiply", b, s) <= torch.minimum(b, s) + 1e-15)
    assert torch.all(blend_colour("screen", b, s) >= torch.maximum(b, s) - 1e-15)
    assert torch.all(blend_colour("add", b, s) >= torch.maximum(b, s) - 1e-15)
    ov = blend_colour("overlay", b, s)
    assert torch.all((ov >= 0) & (ov <= 1))
    # overlay is multiply (x2) in the backdrop's darks, screen (x2) in its lights
    dark = b <= 0.5
    torch.testing.assert_close(ov[dark], 2 * b[dark] * s[dark])
    # with an opaque flat and a shadow layer, multiply never brightens the flat
    flat, shadow = _rgba(seed + 2, opaque=True), _rgba(seed + 3)
    assert torch.all(blend_over(shadow, flat, "multiply")[:3] <= flat[:3] + 1e-12)
    assert torch.all(blend_over(shadow, flat, "screen")[:3] >= flat[:3] - 1e-12)


def test_premultiplied_round_trip_and_undefined_colour_at_zero_alpha():
    x = _rgba(8)
    x[3, 0, 0] = 0
    back = unpremultiply(premultiply(x))
    keep = x[3] > 0
    torch.testing.assert_close(back[:3][:, keep], x[:3][:, keep], rtol=0, atol=1e-12)
    assert torch.all(back[:3, 0, 0] == 0)


def test_edits_translate_scale_recolour_duplicate_remove():
    x = _rgba(9, h=8, w=8)
    assert torch.equal(translate(x, 0, 0), x)
    moved = translate(x, 2, -3)
    assert torch.equal(moved[:, 2:, :5], x[:, :6, 3:])
    assert torch.all(moved[3, :2] == 0) and torch.all(moved[3, :, 5:] == 0)
    assert torch.equal(translate(moved, -2, 3)[:, :6, 3:], x[:, :6, 3:])  # the kept part comes back
    torch.testing.assert_close(scale(x, 1.0, center=(3.5, 3.5)), x, rtol=0, atol=1e-12)
    big = scale(x, 2.0, center=(0.0, 0.0))
    torch.testing.assert_close(premultiply(big)[:, 2, 4], premultiply(x)[:, 1, 2], rtol=0, atol=1e-12)
    eye = recolour(x, matrix=torch.eye(3))
    assert torch.equal(eye, x)
    swapped = recolour(x, matrix=torch.tensor([[0.0, 1, 0], [1, 0, 0], [0, 0, 1]]))
    assert torch.equal(swapped[0], x[1]) and torch.equal(swapped[3], x[3])
    assert torch.all(recolour(x, tint=(1.0, 0.0, 0.0))[0] == 1)
    bg = _rgba(10, h=8, w=8, opaque=True)
    stack = duplicate([bg, x], 1, dy=1, dx=1)
    assert len(stack) == 3 and torch.equal(stack[2], translate(x, 1, 1))
    assert torch.equal(composite(remove(stack, 2)), composite([bg, x]))
    # moving a layer and recompositing changes the image only where the layer was or now is
    obj = x.clone()
    obj[3] = 0
    obj[3, 2:4, 2:4] = 0.8
    before, after = composite([bg, obj]), composite([bg, translate(obj, 0, 3)])
    changed = (before != after).any(0)
    touched = (obj[3] > 0) | (translate(obj, 0, 3)[3] > 0)
    assert changed.any() and torch.all(touched[changed])


def test_bad_inputs_name_the_argument_and_the_value():
    x = _rgba(11)
    with pytest.raises(ValueError, match=r"mode: unknown blend mode 'darken'"):
        blend_over(x, x, "darken")
    with pytest.raises(
        ValueError, match=r"top: expected an RGBA tensor \[\.\.\., 4, H, W\], got shape \(3, 5, 6\)"
    ):
        over(x[:3], x)
    with pytest.raises(TypeError, match="rgba: expected a floating-point tensor"):
        premultiply((x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"layers\[1\]: size \(4, 4\) differs from layer 0's \(5, 6\)"):
        composite([x, _rgba(1, h=4, w=4)])
    with pytest.raises(ValueError, match=r"blend_modes: expected one mode per layer \(2\), got 1"):
        composite([x, x], ["normal"])
    with pytest.raises(ValueError, match="layers: expected at least one layer"):
        composite([])
    with pytest.raises(ValueError, match="factor: expected a positive scale, got 0"):
        scale(x, 0)
    with pytest.raises(IndexError, match="index: 5 out of range for 1 layers"):
        remove([x], 5)
    with pytest.raises(ValueError, match="give exactly one of matrix"):
        recolour(x)
