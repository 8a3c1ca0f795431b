"""Layered images: a stack of RGBA layers on disk, and a procedural generator of layered scenes.

**Format.** A layered image is a folder holding one 8-bit RGBA PNG per layer (straight alpha) and a
``manifest.json``::

    {"format": "linearlab-layered", "version": 1, "width": W, "height": H,
     "layers": [{"file": "layer_000.png", "name": "background", "caption": "", "blend_mode": "normal",
                 "box": [x0, y0, x1, y1] or null}, ...],          # back to front
     "composite": "composite.png" or null}

This is the unit of PrismLayers-style multi-layer data (a caption and box per layer) and of LASAGNA's
triplets (composite, background, foreground-with-effects). PNG is lossless, so values on the 8-bit
grid ``k / 255`` round-trip exactly: ``load_layered(save_layered(x))`` equals ``x`` once ``x`` is
quantised (:func:`quantize`). Every file is written atomically; a malformed manifest, a missing or
unsafe layer path, a non-RGBA file or mismatched sizes is a ValueError / FileNotFoundError naming it.

**Generator.** :func:`generate_scene` draws a textured opaque background, a drop shadow (the object's
alpha blurred, offset and darkened) and one or more textured shapes, all as separate layers;
:func:`decomposition_sample` turns a scene into LayerDecomp's input/target triplet.

Example:
    >>> scene = generate_scene(64, 64, seed=0)
    >>> save_layered(scene, "/tmp/scene0"); again = load_layered("/tmp/scene0")
    >>> torch.equal(again.stack(), scene.stack())
    True
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from linearlab.io import _atomic_write, atomic_write_json, check_input_path
from linearlab.layers.compositing import BLEND_MODES, composite
from linearlab.papers import OTHER, declare_paper

FORMAT = "linearlab-layered"
VERSION = 1
MANIFEST = "manifest.json"


@dataclass
class Layer:
    """One straight-alpha RGBA layer ``rgba: [4, H, W]`` in ``[0, 1]`` with optional metadata.

    ``box`` is ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive), e.g. the layer's layout box.
    """

    rgba: torch.Tensor
    name: str = ""
    caption: str = ""
    blend_mode: str = "normal"
    box: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rgba, torch.Tensor) or self.rgba.dim() != 3 or self.rgba.shape[0] != 4:
            shape = (
                tuple(self.rgba.shape) if isinstance(self.rgba, torch.Tensor) else type(self.rgba).__name__
            )
            raise ValueError(f"rgba: expected a tensor [4, H, W], got {shape}")
        if not self.rgba.is_floating_point():
            raise TypeError(f"rgba: expected floats in [0, 1], got {self.rgba.dtype}")
        if self.blend_mode not in BLEND_MODES:
            raise ValueError(f"blend_mode: unknown mode {self.blend_mode!r}; choose from {BLEND_MODES}")
        if self.box is not None:
            if len(self.box) != 4 or not all(isinstance(v, int) for v in self.box):
                raise ValueError(f"box: expected 4 integers (x0, y0, x1, y1), got {self.box!r}")
            self.box = tuple(self.box)  # type: ignore[assignment]


@dataclass
class LayeredImage:
    """Layers back to front (index 0 is the bottom), all of one size."""

    layers: list[Layer]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("layers: a layered image needs at least one layer, got none")
        size = tuple(self.layers[0].rgba.shape[1:])
        for i, layer in enumerate(self.layers):
            if tuple(layer.rgba.shape[1:]) != size:
                raise ValueError(
                    f"layers[{i}]: size {tuple(layer.rgba.shape[1:])} differs from layer 0's {size}"
                )

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``."""
        return tuple(self.layers[0].rgba.shape[1:])  # type: ignore[return-value]

    def stack(self) -> torch.Tensor:
        """All layers as ``[N, 4, H, W]``."""
        return torch.stack([layer.rgba for layer in self.layers])

    def composite(self) -> torch.Tensor:
        """The composite, straight RGBA ``[4, H, W]``, with each layer's blend mode."""
        return composite([layer.rgba for layer in self.layers], [layer.blend_mode for layer in self.layers])


# -- PNG I/O --------------------------------------------------------------------------------------


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Round values in [0, 1] to the 8-bit grid ``k / 255`` (what a PNG stores), as float32."""
    return torch.round(x.clamp(0, 1) * 255).to(torch.float32) / 255


def _to_uint8(rgba: torch.Tensor) -> np.ndarray:
    return torch.round(rgba.detach().clamp(0, 1) * 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_png(path: str | os.PathLike, rgba: torch.Tensor) -> Path:
    """Write ``rgba: [4, H, W]`` (or RGB ``[3, H, W]``) in [0, 1] as an 8-bit PNG, atomically."""
    from PIL import Image

    if rgba.dim() != 3 or rgba.shape[0] not in (3, 4):
        raise ValueError(f"rgba: expected [4, H, W] or [3, H, W], got {tuple(rgba.shape)}")
    arr = _to_uint8(rgba)
    mode = "RGBA" if rgba.shape[0] == 4 else "RGB"
    return _atomic_write(path, lambda p: Image.fromarray(arr, mode=mode).save(p, format="PNG"))


def read_png(path: str | os.PathLike, name: str = "path") -> torch.Tensor:
    """Read an RGBA PNG as float32 ``[4, H, W]`` in [0, 1]; RGB files get alpha 1."""
    from PIL import Image, UnidentifiedImageError

    p = check_input_path(path, "file", name)
    try:
        with Image.open(p) as im:
            if im.mode not in ("RGBA", "RGB"):
                raise ValueError(f"{name}: {str(p)!r} is a {im.mode} image; expected RGBA or RGB")
            arr = np.asarray(im.convert("RGBA"))
    except UnidentifiedImageError:
        raise ValueError(f"{name}: {str(p)!r} is not a readable PNG image") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32) / 255


# -- folder + manifest ----------------------------------------------------------------------------


def save_layered(image: LayeredImage, folder: str | os.PathLike, with_composite: bool = True) -> Path:
    """Write ``image`` to ``folder`` (created if needed): ``layer_XXX.png`` per layer, ``composite.png``
    (if ``with_composite``) and ``manifest.json`` last, so a folder with a manifest is complete."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    H, W = image.size
    entries = []
    for i, layer in enumerate(image.layers):
        fname = f"layer_{i:03d}.png"
        write_png(folder / fname, layer.rgba)
        entries.append({
            "file": fname,
            "name": layer.name,
            "caption": layer.caption,
            "blend_mode": layer.blend_mode,
            "box": list(layer.box) if layer.box is not None else None,
        })  # fmt: skip
    comp = None
    if with_composite:
        comp = "composite.png"
        write_png(folder / comp, image.composite())
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "width": W,
        "height": H,
        "layers": entries,
        "composite": comp,
        "metadata": image.metadata,
    }
    atomic_write_json(folder / MANIFEST, manifest)
    return folder


def _bad(path: Path, message: str) -> ValueError:
    return ValueError(f"manifest: {str(path)!r}: {message}")


def _safe_name(value: Any, path: Path, where: str) -> str:
    # layer files live in the folder itself: no directories, no "..", no absolute paths
    if not isinstance(value, str) or not value or os.sep in value or "/" in value or value in (".", ".."):
        raise _bad(path, f"{where}: expected a file name inside the folder, got {value!r}")
    return value


def load_layered(folder: str | os.PathLike) -> LayeredImage:
    """Read a folder written by :func:`save_layered` (or by hand in the same format).

    Raises FileNotFoundError for a missing folder, manifest or layer file, and ValueError (naming the
    file and the field) for malformed JSON, a wrong format tag, a bad field, an unknown blend mode or a
    layer whose size differs from the manifest's.
    """
    folder = check_input_path(folder, "dir", "folder")
    mpath = folder / MANIFEST
    if not mpath.is_file():
        raise FileNotFoundError(f"folder: {str(folder)!r} has no {MANIFEST}")
    try:
        m = json.loads(mpath.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _bad(mpath, f"not valid JSON ({err})") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        got = m.get("format") if isinstance(m, dict) else type(m).__name__
        raise _bad(mpath, f"format: expected {FORMAT!r}, got {got!r}")
    if m.get("version") != VERSION:
        raise _bad(mpath, f"version: expected {VERSION}, got {m.get('version')!r}")
    for key in ("width", "height"):
        if not isinstance(m.get(key), int) or m[key] < 1:
            raise _bad(mpath, f"{key}: expected a positive integer, got {m.get(key)!r}")
    entries = m.get("layers")
    if not isinstance(entries, list) or not entries:
        raise _bad(mpath, f"layers: expected a non-empty list, got {entries!r}")
    layers = []
    for i, e in enumerate(entries):
        where = f"layers[{i}]"
        if not isinstance(e, dict):
            raise _bad(mpath, f"{where}: expected an object, got {e!r}")
        fname = _safe_name(e.get("file"), mpath, f"{where}.file")
        fpath = folder / fname
        if not fpath.is_file():
            raise FileNotFoundError(
                f"manifest: {str(mpath)!r}: {where}.file {fname!r} does not exist in the folder"
            )
        rgba = read_png(fpath, f"{where}.file")
        if tuple(rgba.shape[1:]) != (m["height"], m["width"]):
            raise _bad(
                mpath,
                f"{where}: {fname!r} is {rgba.shape[2]}x{rgba.shape[1]} (WxH), the manifest says "
                f"{m['width']}x{m['height']}",
            )
        mode = e.get("blend_mode", "normal")
        if mode not in BLEND_MODES:
            raise _bad(mpath, f"{where}.blend_mode: unknown mode {mode!r}; choose from {BLEND_MODES}")
        box = e.get("box")
        if box is not None and (
            not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int) for v in box)
        ):
            raise _bad(mpath, f"{where}.box: expected null or 4 integers [x0, y0, x1, y1], got {box!r}")
        for key in ("name", "caption"):
            if not isinstance(e.get(key, ""), str):
                raise _bad(mpath, f"{where}.{key}: expected a string, got {e.get(key)!r}")
        layers.append(
            Layer(
                rgba, e.get("name", ""), e.get("caption", ""), mode, tuple(box) if box is not None else None
            )
        )
    meta = m.get("metadata") or {}
    if not isinstance(meta, dict):
        raise _bad(mpath, f"metadata: expected an object, got {meta!r}")
    return LayeredImage(layers, meta)


# -- procedural scenes ----------------------------------------------------------------------------


def _grid(H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.meshgrid(
        torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij"
    )


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blur ``x: [C, H, W]`` with a separable Gaussian of std ``sigma`` pixels (zero outside)."""
    if sigma <= 0:
        return x
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    C = x.shape[0]
    y = F.conv2d(x[None], k.view(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, r), groups=C)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(r, 0), groups=C)
    return y[0]


def _texture(H: int, W: int, g: torch.Generator) -> torch.Tensor:
    """An RGB texture ``[3, H, W]``: a two-colour gradient plus stripes or checks."""
    yy, xx = _grid(H, W)
    c0, c1 = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
    angle = float(torch.rand((), generator=g)) * math.pi
    t = (math.cos(angle) * xx / W + math.sin(angle) * yy / H).clamp(0, 1)
    base = c0 * (1 - t) + c1 * t
    kind = int(torch.randint(0, 3, (), generator=g))
    period = 4 + float(torch.rand((), generator=g)) * 8
    if kind == 0:
        pattern = 0.5 + 0.5 * torch.sin(2 * math.pi * (xx * math.cos(angle) - yy * math.sin(angle)) / period)
    elif kind == 1:
        pattern = ((torch.floor(xx / period) + torch.floor(yy / period)) % 2).float()
    else:
        pattern = torch.zeros(H, W)
    return (base * (0.8 + 0.2 * pattern)).clamp(0, 1)


def _shape_alpha(H: int, W: int, g: torch.Generator) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Anti-aliased alpha ``[H, W]`` of a random ellipse, rectangle or triangle, and its box."""
    yy, xx = _grid(H, W)
    cy = H * (0.3 + 0.4 * float(torch.rand((), generator=g)))
    cx = W * (0.3 + 0.4 * float(torch.rand((), generator=g)))
    ry = H * (0.12 + 0.15 * float(torch.rand((), generator=g)))
    rx = W * (0.12 + 0.15 * float(torch.rand((), generator=g)))
    kind = int(torch.randint(0, 3, (), generator=g))
    if kind == 0:  # ellipse: signed distance approximated in pixels along the radius
        d = (torch.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2) - 1) * min(ry, rx)
    elif kind == 1:  # rectangle
        d = torch.maximum((yy - cy).abs() - ry, (xx - cx).abs() - rx)
    else:  # triangle pointing up: inside all three half-planes
        d1 = yy - (cy + ry)
        slope = 2 * ry / rx
        d2 = ((cy - ry) - yy + slope * (xx - cx)) / math.sqrt(1 + slope**2)
        d3 = ((cy - ry) - yy - slope * (xx - cx)) / math.sqrt(1 + slope**2)
        d = torch.maximum(d1, torch.maximum(d2, d3))
    alpha = (0.5 - d).clamp(0, 1)  # one-pixel anti-aliased edge
    box = (
        max(0, int(cx - rx) - 1),
        max(0, int(cy - ry) - 1),
        min(W, int(cx + rx) + 2),
        min(H, int(cy + ry) + 2),
    )
    return alpha, box


def generate_scene(
    height: int = 64,
    width: int = 64,
    seed: int = 0,
    n_objects: int = 1,
    shadow: bool = True,
    shadow_blur: float = 2.0,
    shadow_strength: float = 0.6,
) -> LayeredImage:
    """A random layered scene: ``background``, then for each object a ``shadow`` (blurred, offset,
    darkened copy of its alpha, normal blend, black) and the ``object`` (textured shape).

    Deterministic in ``seed``; every value is quantised to 8 bits, so the scene saves losslessly.
    """
    for name, v in (("height", height), ("width", width)):
        if not isinstance(v, int) or v < 8:
            raise ValueError(f"{name}: expected an integer >= 8, got {v!r}")
    if n_objects < 1:
        raise ValueError(f"n_objects: expected >= 1, got {n_objects}")
    if not 0 <= shadow_strength <= 1:
        raise ValueError(f"shadow_strength: expected a value in [0, 1], got {shadow_strength}")
    g = torch.Generator().manual_seed(seed)
    bg = torch.cat([_texture(height, width, g), torch.ones(1, height, width)])
    layers = [Layer(quantize(bg), "background", "textured background", "normal", (0, 0, width, height))]
    for k in range(n_objects):
        alpha, box = _shape_alpha(height, width, g)
        colour = _texture(height, width, g)
        if shadow:
            dy = int(torch.randint(1, max(2, height // 12) + 1, (), generator=g))
            dx = int(torch.randint(-max(1, width // 12), max(2, width // 12) + 1, (), generator=g))
            shifted = torch.roll(alpha, (dy, dx), (0, 1))
            # roll wraps around: clear what wrapped so the shadow only falls on the near side
            if dy > 0:
                shifted[:dy] = 0
            if dx > 0:
                shifted[:, :dx] = 0
            elif dx < 0:
                shifted[:, dx:] = 0
            s_alpha = shadow_strength * _gaussian_blur(shifted[None], shadow_blur)[0]
            s = torch.cat([torch.zeros(3, height, width), s_alpha[None]])
            layers.append(Layer(quantize(s), f"shadow{k}", "drop shadow", "normal", None))
        layers.append(
            Layer(quantize(torch.cat([colour, alpha[None]])), f"object{k}", "textured shape", "normal", box)
        )
    return LayeredImage(layers, {"seed": seed, "generator": "linearlab.tasks.layered.generate_scene"})


def decomposition_sample(scene: LayeredImage, mask_threshold: float = 0.5) -> dict[str, torch.Tensor]:
    """LayerDecomp's triplet from a scene whose layer 0 is an opaque background.

    Returns ``image [3, H, W]`` (the composite), ``mask [1, H, W]`` (objects' alpha > threshold, no
    shadows: the user's object mask), ``background [3, H, W]`` and ``foreground [4, H, W]`` (straight
    RGBA of every layer above the background, shadows included: the "visual effects").
    """
    stack = scene.stack()
    if not torch.all(stack[0, 3] == 1):
        raise ValueError("scene: layer 0 must be an opaque background (alpha 1 everywhere)")
    modes = [layer.blend_mode for layer in scene.layers]
    if any(m != "normal" for m in modes[1:]):
        raise ValueError(f"scene: decomposition needs normal blending above the background, got {modes}")
    fg = composite(stack[1:]) if len(stack) > 1 else torch.zeros_like(stack[0])
    image = composite(stack)[:3]
    objects = [layer.rgba[3] for layer in scene.layers[1:] if layer.name.startswith("object")]
    mask = (
        (torch.stack(objects).amax(0) > mask_threshold).float()[None]
        if objects
        else torch.zeros_like(image[:1])
    )
    return {"image": image, "mask": mask, "background": stack[0, :3], "foreground": fg}


def decomposition_batch(
    n: int, size: int, seed: int, n_objects: Sequence[int] = (1, 2)
) -> dict[str, torch.Tensor]:
    """``n`` samples of :func:`decomposition_sample` stacked on dim 0 (seeds ``seed * 100003 + i``)."""
    out: dict[str, list[torch.Tensor]] = {}
    for i in range(n):
        scene = generate_scene(size, size, seed=seed * 100_003 + i, n_objects=n_objects[i % len(n_objects)])
        for k, v in decomposition_sample(scene).items():
            out.setdefault(k, []).append(v)
    return {k: torch.stack(v) for k, v in out.items()}


declare_paper(
    arxiv="2505.22523",
    short="PrismLayers",
    title="PrismLayers: Open Data for High-Quality Multi-Layer Transparent Image Generative Models",
    authors="Chen et al.",
    area=OTHER,
    status="partial",
    objects=(
        "linearlab.tasks.layered.LayeredImage",
        "linearlab.tasks.layered.save_layered",
        "linearlab.tasks.layered.load_layered",
        "linearlab.tasks.layered.generate_scene",
        "linearlab.tasks.layered_metrics.layer_sequence_distance",
    ),
    usage=(
        "import tempfile; from linearlab.tasks.layered import generate_scene, load_layered, save_layered\n"
        "scene = load_layered(save_layered(generate_scene(32, 32, seed=0), tempfile.mkdtemp()))  # PNGs + JSON"
    ),
    claim=(
        "Releases multi-layer transparent image datasets (PrismLayers 200K, PrismLayersPro 20K) with accurate "
        "alpha mattes, and a training-free synthesis pipeline for them."
    ),
    note=(
        "The datasets need a download and the synthesis pipeline a diffusion model: implemented are a "
        "multi-layer RGBA format (PNG + manifest with captions and boxes), procedural layered scenes and "
        "weight-free layer / alpha metrics."
    ),
)
