# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := closedloop controller drivers planners simulators tests benchmarks

.PHONY: demo test test-fast lint typecheck clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# A CPU wheel of torch 2.13.0 is on disk; unpinned, pip would download a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

DEMO_DB := campaigns/demo-trmc-$(shell date +%Y%m%d-%H%M%S).sqlite

# The main job on the embedded default: validate every example, then a full simulated TRMC campaign
# (virtual time: hours of instrument time in about a minute), its status, and its HTML report.
demo: $(STAMP)
	$(BIN)/closedloop validate protocols/*.yaml
	$(BIN)/closedloop run protocols/trmc_opv_blend.yaml --sim --quiet --no-report --db $(DEMO_DB)
	$(BIN)/closedloop status $(DEMO_DB)
	$(BIN)/closedloop report $(DEMO_DB)

# Everything: lint, type check, every test (slow end-to-end ones included). CI runs this.
test: lint typecheck
	$(BIN)/python -m pytest -q -n 2

# The inner loop: lint and the tests not marked slow (real subprocess campaigns, kill-and-resume, ...).
test-fast: lint
	$(BIN)/python -m pytest -q -n 2 -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check $(SOURCES)

typecheck: $(STAMP)
	$(BIN)/python tests/typecheck.py

clean-venv:
	rm -rf $(VENV)
