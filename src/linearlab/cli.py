"""Command line: ``linearlab ls|run|report|bench``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

BENCHES = ("ops", "mixers")


def _cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "recipes":
        from linearlab.recipes import get_recipe, list_recipes

        for name in list_recipes():
            print(f"{name:28s} {get_recipe(name).help}")
    else:
        from linearlab.layers import list_mixers

        for name in list_mixers():
            print(name)
    return 0


def _run_parser(recipe) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"linearlab run {recipe.name}", description=recipe.help)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--smoke", action="store_true", help="tiny size, under a minute")
    parser.add_argument("--out", default=None, help="run directory (default runs/<recipe>/<run-id>)")
    if recipe.add_arguments is not None:
        recipe.add_arguments(parser)
    return parser


def _cmd_run(name: str, rest: list[str]) -> int:
    from linearlab.recipes import get_recipe
    from linearlab.runs import RunDir

    try:
        recipe = get_recipe(name)
    except KeyError as err:
        print(f"linearlab run: {err.args[0]}", file=sys.stderr)
        return 2
    args = _run_parser(recipe).parse_args(rest)
    run_dir = RunDir.create(recipe.name, args.out)
    start = time.perf_counter()
    summary = recipe.run(args, run_dir)
    summary = dict(summary or {})
    summary.setdefault("wall_seconds", round(time.perf_counter() - start, 2))
    run_dir.write_summary(summary)
    print(run_dir.path)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from linearlab.io import check_input_path
    from linearlab.recipes import get_recipe
    from linearlab.runs import RunDir

    path = check_input_path(args.run_dir, kind="dir", name="run_dir")
    summary_path = path / "summary.json"
    if not summary_path.is_file():
        print(f"linearlab report: {str(summary_path)!r} not found: is this a run directory?", file=sys.stderr)
        return 2
    recipe_name = args.recipe or path.parent.name
    try:
        recipe = get_recipe(recipe_name)
    except KeyError:
        recipe = None
    if recipe is not None and recipe.report is not None:
        print(recipe.report(RunDir(path)))
    else:
        print(json.dumps(json.loads(summary_path.read_text()), indent=2))
    return 0


def _cmd_bench(name: str, rest: list[str]) -> int:
    if name not in BENCHES:
        print(
            f"linearlab bench: unknown benchmark {name!r}; choose from {', '.join(BENCHES)}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(f"linearlab.bench.{name}")
    return int(module.main(rest) or 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="linearlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_ls = sub.add_parser("ls", help="list mixers or recipes")
    p_ls.add_argument("what", choices=["mixers", "recipes"])
    p_run = sub.add_parser("run", help="run a recipe (linearlab run <recipe> --help for its options)")
    p_run.add_argument("recipe")
    p_run.add_argument("rest", nargs=argparse.REMAINDER)
    p_report = sub.add_parser("report", help="rebuild tables and figures from a run directory")
    p_report.add_argument("run_dir", type=Path)
    p_report.add_argument(
        "--recipe", default=None, help="recipe name (default: the run folder's parent name)"
    )
    p_bench = sub.add_parser("bench", help=f"speed and memory benchmarks: {', '.join(BENCHES)}")
    p_bench.add_argument("name")
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "ls":
        return _cmd_ls(args)
    if args.command == "run":
        return _cmd_run(args.recipe, args.rest)
    if args.command == "report":
        return _cmd_report(args)
    return _cmd_bench(args.name, args.rest)


if __name__ == "__main__":
    raise SystemExit(main())
