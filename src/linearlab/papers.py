"""The paper index: one :class:`Paper` record per paper, declared next to the code that implements it.

Every paper linearlab implements (or plans to) is declared exactly once, by a module-level call in
the module that implements it (a mixer file, a recipe, ``convert/linearize.py``, ...)::

    declare_paper(
        arxiv="2312.06635",
        short="GLA",
        title="Gated Linear Attention Transformers with Hardware-Efficient Training",
        authors="Yang, Wang, Shen, Panda, Kim",
        venue="ICML 2024",
        area=MIXERS,
        status="implemented",
        objects=("linearlab.layers.mixers.gla.GatedLinearAttention", "linearlab.ops.chunk_gla"),
        registered=("mixer:gla",),
        recipes=("mqar", "lm"),
        usage='from linearlab.layers import create_mixer\\n'
              'y, state = create_mixer("gla", d_model=64, num_heads=2)(x)   # x: [B, T, 64]',
        claim="...",  # the paper's own numbers, short
        figures=("mqar:gla *", "lm:gla *"),
    )

A paper without code yet is declared with ``status="planned"`` and a one-line ``note`` saying so,
in the module that will implement it (today every seed paper has code, some of it ``"partial"``).

:data:`PAPERS` is the one :class:`~linearlab.registry.Registry` of them, keyed by arXiv id. Its loader
runs on the first lookup: it reads the package's ``.py`` files and imports every module holding a
module-level ``declare_paper(`` call, so ``import linearlab`` imports none of them. ``linearlab
papers`` lists the records and shows one; ``python -m linearlab.papers --write`` (``make papers``)
regenerates ``docs/papers.md`` and the README's citation list from them, and ``--check`` says whether
both are up to date. "Our" figures come from the recipes' reference runs
(:mod:`linearlab.run_records`), never from this file.
"""

from __future__ import annotations

import difflib
import importlib
import math
import re
import sys
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from linearlab.registry import Registry

STATUSES = ("implemented", "partial", "planned")

# areas, in the order the index lists them
MIXERS = "sequence mixers and recall"
LINEARIZE = "linearising pretrained models"
FORECASTING = "forecasting"
ICL = "in-context learning and learning dynamics"
LAYERS = "linear layers, heads and compression"
ANALYSIS = "analysing trained networks"
OTHER = "vision, audio, operators and image layers"
AREAS = (MIXERS, LINEARIZE, FORECASTING, ICL, LAYERS, ANALYSIS, OTHER)

#: registry kinds a ``registered`` entry may name, and the helper users create them with
REGISTERED_KINDS = {
    "mixer": "linearlab.layers.create_mixer",
    "feature map": "linearlab.layers.feature_maps.create_feature_map",
    "forecaster": "linearlab.models.forecast.create_forecaster",
    "linearize method": "linearlab.convert.LinearizeConfig(method=...)",
}

#: registry entries that implement no paper, each with the reason (everything else registered
#: must be named by some paper's ``registered``; tests/test_papers.py checks both)
UNPAPERED = {"feature map:identity": "phi(x) = x: a control with no kernel, not a paper's map"}

#: names the usage examples may use without defining them (the test that runs every example
#: provides them): ``torch``; ``x``, a float tensor ``[B, T, D] = [2, 32, 64]``; ``model``, a small
#: all-softmax ``MixerLM`` (vocab 256, d_model 64) standing in for a pretrained transformer
USAGE_NAMES = ("torch", "x", "model")

_ARXIV = re.compile(r"^\d{4}\.\d{4,5}$")


@dataclass(frozen=True)
class Paper:
    """One paper and what linearlab offers for it.

    Attributes:
        arxiv: arXiv id without version, e.g. ``"2312.06635"`` (the registry key).
        short: the name people use for it (``"GLA"``, ``"LoLCATs"``).
        title: the full title, as published.
        authors: surnames in order, comma-separated (``"Yang, Kautz, Hatamizadeh"``); ``"Chen et al."``
            where only the first author is recorded.
        venue: where it appeared (``"ICML 2024"``), or ``""`` for an arXiv preprint.
        area: one of :data:`AREAS`.
        status: ``"implemented"``, ``"partial"`` (``note`` says what is missing) or ``"planned"``
            (not implemented; ``note`` says so and gives the plan).
        objects: dotted paths of the public objects that implement it (``"linearlab.ops.chunk_gla"``).
        registered: registry entries it provides, as ``"<kind>:<name>"`` with a kind of
            :data:`REGISTERED_KINDS` (``"mixer:gla"``).
        recipes: the ``linearlab run`` commands that reproduce its claim, without ``linearlab run``:
            a recipe name, optionally with flags (``"mqar --mixers softmax,transnormer"``).
        commands: other commands that measure its claim (``"linearlab bench ops"``).
        usage: two lines of Python that use it; they may use the names in :data:`USAGE_NAMES`.
        claim: the paper's own headline numbers, in a sentence or two.
        figures: which headline numbers of the recipes' reference runs stand next to ``claim``, as
            ``"<recipe>:<glob>"`` over the headline keys (``"mqar:gla *"``); empty = all of them.
        note: what is missing (partial), the plan (planned), or a caveat the user should know.
        declared_in: the module that declared it (set by :func:`declare_paper`).
    """

    arxiv: str
    short: str
    title: str
    authors: str
    area: str
    status: str
    venue: str = ""
    objects: tuple[str, ...] = ()
    registered: tuple[str, ...] = ()
    recipes: tuple[str, ...] = ()
    commands: tuple[str, ...] = ()
    usage: str = ""
    claim: str = ""
    figures: tuple[str, ...] = ()
    note: str = ""
    declared_in: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        def bad(message: str) -> ValueError:
            return ValueError(f"paper {self.arxiv!r} ({self.short or self.title!r}): {message}")

        if not isinstance(self.arxiv, str) or not _ARXIV.match(self.arxiv):
            raise bad("arxiv: expected an id like '2312.06635' (no 'arXiv:' prefix, no version)")
        for name in ("short", "title", "authors"):
            if not getattr(self, name).strip():
                raise bad(f"{name}: must not be empty")
        if self.area not in AREAS:
            raise bad(f"area: expected one of {AREAS}, got {self.area!r}")
        if self.status not in STATUSES:
            raise bad(f"status: expected one of {STATUSES}, got {self.status!r}")
        for name in ("objects", "registered", "recipes", "commands", "figures"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(v, str) and v for v in value):
                raise bad(f"{name}: expected a tuple of non-empty strings, got {value!r}")
        for entry in self.registered:
            kind, _, name = entry.partition(":")
            if kind not in REGISTERED_KINDS or not name:
                raise bad(
                    f"registered: {entry!r} is not '<kind>:<name>' with a kind of {list(REGISTERED_KINDS)}"
                )
        recipe_names = {r.split()[0] for r in self.recipes}
        for pattern in self.figures:
            recipe, _, glob = pattern.partition(":")
            if recipe not in recipe_names or not glob:
                raise bad(
                    f"figures: {pattern!r} is not '<recipe>:<glob>' for one of its recipes {sorted(recipe_names)}"
                )
        lines = self.usage.strip("\n").splitlines() if self.usage else []
        if self.status == "planned":
            if self.objects or self.registered or self.recipes or self.usage:
                raise bad("a planned paper has no objects, registered names, recipes or usage yet")
            if not self.note.strip():
                raise bad("a planned paper needs a note saying it is not implemented (and the plan)")
        else:
            if not self.objects:
                raise bad(f"an {self.status} paper names the objects that implement it")
            if len(lines) != 2:
                raise bad(f"usage: expected a two-line example, got {len(lines)} line(s)")
            if self.status == "partial" and not self.note.strip():
                raise bad("a partial paper needs a note saying what is missing")

    @property
    def year(self) -> int:
        """The year of the arXiv submission (first version), read off the id."""
        return 2000 + int(self.arxiv[:2])

    @property
    def label(self) -> str:
        """``"<short>: <title>"``, or the title alone when it starts with the short name."""
        if _norm(self.title).startswith(_norm(self.short)):
            return self.title
        return f"{self.short}: {self.title}"

    @property
    def url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}"

    @property
    def recipe_names(self) -> list[str]:
        """The recipes of :attr:`recipes`, without their flags, in order and without repeats."""
        return list(dict.fromkeys(r.split()[0] for r in self.recipes))

    def cite_authors(self) -> str:
        """Authors for a citation: ``A``, ``A & B``, ``A, B, C`` or ``A et al.``."""
        names = [n.strip() for n in self.authors.split(",") if n.strip()]
        if len(names) == 1:
            return names[0]
        if len(names) == 2:
            return f"{names[0]} & {names[1]}"
        if len(names) == 3:
            return ", ".join(names)
        return f"{names[0]} et al."


def _declaring_modules() -> list[str]:
    """Modules of this package with a module-level ``declare_paper(`` call, found in the sources."""
    root = Path(__file__).resolve().parent
    pattern = re.compile(r"^(?:\w+\s*=\s*)?declare_paper\(", re.MULTILINE)
    modules = []
    for path in sorted(root.rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if pattern.search(text):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join([__package__ or "linearlab", *parts]))
    return modules


def _load_papers() -> None:
    for name in _declaring_modules():
        importlib.import_module(name)


PAPERS: Registry[Paper] = Registry("paper", loader=_load_papers, argument="paper")


def declare_paper(**fields: Any) -> Paper:
    """Declare one paper (module level, in the module that implements it); returns the record.

    Declaring the same arXiv id from two places is an error naming both.
    """
    caller = sys._getframe(1).f_globals.get("__name__", "")
    paper = Paper(**fields, declared_in=caller)
    known = PAPERS._items.get(paper.arxiv)
    if known is not None and known != paper:
        raise RuntimeError(
            f"paper {paper.arxiv} ({paper.short}) is declared twice: in {known.declared_in} and in {caller}"
        )
    if known is None:
        PAPERS.register(paper.arxiv, paper)
    return known or paper


def all_papers() -> list[Paper]:
    """Every declared paper, by area (in :data:`AREAS` order), status (implemented, partial,
    planned), year and arXiv id."""
    return sorted(
        (p for _, p in PAPERS.items()),
        key=lambda p: (AREAS.index(p.area), STATUSES.index(p.status), p.year, p.arxiv),
    )


# -- lookup ------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _haystack(p: Paper) -> str:
    names = " ".join(e.partition(":")[2] for e in p.registered)
    return _norm(" ".join([p.arxiv, p.short, p.title, p.authors, names, " ".join(p.recipe_names)]))


def find(query: str) -> Paper | list[Paper]:
    """The paper a user means by ``query``: an arXiv id (``2312.06635``, ``arXiv:2312.06635v2``), a
    short name (``GLA``), a registered name (``gated_deltanet``) or words of the title or authors.

    Returns one :class:`Paper`, or the list of papers when several match equally. Raises ValueError
    (one line) naming close matches when none does.
    """
    q = query.strip()
    papers = all_papers()
    if not q:
        raise ValueError("give an arXiv id or words of a title")
    arxiv = re.sub(r"^(arxiv[:\s]*|https?://arxiv\.org/(abs|pdf)/)", "", q, flags=re.IGNORECASE)
    arxiv = re.sub(r"v\d+$", "", arxiv.strip().removesuffix(".pdf"))
    by_id = {p.arxiv: p for p in papers}
    if arxiv in by_id:
        return by_id[arxiv]
    nq = _norm(q)
    for exact in (
        [p for p in papers if _norm(p.short) == nq],
        [p for p in papers if _norm(p.title) == nq],
        [p for p in papers if any(_norm(e.partition(":")[2]) == nq for e in p.registered)],
    ):
        if len(exact) == 1:
            return exact[0]
        if exact:
            return exact
    words = nq.split()
    hits = [p for p in papers if words and all(w in _haystack(p) for w in words)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        return hits
    raise ValueError(f"no paper matches {query!r}; {_close_matches(nq, papers)}")


def _close_matches(nq: str, papers: Sequence[Paper], n: int = 5, cutoff: float = 0.75) -> str:
    """Papers whose words are closest to the query's (each query word scored by its most similar
    word of the paper, averaged), best first."""
    words = nq.split()
    scored = []
    for p in papers:
        vocab = set(_haystack(p).split())
        score = sum(max(difflib.SequenceMatcher(None, w, v).ratio() for v in vocab) for w in words)
        score /= max(1, len(words))
        if score >= cutoff:
            scored.append((-score, p.arxiv, p))
    shown = [p for _, _, p in sorted(scored)[:n]]
    if not shown:
        return "`linearlab papers` lists them all"
    return "close matches: " + ", ".join(f"{p.short} ({p.arxiv})" for p in shown)


# -- our figures -------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if value != value else ("inf" if value > 0 else "-inf")
    return f"{value:.4g}"


def measured(paper: Paper, read_record: Callable[[str], dict | None] | None = None) -> list[str]:
    """One line per recipe of ``paper``: our last recorded figures next to its claim, or why there are none."""
    from linearlab.run_records import read_record as default_reader

    reader = read_record or default_reader
    lines = []
    for recipe in paper.recipe_names:
        record = reader(recipe)
        if record is None:
            lines.append(f"{recipe}: no recorded run yet")
            continue
        patterns = [f.partition(":")[2] for f in paper.figures if f.partition(":")[0] == recipe]
        headline = record.get("headline") or {}
        chosen = {
            k: v for k, v in headline.items() if not patterns or any(fnmatchcase(k, g) for g in patterns)
        }
        machine = record.get("machine") or {}
        cpu = machine.get("cpu") or "unknown CPU"
        where = (
            f"{str(record.get('run_date', '?'))[:10]}, {cpu}, {machine.get('usable_cpus', '?')} CPUs, "
            f"{record.get('threads', '?')} threads, commit {str(record.get('git_commit') or 'unknown')[:12]}"
        )
        if not headline:
            numbers = "the recorded run has no headline numbers (the recipe defines none)"
        elif not chosen:
            numbers = "the recorded run has no numbers for this paper"
        else:
            numbers = "; ".join(f"{k} {_fmt(v)}" for k, v in chosen.items())
        lines.append(f"{recipe} ({where}): {numbers}  [command: {record.get('command', '?')}]")
    return lines


# -- rendering ---------------------------------------------------------------------------------


def import_lines(paper: Paper) -> list[str]:
    """``from module import a, b`` lines for :attr:`Paper.objects`, grouped by module, in order."""
    groups: dict[str, list[str]] = {}
    for path in paper.objects:
        module, _, name = path.rpartition(".")
        groups.setdefault(module, []).append(name)
    return [f"from {m} import {', '.join(names)}" for m, names in groups.items()]


def resolve_object(path: str) -> Any:
    """Import the object at dotted ``path`` (``linearlab.ops.chunk_gla``); ImportError /
    AttributeError if it does not exist."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError as err:
            if err.name is None or not ".".join(parts[:i]).startswith(err.name):
                raise
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {path!r}")


def summary_line() -> str:
    papers = all_papers()
    counts = {s: sum(p.status == s for p in papers) for s in STATUSES}
    return (
        f"{len(papers)} papers: {counts['implemented']} implemented, {counts['partial']} partial, "
        f"{counts['planned']} planned."
    )


def render_index() -> str:
    """The text of ``linearlab papers``: every paper by area with its status and arXiv id."""
    lines = [summary_line() + " `linearlab papers <arXiv id or words>` shows one.", ""]
    for area in AREAS:
        papers = [p for p in all_papers() if p.area == area]
        if not papers:
            continue
        lines.append(area)
        for p in papers:
            lines.append(f"  {p.status:<11}  {p.arxiv:<10}  {p.label}")
        lines.append("")
    return "\n".join(lines).rstrip()


def render_matches(papers: Sequence[Paper], query: str) -> str:
    lines = [f"{len(papers)} papers match {query!r}; give its arXiv id to see one:"]
    lines += [f"  {p.status:<11}  {p.arxiv:<10}  {p.label}" for p in papers]
    return "\n".join(lines)


_INDENT = 12
_WIDTH = 100


def _block(label: str, rows: Sequence[str], wrap: bool = False) -> list[str]:
    """``label:`` then ``rows`` aligned after it; prose (``wrap``) is wrapped at :data:`_WIDTH`."""
    if wrap:
        rows = [
            line
            for row in rows
            for line in textwrap.wrap(row, _WIDTH - _INDENT, subsequent_indent="  ", break_on_hyphens=False)
        ]
    if not rows:
        return []
    out = [f"{label + ':':<{_INDENT}}{rows[0]}"]
    out += [" " * _INDENT + r for r in rows[1:]]
    return out


def render_paper(paper: Paper, read_record: Callable[[str], dict | None] | None = None) -> str:
    """The text of ``linearlab papers <query>`` for one paper."""
    p = paper
    venue = f", {p.venue}" if p.venue else ""
    lines = [p.label, f"{p.authors} ({p.year}){venue}. arXiv {p.arxiv}: {p.url}", ""]
    lines += _block("status", [p.status + (f" (declared in {p.declared_in})" if p.declared_in else "")])
    if p.status == "planned":
        lines += _block("note", [p.note], wrap=True)
        lines += _block("paper", [p.claim] if p.claim else [], wrap=True)
        return "\n".join(lines)
    lines += _block("import", import_lines(p))
    registered = ", ".join(f'{e.partition(":")[0]} "{e.partition(":")[2]}"' for e in p.registered)
    lines += _block("registered", [registered] if registered else [], wrap=True)
    lines += _block("usage", p.usage.strip("\n").splitlines())
    runs = [f"linearlab run {r}" for r in p.recipes] + list(p.commands)
    lines += _block("reproduce", runs or ["no recipe reproduces its claim yet"])
    lines += _block("paper", [p.claim or "(no number recorded for the paper)"], wrap=True)
    ours = measured(p, read_record) if p.recipes else ["no recipe, so no measured figure"]
    lines += _block("ours", ours, wrap=True)
    lines += _block("note", [p.note] if p.note else [], wrap=True)
    return "\n".join(lines)


# -- generated files ---------------------------------------------------------------------------

CITATIONS_START = "<!-- papers:citations:start -->"
CITATIONS_END = "<!-- papers:citations:end -->"
DOCS_PATH = Path("docs") / "papers.md"


def render_citations() -> str:
    """The README's citation list: every implemented or partial paper, one line each."""
    lines = []
    for p in sorted(all_papers(), key=lambda p: (AREAS.index(p.area), p.year, p.arxiv)):
        if p.status == "planned":
            continue
        venue = f", {p.venue}" if p.venue else ""
        lines.append(f"- {p.cite_authors()}, *{p.title}*{venue} (arXiv {p.arxiv})")
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def _anchor(p: Paper) -> str:
    return "arxiv-" + p.arxiv.replace(".", "-")


def render_markdown(read_record: Callable[[str], dict | None] | None = None) -> str:
    """``docs/papers.md``: the index table, then one section per paper."""
    papers = all_papers()
    out = [
        "# Papers",
        "",
        "<!-- Generated by `make papers` (python -m linearlab.papers --write) from the `declare_paper(...)`",
        "     records in src/linearlab and the reference runs in src/linearlab/records/. Do not edit. -->",
        "",
        f"{summary_line()} Each paper is declared once, in the module that implements it; "
        "`linearlab papers` lists them and `linearlab papers <arXiv id or words>` prints one entry. "
        '"Ours" is read from the recipe\'s reference run (`linearlab report <run-dir> --record`); '
        "a recipe without one says so.",
        "",
    ]
    for area in AREAS:
        group = [p for p in papers if p.area == area]
        if not group:
            continue
        out += [
            f"## {area[0].upper() + area[1:]}",
            "",
            "| paper | arXiv | status | reproduce |",
            "|---|---|---|---|",
        ]
        for p in group:
            runs = ", ".join(f"`linearlab run {r}`" for r in p.recipes) or "-"
            out.append(
                f"| [{_md_cell(p.label)}](#{_anchor(p)}) | [{p.arxiv}]({p.url}) "
                f"| {p.status} | {_md_cell(runs)} |"
            )
        out.append("")
        for p in group:
            venue = f", {p.venue}" if p.venue else ""
            out += [
                f'<a id="{_anchor(p)}"></a>',
                f"### {p.label}",
                "",
                f"{p.authors} ({p.year}){venue}. [arXiv {p.arxiv}]({p.url}). **Status: {p.status}.**",
                "",
            ]
            if p.status == "planned":
                out += [f"- Note: {p.note}"]
                if p.claim:
                    out += [f"- Paper: {p.claim}"]
                out.append("")
                continue
            out += ["```python", *import_lines(p), "", p.usage.strip("\n"), "```", ""]
            if p.registered:
                regs = ", ".join(f"{e.partition(':')[0]} `{e.partition(':')[2]}`" for e in p.registered)
                out.append(f"- Registered: {regs}")
            runs = [f"`linearlab run {r}`" for r in p.recipes] + [f"`{c}`" for c in p.commands]
            out.append(f"- Reproduce: {', '.join(runs) if runs else 'no recipe reproduces its claim yet'}")
            out.append(f"- Paper: {p.claim or '(no number recorded for the paper)'}")
            ours = measured(p, read_record) if p.recipes else ["no recipe, so no measured figure"]
            out += [f"- Ours: {ours[0]}"] if len(ours) == 1 else ["- Ours:", *(f"  - {o}" for o in ours)]
            if p.note:
                out.append(f"- Note: {p.note}")
            out.append(f"- Declared in `{p.declared_in}`")
            out.append("")
    return "\n".join(out).rstrip() + "\n"


def replace_block(text: str, block: str, start: str = CITATIONS_START, end: str = CITATIONS_END) -> str:
    """``text`` with what lies between the ``start`` and ``end`` markers replaced by ``block``."""
    i, j = text.find(start), text.find(end)
    if i < 0 or j < i:
        raise ValueError(f"README.md: markers {start} ... {end} not found (in that order)")
    return text[: i + len(start)] + "\n" + block + "\n" + text[j:]


def generated_files(root: Path) -> dict[Path, str]:
    """Path -> expected content of every file generated from the records, under checkout ``root``."""
    readme = root / "README.md"
    return {
        root / DOCS_PATH: render_markdown(),
        readme: replace_block(readme.read_text(encoding="utf-8"), render_citations()),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m linearlab.papers --write | --check`` from a checkout (``make papers``)."""
    import argparse

    from linearlab.io import atomic_write_text

    parser = argparse.ArgumentParser(prog="python -m linearlab.papers", description=main.__doc__)
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--write", action="store_true", help="regenerate docs/papers.md and the README citations"
    )
    mode.add_argument("--check", action="store_true", help="exit 1 if either is out of date")
    args = parser.parse_args(argv)
    root = Path(__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not (root / "README.md").is_file():
        print(f"{parser.prog}: run it from a linearlab checkout ({root} is not one)", file=sys.stderr)
        return 2
    stale = []
    for path, text in generated_files(root).items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            stale.append(path.relative_to(root))
            if args.write:
                atomic_write_text(path, text)
    verb = "rewrote" if args.write else "out of date (run `make papers`)"
    print(f"{verb}: {', '.join(map(str, stale))}" if stale else "up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    # run through the package's module, not this __main__ copy, so the declarations fill one registry
    from linearlab.papers import main as _main

    raise SystemExit(_main())
