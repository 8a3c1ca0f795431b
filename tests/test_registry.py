"""The one Registry helper behind every by-name lookup."""

import pytest

from linearlab.registry import Registry, UnknownNameError


def test_register_get_create_and_list():
    reg = Registry("widget")

    @reg.register("b")
    class B:
        def __init__(self, x=1):
            self.x = x

    reg.register("a", dict)
    assert reg.names() == ["a", "b"] and list(reg) == ["a", "b"] and "b" in reg and len(reg) == 2
    assert reg.get("b") is B and reg.create("b", x=3).x == 3
    reg.register("b", B)  # the same object again is fine
    with pytest.raises(RuntimeError, match="registered twice"):
        reg.register("b", dict)


def test_unknown_names_raise_one_error_type_listing_the_known_names():
    reg = Registry("widget", argument="--widgets")
    reg.register("a", dict)
    reg.register("b", list)
    with pytest.raises(UnknownNameError) as info:
        reg.get("c")
    err = info.value
    assert isinstance(err, KeyError) and isinstance(err, ValueError)
    assert str(err) == "--widgets: unknown widget 'c'; choose from: a, b"
    assert err.known == ["a", "b"] and err.name == "c"
    assert reg.check("b, a") == ["b", "a"]
    with pytest.raises(UnknownNameError, match=r"unknown widget\(s\) \['x', 'y'\]; choose from: a, b"):
        reg.check(["a", "x", "y"])
    with pytest.raises(ValueError, match="give at least one widget"):
        reg.check(" , ")


def test_loader_runs_once_on_first_lookup():
    calls = []
    reg = Registry("thing", loader=lambda: (calls.append(1), reg.register("t", int)))
    assert calls == []
    assert reg.names() == ["t"] and reg.get("t") is int
    assert calls == [1]


def test_every_library_registry_uses_the_helper():
    from linearlab.lab.mixer_variants import MIXER_VARIANTS
    from linearlab.recipes import RECIPES

    for reg in (RECIPES, MIXER_VARIANTS):
        assert isinstance(reg, Registry)
        with pytest.raises(UnknownNameError):
            reg.get("definitely-not-registered")
