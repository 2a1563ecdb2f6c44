# The two commands: `make repro` runs the study that params.yaml describes (the miniature on a fresh clone),
# `make test` runs the test suite. Both create .venv and install the project when needed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Stage commands call `python`: it must be the environment's.
export PATH := $(abspath $(BIN)):$(PATH)
export DVC_NO_ANALYTICS := 1
export PYTHONUNBUFFERED := 1

.PHONY: repro test install clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# validate first: DVC fails on its own, without naming the typo, when a key dvc.yaml interpolates is missing.
repro: $(STAMP)
	$(BIN)/python -m pipeline.stages.validate
	$(BIN)/dvc repro
	@echo
	@echo "Results: plots/report.md (the page), metrics/ranking.json (tau, time ratio per setting), metrics/finetune/*.json (per run),"
	@echo "         plots/figures/*.png (Figure 1 tau bars, per-setting scatter); 'dvc metrics show', 'dvc plots show'."

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
