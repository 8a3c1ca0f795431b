"""Command line: ``linearlab ls|run|report|papers|bench``.

Every user error (unknown name, bad ``--set`` key or value, missing input file, a run directory
that may not be used) is one line on stderr and exit code 2, never a traceback, and it is found
before anything is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

BENCHES = ("ops", "mixers")
# errors that come from what the user asked for (bad value, missing file); anything else is a bug
# and keeps its traceback
USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (no usage dump) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see --help)", file=sys.stderr)
        raise SystemExit(2)


class _UserError(Exception):
    """A message for the user; ``main`` prints it as one line and returns 2."""


def _cmd_ls(args: argparse.Namespace) -> int:
    if args.what == "recipes":
        from linearlab.recipes import get_recipe, list_recipes

        for name in list_recipes():
            recipe = get_recipe(name)
            print(f"{name:24s} {recipe.help}  [presets: {', '.join(recipe.presets)}]")
    else:
        from linearlab.layers import list_mixers

        for name in list_mixers():
            print(name)
    return 0


def _config_help(recipe) -> str:
    default = recipe.presets["default"]()
    lines = [
        f"presets: {', '.join(recipe.presets)}",
        "config fields (--set KEY=VALUE; default preset values):",
    ]
    for f in dataclasses.fields(default):
        lines.append(f"  {f.name} = {getattr(default, f.name)!r}")
    return "\n".join(lines)


def _run_parser(recipe) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"linearlab run {recipe.name}",
        description=recipe.help,
        epilog=_config_help(recipe),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--preset", default=None, choices=list(recipe.presets), help="named config (default: default)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="the tiny 'smoke' preset: a check in under a minute"
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", default=None, help="run directory (default runs/<recipe>/<run-id>)")
    parser.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    for flag in recipe.flags:
        help_text = flag.help or f"sets {flag.field}"
        if flag.switch:  # a bare flag for a boolean field
            parser.add_argument(
                flag.flag, dest=f"flag_{flag.field}", action="store_const", const="true", help=help_text
            )
        else:
            parser.add_argument(flag.flag, dest=f"flag_{flag.field}", default=None, help=help_text)
    return parser


def _resolve_config(recipe, args: argparse.Namespace) -> tuple[Any, str]:
    from linearlab.config import from_dict
    from linearlab.runs import RunDir

    if args.smoke and args.preset not in (None, "smoke"):
        raise _UserError(f"--smoke and --preset {args.preset}: choose one")
    preset = "smoke" if args.smoke else (args.preset or "default")
    flags = {f.field: getattr(args, f"flag_{f.field}") for f in recipe.flags}
    chosen = args.preset or args.smoke or args.set or any(v is not None for v in flags.values())
    if args.resume and not chosen and args.out is not None:
        # `--resume --out D` alone continues the run exactly as it was configured
        stored = RunDir.read_stored_config(args.out)
        try:
            config = from_dict(recipe.config, stored["config"])
        except TypeError as err:
            raise ValueError(
                f"--resume: the stored config does not fit {recipe.name}'s config ({err})"
            ) from None
        if recipe.check is not None:
            recipe.check(config)
        return config, stored.get("preset", preset)
    return recipe.resolve(preset, flags, args.set), preset


def _cmd_run(name: str, rest: list[str]) -> int:
    from linearlab.config import to_dict
    from linearlab.recipes import get_recipe
    from linearlab.runs import RunDir

    prog = f"linearlab run {name}"
    try:
        recipe = get_recipe(name)
        args = _run_parser(recipe).parse_args(rest)
        config, preset = _resolve_config(recipe, args)
        path = RunDir.check_start(
            recipe.name, to_dict(config), args.out, args.resume, tuple(recipe.resume_may_change)
        )
    except (_UserError, *USER_ERRORS) as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    fresh = not args.resume
    record = {"recipe": recipe.name, "preset": preset, "overrides": list(args.set), "config": to_dict(config)}
    run_dir = RunDir.start(path, record, resume=args.resume)
    start = time.perf_counter()
    try:
        summary = dict(recipe.run(config, run_dir) or {})
    except USER_ERRORS as err:
        print(f"{prog}: {err}{_after_failure(run_dir.path, fresh)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; continue with: linearlab run {recipe.name} --out {run_dir.path} --resume",
            file=sys.stderr,
        )
        return 130
    summary.setdefault("wall_seconds", round(time.perf_counter() - start, 2))
    run_dir.write_summary(summary)
    print(run_dir.path)
    return 0


def _after_failure(path: Path, fresh: bool) -> str:
    """Remove a run directory this call made if the run wrote nothing but its config."""
    if fresh and {p.name for p in path.iterdir()} <= {"config.json"}:
        shutil.rmtree(path, ignore_errors=True)
        return " (nothing was kept)"
    return f" (files so far are in {str(path)!r}; continue with --resume once fixed)"


def _cmd_report(args: argparse.Namespace) -> int:
    from linearlab.io import check_input_path
    from linearlab.recipes import RECIPES
    from linearlab.runs import RunDir

    try:
        path = check_input_path(args.run_dir, kind="dir", name="run_dir")
        run_dir = RunDir(path)
        summary = run_dir.read_summary()
        recipe_name = args.recipe
        if recipe_name is None:
            try:
                recipe_name = RunDir.read_stored_config(path).get("recipe")
            except ValueError:
                recipe_name = None
            recipe_name = recipe_name or path.parent.name
        known = args.recipe or args.record or recipe_name in RECIPES
        recipe = RECIPES.get(recipe_name) if known else None
        if args.record:
            from linearlab.run_records import build_record

            build_record(recipe, run_dir)  # refuse a smoke run, or another recipe's, before printing
        if recipe is not None and recipe.report is not None:
            print(recipe.report(run_dir))
        else:
            import json

            print(json.dumps(summary, indent=2))
        if args.record:
            from linearlab.run_records import write_record

            print(f"recorded {write_record(recipe, run_dir)}")
    except USER_ERRORS as err:
        print(f"linearlab report: {err}", file=sys.stderr)
        return 2
    return 0


def _cmd_papers(args: argparse.Namespace) -> int:
    from linearlab import papers

    query = " ".join(args.query).strip()
    try:
        if not query:
            print(papers.render_index())
            return 0
        found = papers.find(query)
        if isinstance(found, papers.Paper):
            print(papers.render_paper(found))
        else:
            print(papers.render_matches(found, query))
    except USER_ERRORS as err:
        print(f"linearlab papers: {err}", file=sys.stderr)
        return 2
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
    parser = _Parser(prog="linearlab", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p_ls = sub.add_parser("ls", help="list mixers or recipes")
    p_ls.add_argument("what", choices=["mixers", "recipes"])
    p_run = sub.add_parser("run", help="run a recipe (linearlab run <recipe> --help for its options)")
    p_run.add_argument("recipe")
    p_run.add_argument("rest", nargs=argparse.REMAINDER)
    p_report = sub.add_parser("report", help="rebuild tables and figures from a run directory")
    p_report.add_argument("run_dir", type=Path)
    p_report.add_argument("--recipe", default=None, help="recipe name (default: the one in config.json)")
    p_report.add_argument(
        "--record",
        action="store_true",
        help="keep this run as the recipe's reference run (src/linearlab/records/<recipe>.json)",
    )
    p_papers = sub.add_parser(
        "papers", help="the papers linearlab implements; `papers <arXiv id or words>` shows one"
    )
    p_papers.add_argument("query", nargs="*", help="an arXiv id, a short name or words of the title")
    p_bench = sub.add_parser("bench", help=f"speed and memory benchmarks: {', '.join(BENCHES)}")
    p_bench.add_argument("name")
    p_bench.add_argument("rest", nargs=argparse.REMAINDER)
    try:
        args = parser.parse_args(argv)
        if args.command == "ls":
            return _cmd_ls(args)
        if args.command == "run":
            return _cmd_run(args.recipe, args.rest)
        if args.command == "report":
            return _cmd_report(args)
        if args.command == "papers":
            return _cmd_papers(args)
        return _cmd_bench(args.name, args.rest)
    except SystemExit as exit_:  # argparse's --help (0) and usage errors (2)
        return int(exit_.code or 0)


if __name__ == "__main__":
    raise SystemExit(main())
