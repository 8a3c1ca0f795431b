"""Alpha compositing of RGBA layers: the "over" operator, blend modes and edits by recompositing.

An RGBA layer is a float tensor ``[..., 4, H, W]`` with values in ``[0, 1]``: channels 0-2 are the
colour, channel 3 the alpha. Layers are *straight* (colour not multiplied by alpha) unless a function
says ``premultiplied``. A stack of layers is ordered back to front (index 0 is the bottom).

For a fixed alpha the composite is linear in the colours: with normal blending,
``I = sum_k c_k a_k prod_{j>k} (1 - a_j)`` (:func:`composite_weights` gives the weights). That is why
layered-image papers (LayerDecomp, LASAGNA, PrismLayers, the workflow-aware decomposition) can edit
an image by moving, scaling or recolouring one layer and recompositing, with no model re-run.

Blend modes follow the W3C Compositing and Blending Level 1 formula: the source colour is first mixed
with the backdrop, ``Cs' = (1 - ab) Cs + ab B(Cb, Cs)``, and the result is composited "source over".
``B`` is ``normal: Cs``, ``multiply: Cb Cs``, ``screen: Cb + Cs - Cb Cs``, ``add: min(Cb + Cs, 1)``
(linear dodge, as used for highlights) and ``overlay: HardLight(Cs, Cb)``.

Example:
    >>> bg = torch.rand(4, 8, 8); bg[3] = 1
    >>> fg = torch.rand(4, 8, 8)
    >>> img = composite([bg, fg])            # [4, 8, 8], alpha 1 everywhere
    >>> shade = composite([bg, fg], blend_modes=["normal", "multiply"])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from linearlab.papers import OTHER, declare_paper

BLEND_MODES = ("normal", "multiply", "screen", "add", "overlay")


def _check_rgba(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor [..., 4, H, W], got {type(x).__name__}")
    if x.dim() < 3 or x.shape[-3] != 4:
        raise ValueError(f"{name}: expected an RGBA tensor [..., 4, H, W], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor with values in [0, 1], got {x.dtype}")


def _check_mode(mode: str, name: str = "mode") -> None:
    if mode not in BLEND_MODES:
        raise ValueError(f"{name}: unknown blend mode {mode!r}; choose from {BLEND_MODES}")


def premultiply(rgba: torch.Tensor) -> torch.Tensor:
    """Straight -> premultiplied alpha: ``[c * a, a]``. ``rgba: [..., 4, H, W]``."""
    _check_rgba(rgba, "rgba")
    return torch.cat([rgba[..., :3, :, :] * rgba[..., 3:, :, :], rgba[..., 3:, :, :]], dim=-3)


def unpremultiply(rgba: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
    """Premultiplied -> straight alpha: ``[c / a, a]``; colour 0 where ``a <= eps`` (it is undefined).

    ``rgba: [..., 4, H, W]``. ``unpremultiply(premultiply(x)) == x`` up to rounding wherever alpha > 0.
    """
    _check_rgba(rgba, "rgba")
    a = rgba[..., 3:, :, :]
    keep = a > eps
    colour = torch.where(keep, rgba[..., :3, :, :] / torch.where(keep, a, torch.ones_like(a)), 0.0)
    return torch.cat([colour.clamp(0, 1), a], dim=-3)


def blend_colour(mode: str, backdrop: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """The separable blend function ``B(Cb, Cs)`` of ``mode`` on straight colours (any equal shapes)."""
    _check_mode(mode)
    if mode == "normal":
        return source
    if mode == "multiply":
        return backdrop * source
    if mode == "screen":
        return backdrop + source - backdrop * source
    if mode == "add":
        return (backdrop + source).clamp(max=1.0)
    # overlay = hard light with the layers swapped: multiply in the darks of the backdrop, screen in its lights
    return torch.where(backdrop <= 0.5, 2 * backdrop * source, 1 - 2 * (1 - backdrop) * (1 - source))


def over_premultiplied(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Porter-Duff "over" on premultiplied RGBA: ``top + (1 - a_top) * bottom``. Associative exactly
    (up to rounding); ``[..., 4, H, W]`` each (broadcastable)."""
    _check_rgba(top, "top")
    _check_rgba(bottom, "bottom")
    return top + (1 - top[..., 3:, :, :]) * bottom


def blend_over(top: torch.Tensor, bottom: torch.Tensor, mode: str = "normal") -> torch.Tensor:
    """Composite straight RGBA ``top`` onto straight RGBA ``bottom`` with blend ``mode``.

    Returns straight RGBA ``[..., 4, H, W]``. With ``mode="normal"`` this is the "over" operator.
    """
    _check_rgba(top, "top")
    _check_rgba(bottom, "bottom")
    _check_mode(mode)
    cs, a_s = top[..., :3, :, :], top[..., 3:, :, :]
    cb, a_b = bottom[..., :3, :, :], bottom[..., 3:, :, :]
    mixed = (1 - a_b) * cs + a_b * blend_colour(mode, cb, cs)
    colour_p = a_s * mixed + (1 - a_s) * a_b * cb
    a_o = a_s + a_b * (1 - a_s)
    return unpremultiply(torch.cat([colour_p, a_o], dim=-3))


def over(top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """Straight-alpha "over": ``top`` in front of ``bottom``; ``[..., 4, H, W]`` -> same."""
    return blend_over(top, bottom, "normal")


def _as_stack(layers: Sequence[torch.Tensor] | torch.Tensor, name: str = "layers") -> list[torch.Tensor]:
    if isinstance(layers, torch.Tensor):
        if layers.dim() < 4:
            raise ValueError(f"{name}: expected a stack [N, ..., 4, H, W], got shape {tuple(layers.shape)}")
        stack = list(layers.unbind(0))
    else:
        stack = list(layers)
    if not stack:
        raise ValueError(f"{name}: expected at least one layer, got none")
    for i, layer in enumerate(stack):
        _check_rgba(layer, f"{name}[{i}]")
        if layer.shape[-2:] != stack[0].shape[-2:]:
            raise ValueError(
                f"{name}[{i}]: size {tuple(layer.shape[-2:])} differs from layer 0's {tuple(stack[0].shape[-2:])}"
            )
    return stack


def composite(
    layers: Sequence[torch.Tensor] | torch.Tensor,
    blend_modes: Sequence[str] | None = None,
    background: torch.Tensor | None = None,
) -> torch.Tensor:
    """Composite ``layers`` (straight RGBA, back to front) into one straight RGBA image ``[..., 4, H, W]``.

    Args:
        layers: N tensors ``[..., 4, H, W]`` or one stack ``[N, ..., 4, H, W]``; index 0 is the bottom.
        blend_modes: one mode per layer (default all ``"normal"``); the bottom layer's mode only
            matters when ``background`` is given.
        background: optional straight RGBA ``[..., 4, H, W]`` under everything (default transparent).
    """
    stack = _as_stack(layers)
    modes = list(blend_modes) if blend_modes is not None else ["normal"] * len(stack)
    if len(modes) != len(stack):
        raise ValueError(f"blend_modes: expected one mode per layer ({len(stack)}), got {len(modes)}")
    for i, m in enumerate(modes):
        _check_mode(m, f"blend_modes[{i}]")
    out = torch.zeros_like(stack[0]) if background is None else background
    if background is not None:
        _check_rgba(background, "background")
    for layer, mode in zip(stack, modes):
        out = blend_over(layer, out, mode)
    return out


def composite_weights(alphas: torch.Tensor) -> torch.Tensor:
    """Weights ``w_k = a_k prod_{j>k} (1 - a_j)`` of each layer's colour in the normal composite.

    ``alphas: [N, ..., H, W]`` (back to front) -> ``[N, ..., H, W]``; for fixed alphas the composite
    premultiplied colour is ``sum_k w_k c_k``, i.e. linear in the colours.
    """
    if alphas.dim() < 3:
        raise ValueError(f"alphas: expected [N, ..., H, W], got shape {tuple(alphas.shape)}")
    # transmittance above layer k: product of (1 - a_j) over the layers in front of it
    above = torch.flip(torch.cumprod(torch.flip(1 - alphas, [0]), 0), [0])
    above = torch.cat([above[1:], torch.ones_like(above[:1])], 0)
    return alphas * above


def flatten_rgb(rgba: torch.Tensor, background: Sequence[float] = (1.0, 1.0, 1.0)) -> torch.Tensor:
    """Straight RGBA ``[..., 4, H, W]`` onto an opaque colour -> RGB ``[..., 3, H, W]``."""
    _check_rgba(rgba, "rgba")
    bg = torch.tensor(background, dtype=rgba.dtype, device=rgba.device).view(3, 1, 1)
    a = rgba[..., 3:, :, :]
    return rgba[..., :3, :, :] * a + bg * (1 - a)


# -- edits by recompositing (LASAGNA): each maps one straight RGBA layer to another -------------------


def translate(layer: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Shift ``layer [..., 4, H, W]`` by whole pixels (down ``dy``, right ``dx``); uncovered pixels are transparent."""
    _check_rgba(layer, "layer")
    if not (isinstance(dy, int) and isinstance(dx, int)):
        raise TypeError(f"dy, dx: expected whole pixels (int), got {dy!r}, {dx!r}")
    H, W = layer.shape[-2:]
    out = torch.zeros_like(layer)
    ys, yd = (
        (slice(0, max(H - dy, 0)), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, max(H + dy, 0)))
    )
    xs, xd = (
        (slice(0, max(W - dx, 0)), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, max(W + dx, 0)))
    )
    out[..., yd, xd] = layer[..., ys, xs]
    return out


def scale(layer: torch.Tensor, factor: float, center: tuple[float, float] | None = None) -> torch.Tensor:
    """Scale ``layer [..., 4, H, W]`` by ``factor`` about ``center`` (pixel ``(y, x)``, default the
    alpha-weighted centroid), bilinear on premultiplied colour so edges do not pick up dark fringes."""
    _check_rgba(layer, "layer")
    if not factor > 0:
        raise ValueError(f"factor: expected a positive scale, got {factor}")
    H, W = layer.shape[-2:]
    lead = layer.shape[:-3]
    flat = premultiply(layer).reshape(-1, 4, H, W)
    if center is None:
        a = layer[..., 3, :, :].reshape(-1, H, W).sum(0)
        total = a.sum()
        yy, xx = torch.meshgrid(
            torch.arange(H, dtype=layer.dtype), torch.arange(W, dtype=layer.dtype), indexing="ij"
        )
        center = (
            (float((a * yy).sum() / total), float((a * xx).sum() / total))
            if total > 0
            else ((H - 1) / 2, (W - 1) / 2)
        )
    cy, cx = center
    yy, xx = torch.meshgrid(
        torch.arange(H, dtype=layer.dtype), torch.arange(W, dtype=layer.dtype), indexing="ij"
    )
    # output pixel p samples the input at c + (p - c) / factor (align_corners=True pixel grid)
    sy = cy + (yy - cy) / factor
    sx = cx + (xx - cx) / factor
    grid = torch.stack([2 * sx / max(W - 1, 1) - 1, 2 * sy / max(H - 1, 1) - 1], dim=-1)
    grid = grid.expand(flat.shape[0], H, W, 2)
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return unpremultiply(out.reshape(*lead, 4, H, W))


def recolour(
    layer: torch.Tensor, matrix: torch.Tensor | None = None, tint: Sequence[float] | None = None
) -> torch.Tensor:
    """Recolour ``layer [..., 4, H, W]``: ``c <- clamp(M c)`` with a 3x3 ``matrix``, or ``c <- tint``
    where the layer is visible (a flat recolour). Alpha is unchanged."""
    _check_rgba(layer, "layer")
    if (matrix is None) == (tint is None):
        raise ValueError("recolour: give exactly one of matrix (3x3) or tint (3 values)")
    c = layer[..., :3, :, :]
    if matrix is not None:
        if tuple(matrix.shape) != (3, 3):
            raise ValueError(f"matrix: expected shape (3, 3), got {tuple(matrix.shape)}")
        new = torch.einsum("ij,...jhw->...ihw", matrix.to(c.dtype), c).clamp(0, 1)
    else:
        if len(tint) != 3:
            raise ValueError(f"tint: expected 3 values (r, g, b), got {list(tint)}")
        new = torch.tensor(list(tint), dtype=c.dtype).view(3, 1, 1).expand_as(c).clone()
    return torch.cat([new, layer[..., 3:, :, :]], dim=-3)


def duplicate(layers: Sequence[torch.Tensor], index: int, dy: int = 0, dx: int = 0) -> list[torch.Tensor]:
    """A copy of layer ``index`` shifted by ``(dy, dx)``, inserted just above the original."""
    stack = _as_stack(layers)
    if not -len(stack) <= index < len(stack):
        raise IndexError(f"index: {index} out of range for {len(stack)} layers")
    index %= len(stack)
    return stack[: index + 1] + [translate(stack[index], dy, dx)] + stack[index + 1 :]


def remove(layers: Sequence[torch.Tensor], index: int) -> list[torch.Tensor]:
    """The stack without layer ``index``."""
    stack = _as_stack(layers)
    if not -len(stack) <= index < len(stack):
        raise IndexError(f"index: {index} out of range for {len(stack)} layers")
    index %= len(stack)
    return stack[:index] + stack[index + 1 :]


def recomposition_loss(
    fg: torch.Tensor, bg: torch.Tensor, image: torch.Tensor, reduction: str = "mean"
) -> torch.Tensor:
    """LayerDecomp's consistency loss ``|over(fg, bg) - image|_1``.

    ``fg: [B, 4, H, W]`` straight RGBA; ``bg: [B, 3, H, W]`` opaque RGB; ``image: [B, 3, H, W]``.
    """
    _check_rgba(fg, "fg")
    if bg.shape[-3] != 3 or image.shape[-3] != 3:
        raise ValueError(
            f"bg, image: expected RGB [..., 3, H, W], got {tuple(bg.shape)}, {tuple(image.shape)}"
        )
    a = fg[..., 3:, :, :]
    recon = fg[..., :3, :, :] * a + bg * (1 - a)
    diff = (recon - image).abs()
    if reduction == "mean":
        return diff.mean()
    if reduction == "none":
        return diff
    raise ValueError(f"reduction: expected 'mean' or 'none', got {reduction!r}")


declare_paper(
    arxiv="2603.14925",
    short="Workflow-aware layer decomposition",
    title="Workflow-Aware Structured Layer Decomposition for Illustration Production",
    authors="Zhang, Li, Sawada, Xie",
    area=OTHER,
    status="partial",
    objects=("linearlab.layers.compositing.composite", "linearlab.layers.compositing.blend_colour"),
    usage=(
        "from linearlab.layers.compositing import composite\n"
        "img = composite(torch.rand(4, 4, 8, 8), blend_modes=['normal', 'normal', 'multiply', 'screen'])  # flat, line, shadow, highlight"
    ),
    claim=(
        "Decomposes anime illustrations into production layers (line art, flat colour, shadow, highlight) "
        "with layer-semantic embeddings and layer-wise losses, trained on synthetic workflow data."
    ),
    note=(
        "Only the production-layer compositing is implemented (normal, multiply, screen, add, overlay blend "
        "modes with property tests); the diffusion-based decomposer is out of CPU scope. The paper's exact "
        "blend mode per layer type was not checked against its code."
    ),
)

declare_paper(
    arxiv="2601.15507",
    short="LASAGNA",
    title="Controllable Layered Image Generation for Real-World Editing",
    authors="Yang et al.",
    area=OTHER,
    status="partial",
    objects=(
        "linearlab.layers.compositing.translate",
        "linearlab.layers.compositing.scale",
        "linearlab.layers.compositing.recolour",
        "linearlab.layers.compositing.duplicate",
        "linearlab.layers.compositing.remove",
        "linearlab.layers.compositing.over",
    ),
    recipes=("layer-decompose",),
    usage=(
        "from linearlab.layers.compositing import over, translate\n"
        "edited = over(translate(torch.rand(4, 8, 8), 0, 2), torch.ones(4, 8, 8))  # move the FG, recomposite"
    ),
    claim=(
        "Generates the composite, the background and the foreground-with-effects RGBA jointly, so edits "
        "(move, scale, recolour, duplicate) are pure alpha compositing with no model re-run."
    ),
    figures=("layer-decompose:*edit*",),
    note=(
        "The generator (a diffusion model) and LASAGNA-48K are out of scope: implemented are the edits by "
        "recompositing, and the layer-decompose recipe measures an edit PSNR of predicted layers."
    ),
)
