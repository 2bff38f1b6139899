# The study's two commands: `make study` (set up, run everything on config.yaml) and `make test`.
# CONSTRAINTS pins torch to the CPU build available on the project's machines; `make setup CONSTRAINTS=` drops it.
# setup installs the dev extras: the study's dependencies (the `study` extras, beside the engine's own) and the
# test tools, everything `make study` and CI (.ci/run) need.
PYTHON ?= python3
VENV ?= .venv
CONFIG ?= config.yaml
CORES ?= all
CONSTRAINTS ?= constraints/cpu.txt
SNAKEMAKE_ARGS ?=
# The HTML report of every figure with its caption (snakemake --report), written by `make study` and `make report`.
REPORT ?= report.html
# The output directory of the CI study (`output_dir` of configs/ci.yaml), what `make clean-ci` removes.
CI_OUTPUT ?= results-ci
BIN := $(VENV)/bin
# kronfluence, the reference of tests/test_conformance.py, without its dependencies: its torchvision requirement
# would replace the CPU torch (the others are here or listed; accelerate also comes with peft).
KRONFLUENCE := kronfluence==1.0.1 einconv einops opt_einsum accelerate
STAMP := $(VENV)/.installed

.PHONY: setup study report test lint clean-ci

$(STAMP): pyproject.toml $(wildcard $(CONSTRAINTS))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(KRONFLUENCE)
	touch $(STAMP)

setup: $(STAMP)

study: $(STAMP)
	$(BIN)/influence-study check-config $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --profile workflow/profiles/default $(SNAKEMAKE_ARGS)
	$(BIN)/snakemake --configfile $(CONFIG) --report $(REPORT)
	$(BIN)/influence-study summary $(CONFIG)

report: $(STAMP)
	$(BIN)/snakemake --configfile $(CONFIG) --report $(REPORT)

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/snakemake --lint --configfile $(CONFIG)

# Remove what `make study CONFIG=configs/ci.yaml` wrote: the CI study's outputs (the write-protected factors too) and
# Snakemake's records of them in .snakemake/ (version info and incomplete marks; `--cleanup-metadata` complains
# about the files it kept no record of, hence the `|| true`). The HTML report is the default study's name, kept.
clean-ci:
	@if [ -d "$(CI_OUTPUT)" ]; then \
		if [ -x $(BIN)/snakemake ]; then \
			$(BIN)/snakemake --configfile configs/ci.yaml --cleanup-metadata $$(find "$(CI_OUTPUT)" -mindepth 1) \
				>/dev/null 2>&1 || true; \
		fi; \
		chmod -R u+w "$(CI_OUTPUT)" && rm -rf "$(CI_OUTPUT)" && echo "removed $(CI_OUTPUT)/"; \
	else echo "no $(CI_OUTPUT)/ to remove"; fi
