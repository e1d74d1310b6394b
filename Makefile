# One-command entry points. Each creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench clean

$(BIN)/wsiseg: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch 2.14.1 + torchvision 0.29.1 import together on CPU-only machines (see README).
	$(BIN)/pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(BIN)/pip install -q -e ".[test]"
	touch $(BIN)/wsiseg

install: $(BIN)/wsiseg

lint: install
	$(BIN)/ruff check wsiseg tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache

test: lint
	$(BIN)/python -m pytest -q

demo: install
	$(BIN)/wsiseg demo --out demo-output --overwrite

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache
