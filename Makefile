# Two commands for a new user: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-venv

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

test: $(STAMP)
	$(BIN)/ruff check closedloop controller drivers planners simulators tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check closedloop controller drivers planners simulators tests benchmarks

clean-venv:
	rm -rf $(VENV)
