# Two commands set everything up on a fresh machine:
#   make demo   full audit of the built-in toy world, ending with the HTML report's path
#   make test   the test suite (what CI runs, then make docs)
#   make docs   the documentation site, strict and offline, tutorials executed (build/site); docs-serve serves it
PYTHON ?= python3
VENV ?= .venv
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build. Override e.g. TORCH_SPEC="torch==2.14.1".
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
OUT ?= runs/demo

.PHONY: install install-docs browser demo lint test docs docs-serve bench clean
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,tl]"
	touch $@

# The docs site's packages (extra "docs"), on top of the install above.
install-docs: $(VENV)/.installed-docs

$(VENV)/.installed-docs: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[dev,tl,docs]"
	touch $@

demo: install
	$(BIN)/unpact audit --out $(OUT)

# Headless Chromium for the report's browser test (Debian package; needs root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; the browser test will fail"

# Lint, format check and type check (clean on unpact/, viz/, tests/, bench/), then the tests.
LINTED := unpact viz tests bench notebooks/_build.py docs/_site
lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy

test: install browser lint
	$(BIN)/python -m pytest -q --durations=15 tests

# The documentation site: strict (a broken link, a docstring reference or a notebook error fails), offline, the
# tutorials executed on the micro toy world (built on first use under $$UNPACT_CACHE, else unpact's cache).
docs: install-docs
	$(BIN)/python docs/_site/make_site.py

docs-serve: install-docs
	$(BIN)/python docs/_site/make_site.py --serve

# Every benchmark, one table of ratios against references measured in the same run (bench/results/table.md,
# also written into docs/speed.md). AUDIT names a finished audit whose per-stage times go into the table.
AUDIT ?= runs/demo
bench: install
	$(BIN)/python bench/run.py --audit $(AUDIT)

clean:
	rm -rf $(VENV) runs build .pytest_cache
