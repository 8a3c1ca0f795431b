# Quick start: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use and install the project into it.
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build that ships on these machines; an unpinned
# `torch` would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint bench install papers

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/linearlab run mqar

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: install
	$(VENV)/bin/linearlab bench ops

# docs/papers.md and the README's citation list, generated from the declare_paper(...) records and
# the recipes' reference runs (src/linearlab/records/); tests/test_papers.py checks they are current
papers: install
	$(PY) -m linearlab.papers --write
