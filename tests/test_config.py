"""Config overrides: typed parsing, validation by the dataclass, and config diffs for resume."""

from dataclasses import dataclass, field

import pytest

from linearlab.config import apply_overrides, diff_configs, flatten


@dataclass
class Inner:
    width: int = 8
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if self.width < 1:
            raise ValueError(f"width: must be >= 1, got {self.width}")


@dataclass
class Outer:
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    rates: list[float] = field(default_factory=lambda: [0.1])
    betas: tuple[float, float] = (0.9, 0.99)
    limit: int | None = None
    name: str = "x"
    flag: bool = False
    extra: dict = field(default_factory=dict)


def test_values_are_parsed_by_the_declared_type():
    cfg = apply_overrides(
        Outer(),
        ["inner.width=16", "inner.lr=3e-4", "sizes=[4, 8]", "rates=1e-3,1e-2", "betas=[0.8, 0.9]",
         "limit=5", "name=12", "flag=yes", 'extra={"a": 1}'],
    )  # fmt: skip
    assert cfg.inner.width == 16 and cfg.inner.lr == 3e-4
    assert cfg.sizes == [4, 8] and cfg.rates == [1e-3, 1e-2] and cfg.betas == (0.8, 0.9)
    assert cfg.limit == 5 and cfg.name == "12" and cfg.flag is True and cfg.extra == {"a": 1}
    assert apply_overrides(cfg, ["limit=none"]).limit is None
    assert apply_overrides(Outer(), ["sizes=3"]).sizes == [3]  # one value is a one-element list


@pytest.mark.parametrize(
    "override, message",
    [
        ("inner.width=abc", "--set inner.width=abc: expected an integer"),
        ("inner.width=2.5", "expected an integer"),
        ("inner.width=0", "width: must be >= 1, got 0"),  # the dataclass's own check runs again
        ("sizes=[1, 2.5]", "expected an integer, got 2.5"),
        ('rates=["a"]', "expected a number"),
        ("betas=[0.9]", "expected 2 values"),
        ("flag=maybe", "expected a boolean"),
        ("extra=[1]", "expected a JSON object"),
        ("inner.nope=1", "no field 'nope'; allowed here: width, lr"),
        ("nope.x=1", "no field 'nope'"),
        ("width", "expected key=value"),
    ],
)
def test_bad_overrides_name_key_value_and_what_is_allowed(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        apply_overrides(Outer(), [override])


def test_overrides_do_not_touch_the_original():
    cfg = Outer()
    apply_overrides(cfg, ["sizes=[9]", "inner.width=3"])
    assert cfg.sizes == [1, 2] and cfg.inner.width == 8


def test_diff_lists_dotted_keys_with_both_values():
    old = flatten(Outer())
    assert old["inner.width"] == 8 and old["betas"] == (0.9, 0.99)
    new = apply_overrides(Outer(), ["inner.width=9", "betas=[0.9, 0.99]"])
    from linearlab.config import to_dict

    stored = {"inner": {"width": 8, "lr": 1e-3}, "sizes": [1, 2], "rates": [0.1], "betas": [0.9, 0.99],
              "limit": None, "name": "x", "flag": False, "extra": {}}  # fmt: skip
    # tuples stored as JSON lists are the same value
    assert diff_configs(stored, to_dict(new)) == [("inner.width", 8, 9)]


def test_require_at_least_one_names_the_first_field_below_one():
    from types import SimpleNamespace

    from linearlab.config import require_at_least_one

    cfg = SimpleNamespace(steps=10, batch_size=0, heads=-2)
    require_at_least_one(cfg, "steps")
    with pytest.raises(ValueError, match=r"^batch_size: must be >= 1, got 0$"):
        require_at_least_one(cfg, "steps", "batch_size", "heads")
