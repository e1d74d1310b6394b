# One-command entry points. Each creates .venv when it is missing.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

SD_VENV := .venv-sd
SD_BIN := $(SD_VENV)/bin

.PHONY: install test test-spatialdata lint demo bench clean

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

# The SpatialData export in its own environment (spatialdata pins an older dask than the main one). The
# export is torch-free: the project's dependencies without torch's family, the extra, and pytest.
$(SD_BIN)/python: pyproject.toml
	$(PY) -m venv $(SD_VENV)
	$(SD_BIN)/pip install -q --upgrade pip
	$(SD_BIN)/python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
		print('\n'.join(d for d in p['dependencies'] + p['optional-dependencies']['spatialdata'] \
		if not d.startswith(('torch', 'segment-anything', 'timm'))))" > $(SD_VENV)/requirements.txt
	$(SD_BIN)/pip install -q pytest jsonschema -r $(SD_VENV)/requirements.txt
	$(SD_BIN)/pip install -q --no-deps -e .
	touch $(SD_BIN)/python

test-spatialdata: $(SD_BIN)/python
	$(SD_BIN)/python -m pytest -q -p no:cacheprovider tests/export/test_spatialdata.py

demo: install
	$(BIN)/wsiseg demo --out demo-output --overwrite

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf demo-output .pytest_cache .mypy_cache .ruff_cache $(SD_VENV)
