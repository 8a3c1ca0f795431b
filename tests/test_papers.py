"""The paper index: every paper declared once, everything it names exists, nothing goes unnamed.

Also ``linearlab papers`` (list, one entry, unknown query), ``linearlab report --record`` (the
reference-run record the index reads "our" figures from) and the files generated from the records
(``docs/papers.md``, the README's citation list).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from linearlab import papers as P
from linearlab import run_records
from linearlab.cli import _run_parser, main
from linearlab.config import apply_overrides, to_dict
from linearlab.recipes import get_recipe, list_recipes
from linearlab.runs import RunDir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def papers() -> list[P.Paper]:
    return P.all_papers()


@pytest.fixture
def no_records(tmp_path, monkeypatch) -> Path:
    """An empty records folder in place of src/linearlab/records/, so output does not depend on it."""
    folder = tmp_path / "records"
    monkeypatch.setattr(run_records, "RECORDS_DIR", folder)
    return folder


# -- the records themselves ----------------------------------------------------------------------


def test_every_recipe_names_a_paper_and_every_named_recipe_exists(papers):
    named = {r for p in papers for r in p.recipe_names}
    recipes = set(list_recipes())
    assert not recipes - named, f"recipes no paper names: {sorted(recipes - named)}"
    assert not named - recipes, f"papers name unknown recipes: {sorted(named - recipes)}"


def test_every_recipe_command_of_a_paper_parses(papers):
    for p in papers:
        for command in p.recipes:
            name, *rest = command.split()
            recipe = get_recipe(name)
            try:
                args = _run_parser(recipe).parse_args(rest)
            except SystemExit:
                pytest.fail(f"{p.arxiv}: `linearlab run {command}` does not parse")
            preset = args.preset or "default"
            apply_overrides(recipe.presets[preset](), list(args.set))  # raises on an unknown key


def test_every_registered_mixer_converter_and_layer_names_a_paper(papers):
    from linearlab.convert.linearize import METHODS
    from linearlab.layers.feature_maps import FEATURE_MAPS
    from linearlab.layers.registry import MIXERS
    from linearlab.models.forecast import FORECASTERS

    registries = {
        "mixer": MIXERS,
        "feature map": FEATURE_MAPS,
        "forecaster": FORECASTERS,
        "linearize method": METHODS,
    }
    assert set(registries) == set(P.REGISTERED_KINDS)
    declared = {e for p in papers for e in p.registered}
    unnamed = [
        f"{kind}:{name}"
        for kind, registry in registries.items()
        for name in registry.names()
        if f"{kind}:{name}" not in declared and f"{kind}:{name}" not in P.UNPAPERED
    ]
    assert not unnamed, f"registered but named by no paper (declare it, or list it in UNPAPERED): {unnamed}"
    unknown = [
        e for e in declared | set(P.UNPAPERED) if e.partition(":")[2] not in registries[e.partition(":")[0]]
    ]
    assert not unknown, f"papers name registry entries that do not exist: {unknown}"


def test_every_declared_object_imports(papers):
    broken = []
    for p in papers:
        for path in p.objects:
            try:
                P.resolve_object(path)
            except (ImportError, AttributeError) as err:
                broken.append(f"{p.arxiv} {path}: {err}")
    assert not broken, "\n".join(broken)


def test_every_usage_example_runs(papers):
    from linearlab.models import MixerLM, ModelConfig

    for p in papers:
        if not p.usage:
            continue
        # the names the examples may assume (papers.USAGE_NAMES), fresh for each example
        namespace = {
            "torch": torch,
            "x": torch.randn(2, 32, 64),
            "model": MixerLM(ModelConfig(vocab_size=256, d_model=64, n_layers=2, block_pattern="AA")),
        }
        assert set(namespace) == set(P.USAGE_NAMES)
        try:
            exec(compile(p.usage, f"<usage of {p.arxiv}>", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - report which paper's example broke
            pytest.fail(f"{p.arxiv} ({p.short}): its usage example fails: {type(err).__name__}: {err}")


def _seed_titles(seed_dir: Path) -> list[str]:
    """Titles in the seed dump: the line two non-empty lines above each "• N authors" line."""
    titles = []
    for path in sorted(seed_dir.glob("*.txt")):
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        text_lines = [(i, line) for i, line in enumerate(lines) if line]
        for k, (_, line) in enumerate(text_lines):
            if re.fullmatch(r"•\s*\d+\s+authors?", line) and k >= 2:
                titles.append(text_lines[k - 2][1])
    return titles


def test_every_seed_paper_has_an_entry(papers, seed_dir):
    titles = _seed_titles(seed_dir)
    assert len(titles) >= 40, (
        f"parsed only {len(titles)} titles from {seed_dir}: has the dump's format changed?"
    )
    declared = {P._norm(p.title): p for p in papers}
    missing = [t for t in titles if P._norm(t) not in declared]
    assert not missing, (
        "seed papers with no declare_paper(...) entry (declare it next to its code, with "
        f"status='planned' if there is none yet): {missing}"
    )


def test_paper_records_validate_themselves():
    base = dict(arxiv="2312.06635", short="X", title="T", authors="A", area=P.MIXERS)
    usage = "import torch\ntorch.zeros(1)"
    good = P.Paper(**base, status="implemented", objects=("linearlab.ops.chunk_gla",), usage=usage)
    assert good.year == 2023 and good.url.endswith("2312.06635")
    for bad, match in (
        (dict(base, arxiv="arXiv:2312.06635", status="planned", note="n"), "arxiv"),
        (dict(base, status="planned"), "note saying it is not implemented"),
        (dict(base, status="planned", note="n", recipes=("mqar",)), "planned paper has no"),
        (dict(base, status="implemented", usage=usage), "names the objects"),
        (dict(base, status="implemented", objects=("a.b",), usage="one line"), "two-line"),
        (dict(base, status="partial", objects=("a.b",), usage=usage), "what is missing"),
        (
            dict(base, status="implemented", objects=("a.b",), usage=usage, registered=("layer:x",)),
            "registered",
        ),
        (dict(base, status="implemented", objects=("a.b",), usage=usage, figures=("lm:*",)), "figures"),
        (dict(base, status="done", note="n"), "status"),
        (dict(base, area="misc", status="planned", note="n"), "area"),
    ):
        with pytest.raises(ValueError, match=match):
            P.Paper(**bad)


def test_a_paper_declared_twice_is_an_error_naming_both_places(papers):
    gla = P.PAPERS.get("2312.06635")
    fields = {f: getattr(gla, f) for f in gla.__dataclass_fields__ if f != "declared_in"}
    assert P.declare_paper(**fields) is gla  # the same record again (a re-import) is harmless
    with pytest.raises(RuntimeError, match="declared twice: in linearlab.layers.mixers.gla and in"):
        P.declare_paper(**{**fields, "claim": "something else"})
    assert P.PAPERS.get("2312.06635") is gla


def test_generated_docs_and_readme_citations_are_up_to_date():
    for path, expected in P.generated_files(REPO).items():
        assert path.is_file() and path.read_text(encoding="utf-8") == expected, (
            f"{path.relative_to(REPO)} is out of date: run `make papers`"
        )
    assert "arXiv 2312.06635" in P.render_citations()


def _planned_paper() -> P.Paper:
    """A planned record made here (every seed paper has code today, so none is declared)."""
    return P.Paper(
        arxiv="9999.00001",
        short="Some method",
        title="A Paper Without Code Yet",
        authors="Doe, Roe",
        area=P.LAYERS,
        status="planned",
        claim="It works (abstract).",
        note="Not implemented yet. Plan: a small CPU experiment.",
    )


def test_planned_papers_are_not_cited(monkeypatch):
    planned = _planned_paper()
    monkeypatch.setattr(P, "all_papers", lambda: [P.PAPERS.get("2312.06635"), planned])
    citations = P.render_citations()
    assert "arXiv 2312.06635" in citations and "9999.00001" not in citations


def test_committed_records_are_valid():
    for name in run_records.recorded_recipes():
        record = run_records.read_record(name)
        assert record["recipe"] == name and name in list_recipes()
        assert record.get("preset") != "smoke"


# -- linearlab papers ----------------------------------------------------------------------------


def test_papers_lists_every_paper_with_its_status(capsys, papers, no_records):
    assert main(["papers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{len(papers)} papers: ")
    for p in papers:
        assert re.search(rf"{p.status}\s+{re.escape(p.arxiv)}\s+", out), p.arxiv


def test_papers_shows_one_paper_by_id_or_words(capsys, no_records):
    for query in (
        ["2312.06635"],
        ["arXiv:2312.06635v2"],
        ["GLA"],
        ["gated", "linear", "attention", "hardware"],
    ):
        assert main(["papers", *query]) == 0, query
        out = capsys.readouterr().out
        assert out.startswith(
            "GLA: Gated Linear Attention Transformers with Hardware-Efficient Training\n"
        ), query
    assert "from linearlab.layers.mixers.gla import GatedLinearAttention" in out
    assert 'create_mixer("gla"' in out  # the usage example
    assert "linearlab run mqar" in out and "linearlab run lm" in out
    assert "0.53, 0.77 and 0.95" in out  # the paper's numbers
    assert "mqar: no recorded run yet" in out and "lm: no recorded run yet" in out


def test_papers_shows_a_planned_paper_as_not_implemented():
    out = P.render_paper(_planned_paper())
    assert "status:     planned" in out and "Not implemented yet" in out and "import:" not in out


def test_papers_unknown_query_is_one_line_naming_close_matches(capsys):
    assert main(["papers", "gatd", "linar", "atention"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no paper matches 'gatd linar atention'" in err
    assert "close matches: GLA (2312.06635)" in err


def test_papers_ambiguous_query_lists_the_matches(capsys):
    assert main(["papers", "lightning"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 papers match 'lightning'") and "2401.04658" in out and "2307.14995" in out


# -- linearlab report --record -------------------------------------------------------------------


def _fake_mqar_run(path: Path, preset: str = "default") -> RunDir:
    """A finished mqar run directory with made-up numbers (a test fixture, never a record)."""
    from linearlab.recipes.mqar import MQARExperiment

    cfg = MQARExperiment(mixers="softmax,gla", steps=5, workers=2)
    run = RunDir.start(
        path,
        {"recipe": "mqar", "preset": preset, "overrides": ["steps=5"], "config": to_dict(cfg)},
        resume=False,
    )
    results = [
        {"label": lab, "mixer": lab, "d_model": 64, "seq_len": 64, "lr": 0.01, "params": 10, "state_size": st,
         "accuracy": {"4": a4, "16": a16}, "train_seconds": 1.0}
        for lab, st, a4, a16 in (("softmax", 8320, 1.0, 0.875), ("gla", 1152, 0.75, 0.5))
    ]  # fmt: skip
    run.write_summary({"results": results, "all_runs": results, "wall_seconds": 3.5})
    return run


def test_report_record_writes_the_reference_run_that_papers_shows(tmp_path, capsys, no_records):
    run = _fake_mqar_run(tmp_path / "runs" / "mqar" / "20260101-000000-abcd")
    assert main(["report", str(run.path), "--record"]) == 0
    out = capsys.readouterr().out
    path = no_records / "mqar.json"
    assert f"recorded {path}" in out and path.is_file()
    record = json.loads(path.read_text())
    stored = json.loads(run.file("config.json").read_text())
    # the command reproduces the run: every field that differs from the preset, except the workers
    assert record["command"] == "linearlab run mqar --set mixers=softmax,gla --set steps=5"
    assert record["run"] == "mqar/20260101-000000-abcd" and record["run_date"] == stored["created"]
    assert record["git_commit"] == stored["git_commit"] and record["machine"] == stored["machine"]
    assert record["machine"]["cpu"] and record["machine"]["logical_cpus"] >= 1
    assert record["headline"] == {
        "softmax recall kv=4": 1.0, "softmax recall kv=16": 0.875, "softmax state": 8320.0,
        "gla recall kv=4": 0.75, "gla recall kv=16": 0.5, "gla state": 1152.0,
    }  # fmt: skip
    assert not list(no_records.glob(".*.tmp"))  # written atomically, nothing left behind

    assert main(["papers", "GLA"]) == 0
    out = capsys.readouterr().out
    ours = out[out.index("ours:") :]
    assert "gla recall kv=4 0.75; gla recall kv=16 0.5; gla state 1152" in " ".join(ours.split())
    assert "softmax recall" not in ours  # GLA's figures only
    assert "lm: no recorded run yet" in ours


def test_report_record_refuses_a_smoke_run_before_writing_anything(tmp_path, capsys, no_records):
    run = _fake_mqar_run(tmp_path / "smoke-run", preset="smoke")
    assert main(["report", str(run.path), "--record"]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "is a smoke run" in captured.err
    assert captured.out == "" and not (no_records / "mqar.json").exists()


def test_a_damaged_record_is_an_error_naming_the_file(no_records, capsys):
    no_records.mkdir()
    (no_records / "mqar.json").write_text("{not json")
    assert main(["papers", "GLA"]) == 2
    assert "mqar.json: not valid JSON" in capsys.readouterr().err
