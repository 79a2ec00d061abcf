# The two commands of the README: `make book` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# OpenMP threads sleep instead of spinning while they wait (rnnbook/__init__.py says why).
export OMP_WAIT_POLICY := PASSIVE

.PHONY: book book-quick test bench bench-quick assets env lab clean

# The environment: created if missing, (re)installed when requirements.txt or pyproject.toml change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	$(PY) -m ipykernel install --prefix $(VENV) --name python3 --env OMP_WAIT_POLICY PASSIVE > /dev/null
	touch $(STAMP)

env: $(STAMP)

# MathJax and the widget manager from the npm registry, into _extra/vendor (served offline by the book).
assets:
	bash tools/vendor_assets.sh

# The published book: every chapter executed in the full profile, into _build/html.
book: env assets
	$(PY) tools/build_book.py --profile full

# The same book at test sizes, into _build/quick/_build/html.
book-quick: env assets
	$(PY) tools/build_book.py --profile quick

test: env assets
	$(PY) -m pytest -q

# Benchmarks of rnnbook's kernels against plain-torch baselines (not part of the tests): _build/bench.json.
bench: env
	$(PY) bench/run.py

bench-quick: env
	$(PY) bench/run.py --quick

# JupyterLab on the chapters, for running them interactively (widgets need a live kernel).
lab: env
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-lab.txt
	$(VENV)/bin/jupyter lab chapters/

clean:
	rm -rf _build _extra node_modules
