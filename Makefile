# Corral: `make demo` and `make test` set everything up (idempotently) and run.
UV := /opt/corral-tools/uv/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
export UV_PYTHON := /usr/bin/python3
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup test lint typecheck unit demo bench clean

setup:
	@bash scripts/setup.sh

lint: setup
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: setup
	$(VENV)/bin/mypy

unit: setup
	$(VENV)/bin/pytest -q -p no:cacheprovider

test: lint typecheck unit

demo: setup
	$(PY) -m corral.demo

bench: setup
	$(PY) bench/jobs.py
	$(PY) bench/list.py
	$(PY) bench/rpc.py
	$(PY) bench/boot.py
	$(PY) bench/hotplug.py
	$(PY) bench/migrate.py
	$(PY) bench/ovn_migrate.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache
