"""Write ``fla_0_6_signatures.json``: the Python signatures of fla's ops that linearlab re-implements.

Reads the op definitions straight out of a ``fla-core`` wheel (a zip file) with :mod:`ast`: fla is
never imported (it needs Triton and a GPU) and none of its code is copied, only each ``def`` line's
parameter names, order and default values (as source text, which is their ``repr`` for the
literals fla uses). ``test_fla_signatures.py`` compares linearlab's ``inspect.signature`` with the
result, so a change on either side shows up as a failing test.

Refresh it for a new fla release (the ops of fla >= 0.5 live in ``fla-core``)::

    pip download fla-core==0.6.0 --no-deps -d /tmp/fla
    python tests/ops/dump_fla_signatures.py /tmp/fla/fla_core-0.6.0-py3-none-any.whl \\
        --out tests/ops/fla_0_6_signatures.json
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import sys
import zipfile
from pathlib import Path

#: op name -> the file of the fla-core wheel that defines it. The public ops are the names
#: ``fla.ops`` exports; the ``naive_*`` references live in each family's ``naive.py``.
PUBLIC_OPS = {
    "chunk_gla": "fla/ops/gla/chunk.py",
    "fused_recurrent_gla": "fla/ops/gla/fused_recurrent.py",
    "chunk_simple_gla": "fla/ops/simple_gla/chunk.py",
    "fused_recurrent_simple_gla": "fla/ops/simple_gla/fused_recurrent.py",
    "chunk_retention": "fla/ops/retention/chunk.py",
    "fused_recurrent_retention": "fla/ops/retention/fused_recurrent.py",
    "chunk_lightning_attn": "fla/ops/lightning_attn/chunk.py",
    "fused_recurrent_lightning_attn": "fla/ops/lightning_attn/fused_recurrent.py",
    "chunk_linear_attn": "fla/ops/linear_attn/chunk.py",
    "fused_recurrent_linear_attn": "fla/ops/linear_attn/fused_recurrent.py",
    "chunk_delta_rule": "fla/ops/delta_rule/chunk.py",
    "fused_recurrent_delta_rule": "fla/ops/delta_rule/fused_recurrent.py",
    "chunk_gated_delta_rule": "fla/ops/gated_delta_rule/chunk.py",
    "fused_recurrent_gated_delta_rule": "fla/ops/gated_delta_rule/fused_recurrent.py",
}
REFERENCE_OPS = {
    "naive_recurrent_gla": "fla/ops/gla/naive.py",
    "naive_recurrent_simple_gla": "fla/ops/simple_gla/naive.py",
    "naive_recurrent_linear_attn": "fla/ops/linear_attn/naive.py",
    "naive_recurrent_gated_delta_rule": "fla/ops/gated_delta_rule/naive.py",
}


def _signature(fn: ast.FunctionDef) -> dict:
    """``{"params": [[name, default source or None], ...], "keyword_only": [...], "var_keyword": name}``."""
    args = fn.args
    if args.posonlyargs or args.vararg:
        raise SystemExit(f"{fn.name}: positional-only or *args parameters are not handled")
    positional = args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    return {
        "params": [[a.arg, None if d is None else ast.unparse(d)] for a, d in zip(positional, defaults)],
        "keyword_only": [
            [a.arg, None if d is None else ast.unparse(d)] for a, d in zip(args.kwonlyargs, args.kw_defaults)
        ],
        "var_keyword": None if args.kwarg is None else args.kwarg.arg,
    }


def dump(wheel: Path) -> dict:
    match = re.match(r"fla_core-([^-]+)-", wheel.name)
    if match is None:
        raise SystemExit(f"{wheel}: expected a fla_core-<version>-*.whl file")
    out: dict = {
        "_format": (
            "op -> {file, params: [[name, default]], keyword_only, var_keyword}; default is the "
            "default's source text (its repr), null for a required parameter"
        ),
        "fla_core_version": match.group(1),
        "wheel": wheel.name,
        "public": {},
        "reference": {},
    }
    with zipfile.ZipFile(wheel) as zf:
        for section, ops in (("public", PUBLIC_OPS), ("reference", REFERENCE_OPS)):
            for name, path in ops.items():
                tree = ast.parse(zf.read(path).decode())
                defs = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name]
                if len(defs) != 1:
                    raise SystemExit(f"{path}: expected one top-level def {name}, found {len(defs)}")
                out[section][name] = {"file": path, **_signature(defs[0])}
    return out


def _format(data: dict) -> str:
    """JSON with one ``[name, default]`` pair per line (readable diffs when fla changes)."""
    text = json.dumps(data, indent=1)
    # json puts each pair's two items on lines of their own: join them back
    pair = re.compile(r'\[\n\s*("[^"]*"),\n\s*("(?:[^"\\]|\\.)*"|null)\n\s*\]')
    return pair.sub(r"[\1, \2]", text) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("wheel", type=Path, help="a fla_core-<version>-py3-none-any.whl file")
    parser.add_argument("--out", type=Path, help="write here (default: stdout)")
    args = parser.parse_args(argv)
    text = _format(dump(args.wheel))
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
