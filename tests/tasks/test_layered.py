"""Layered-image format (lossless PNG + manifest, clear errors) and the procedural scene generator."""

import json

import pytest
import torch

from linearlab.layers.compositing import composite, over
from linearlab.tasks.layered import (
    Layer,
    LayeredImage,
    decomposition_batch,
    decomposition_sample,
    generate_scene,
    load_layered,
    quantize,
    save_layered,
)


def _image(seed=0, h=6, w=7):
    g = torch.Generator().manual_seed(seed)
    bg = quantize(torch.rand(4, h, w, generator=g))
    bg[3] = 1
    fg = quantize(torch.rand(4, h, w, generator=g))
    return LayeredImage(
        [Layer(bg, "bg", "a background", "normal", (0, 0, w, h)), Layer(fg, "shade", "", "multiply", None)],
        {"source": "test"},
    )


def test_save_then_load_is_lossless_with_metadata(tmp_path):
    img = _image()
    save_layered(img, tmp_path / "a")
    back = load_layered(tmp_path / "a")
    assert torch.equal(back.stack(), img.stack())
    assert [(l.name, l.caption, l.blend_mode, l.box) for l in back.layers] == [
        ("bg", "a background", "normal", (0, 0, 7, 6)),
        ("shade", "", "multiply", None),
    ]
    assert back.metadata == {"source": "test"}
    assert torch.equal(back.composite(), img.composite())
    # a second save of what was loaded writes identical bytes
    save_layered(back, tmp_path / "b")
    for name in ("layer_000.png", "layer_001.png", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _write(folder, m):
    (folder / "manifest.json").write_text(json.dumps(m))


def test_malformed_folders_are_clear_errors(tmp_path):
    folder = tmp_path / "x"
    save_layered(_image(), folder)
    good = _manifest(folder)
    with pytest.raises(FileNotFoundError, match="folder: .* does not exist"):
        load_layered(tmp_path / "nope")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest: .*manifest.json.*not valid JSON"):
        load_layered(folder)
    for change, message in [
        ({"format": "other"}, "format: expected 'linearlab-layered', got 'other'"),
        ({"width": 0}, "width: expected a positive integer, got 0"),
        ({"layers": []}, "layers: expected a non-empty list"),
        ({"width": 8}, r"layers\[0\]: 'layer_000.png' is 7x6 \(WxH\), the manifest says 8x6"),
    ]:
        _write(folder, {**good, **change})
        with pytest.raises(ValueError, match=message):
            load_layered(folder)
    for field, value, message in [
        (
            "file",
            "../evil.png",
            r"layers\[1\]\.file: expected a file name inside the folder, got '\.\./evil.png'",
        ),
        ("blend_mode", "darken", r"layers\[1\]\.blend_mode: unknown mode 'darken'"),
        ("box", [1, 2], r"layers\[1\]\.box: expected null or 4 integers"),
    ]:
        bad = json.loads(json.dumps(good))
        bad["layers"][1][field] = value
        _write(folder, bad)
        with pytest.raises(ValueError, match=message):
            load_layered(folder)
    bad = json.loads(json.dumps(good))
    bad["layers"][1]["file"] = "gone.png"
    _write(folder, bad)
    with pytest.raises(FileNotFoundError, match=r"layers\[1\]\.file 'gone.png' does not exist"):
        load_layered(folder)
    (folder / "gone.png").write_text("not a png")
    with pytest.raises(ValueError, match=r"layers\[1\]\.file: .*gone.png' is not a readable PNG"):
        load_layered(folder)


def test_layer_and_image_validation():
    with pytest.raises(ValueError, match=r"rgba: expected a tensor \[4, H, W\], got \(3, 2, 2\)"):
        Layer(torch.zeros(3, 2, 2))
    with pytest.raises(ValueError, match="blend_mode: unknown mode 'x'"):
        Layer(torch.zeros(4, 2, 2), blend_mode="x")
    with pytest.raises(ValueError, match=r"layers\[1\]: size \(3, 3\) differs from layer 0's \(2, 2\)"):
        LayeredImage([Layer(torch.zeros(4, 2, 2)), Layer(torch.zeros(4, 3, 3))])


def test_generated_scenes_are_seeded_quantised_and_decompose_exactly(tmp_path):
    a, b = generate_scene(32, 32, seed=3, n_objects=2), generate_scene(32, 32, seed=3, n_objects=2)
    assert torch.equal(a.stack(), b.stack())
    assert not torch.equal(a.stack(), generate_scene(32, 32, seed=4, n_objects=2).stack())
    assert [l.name for l in a.layers] == ["background", "shadow0", "object0", "shadow1", "object1"]
    assert torch.equal(quantize(a.stack()), a.stack())
    save_layered(a, tmp_path / "s")
    assert torch.equal(load_layered(tmp_path / "s").stack(), a.stack())
    s = decomposition_sample(a)
    # the image is exactly the foreground (shadows included) over the background
    torch.testing.assert_close(
        over(s["foreground"], torch.cat([s["background"], torch.ones(1, 32, 32)]))[:3],
        s["image"],
        rtol=0,
        atol=1e-6,
    )
    torch.testing.assert_close(composite(a.stack())[:3], s["image"], rtol=0, atol=0)
    shadow_only = (a.layers[1].rgba[3] > 0.05) & (s["mask"][0] == 0)
    assert shadow_only.any() and torch.all(s["foreground"][3][shadow_only] > 0)  # effects are in the FG
    batch = decomposition_batch(3, 16, seed=1)
    assert batch["image"].shape == (3, 3, 16, 16) and batch["foreground"].shape == (3, 4, 16, 16)
    with pytest.raises(ValueError, match="height: expected an integer >= 8, got 4"):
        generate_scene(4, 16)
