import json
import subprocess
import sys

from linearlab.cli import main
from linearlab.config import apply_overrides
from linearlab.io import atomic_write_json, read_jsonl


def test_unknown_recipe_names_known_ones(capsys):
    assert main(["run", "no-such-recipe"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown recipe 'no-such-recipe'; choose from: " in err and "mqar" in err


def test_unknown_bench(capsys):
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


def test_report_rejects_missing_dir_and_non_runs_in_one_line(tmp_path, capsys):
    missing = tmp_path / "absent"
    assert main(["report", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "absent" in err and "does not exist" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "summary.json" in capsys.readouterr().err


def test_usage_errors_are_one_line_with_exit_code_2(capsys):
    for argv, message in (
        (["run", "mqar", "--bogus"], "unrecognized arguments: --bogus"),
        (["run", "mqar", "--preset", "huge"], "invalid choice: 'huge'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["run", "mqar", "--resume"], "--resume: give the run directory"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)


def test_run_help_lists_presets_and_config_fields(capsys):
    assert main(["run", "mqar", "--help"]) == 0
    out = capsys.readouterr().out
    assert "presets: default, smoke, zoology" in out and "steps = 1200" in out


def test_every_recipe_has_default_and_smoke_presets_that_validate():
    from linearlab.recipes import get_recipe, list_recipes

    assert len(list_recipes()) >= 7
    for name in list_recipes():
        recipe = get_recipe(name)
        for preset in recipe.presets:
            config = recipe.presets[preset]()
            assert isinstance(config, recipe.config), (name, preset)


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "linearlab.cli", "ls", "recipes"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr


def test_overrides_nested_dataclass():
    from dataclasses import dataclass, field

    @dataclass
    class Inner:
        d_model: int = 8
        lr: float = 1e-3
        flag: bool = False

    @dataclass
    class Outer:
        model: Inner = field(default_factory=Inner)
        name: str = "x"

    cfg = apply_overrides(Outer(), ["model.d_model=128", "model.lr=3e-4", "model.flag=true", "name=y"])
    assert (cfg.model.d_model, cfg.model.lr, cfg.model.flag, cfg.name) == (128, 3e-4, True, "y")
    for bad, msg in (("model.nope=1", "no field 'nope'"), ("model.d_model", "expected key=value")):
        try:
            apply_overrides(Outer(), [bad])
        except ValueError as err:
            assert msg in str(err)
        else:
            raise AssertionError(bad)


def test_atomic_json_and_truncated_jsonl(tmp_path):
    p = atomic_write_json(tmp_path / "a.json", {"x": 1})
    assert json.loads(p.read_text()) == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]  # no temp file left behind
    assert p.stat().st_mode & 0o044, "written files must be readable by others, like a plain open()"
    log = tmp_path / "m.jsonl"
    log.write_text('{"step": 1}\n{"step": 2}\n{"ste')
    assert read_jsonl(log) == [{"step": 1}, {"step": 2}]
