# Two commands: `make run` (the study on the default config) and `make test` (the test suite).
# Both create .venv with pinned dependencies on first use.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SNAKEMAKE_ARGS ?=
# Another config on top of config/config.yaml, e.g. CONFIG=config/fonts.yaml (FONTS alone).
CONFIG ?=

.PHONY: run test lint mutation golden clean fashion-data

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "Python 3.11 is required (set PYTHON=python3.11)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	# torchattacks is only a test reference; its metadata pins requests~=2.25 (snakemake needs newer), so no deps.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps torchattacks==3.5.1
	touch $@

# Fashion-MNIST offline: Debian's dataset-fashion-mnist, installed where it is missing and apt-get can (root).
fashion-data:
	@bash scripts/install_fashion_mnist.sh

run: $(STAMP) fashion-data
	$(BIN)/snakemake --cores all --show-failed-logs $(if $(CONFIG),--configfile $(CONFIG)) $(SNAKEMAKE_ARGS)

test: $(STAMP) fashion-data
	$(BIN)/python -m pytest -q -ra

# Mutation testing of the core modules, each against its own tests (tests/mutation.toml); about 35 min on
# 2 cores for all six. MODULES=attacks (for instance) runs some; the report is build/mutation/report.md.
MODULES ?=
$(VENV)/.mutation-stamp: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test,mutation]'
	touch $@

mutation: $(VENV)/.mutation-stamp fashion-data
	$(BIN)/python scripts/mutation.py $(MODULES)

# Rewrite the report text and the dataset errors the tests compare word for word (tests/golden/), after an
# intended change of wording or of a statistic; read `git diff tests/golden` before committing it.
golden: $(STAMP)
	UPDATE_GOLDEN=1 $(BIN)/python -m pytest -q -rs tests/test_claims.py tests/test_datasets.py -k golden

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean:
	rm -rf results logs .snakemake
