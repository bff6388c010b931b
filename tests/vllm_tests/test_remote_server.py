"""ToT and SC over ``langchain_openai.ChatOpenAI`` pointed at a real vLLM server.

The server (``python -m vllm.entrypoints.openai.api_server``) is started on 127.0.0.1 by the
``vllm_server`` fixture and stopped after this module. An httpx hook records every request
the client sends, so the tests see what went over the wire.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from langchain_openai import ChatOpenAI
from vllm_settings import BACKEND_KWARGS

from langchain_seed import ChatSeed, SelfConsistency
from langchain_seed.datasets import gsm8k_rows
from langchain_seed.tree_of_thoughts import TreeOfThoughts

pytestmark = [pytest.mark.vllm, pytest.mark.slow]


class Wire:
    """Chat-completion requests sent, and the most in flight at once."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def sent(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/chat/completions"):
            with self._lock:
                self.bodies.append(json.loads(request.content))
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def received(self, response: httpx.Response) -> None:
        if response.request.url.path.endswith("/chat/completions"):
            with self._lock:
                self.in_flight -= 1

    async def asent(self, request: httpx.Request) -> None:
        self.sent(request)

    async def areceived(self, response: httpx.Response) -> None:
        self.received(response)


def _chat(url: str, wire: Wire, **kwargs: Any) -> ChatOpenAI:
    hooks = {"request": [wire.sent], "response": [wire.received]}
    ahooks = {"request": [wire.asent], "response": [wire.areceived]}
    return ChatOpenAI(
        base_url=url,
        api_key="EMPTY",  # type: ignore[arg-type]
        model="smollm2",
        max_retries=0,
        http_client=httpx.Client(event_hooks=hooks, timeout=300),
        http_async_client=httpx.AsyncClient(event_hooks=ahooks, timeout=300),
        **kwargs,
    )


def _questions(count: int) -> list[dict[str, str]]:
    return [{"question": row["question"]} for row in gsm8k_rows(count)]


def test_self_consistency_sends_one_request_with_n_per_question(vllm_server: str) -> None:
    wire = Wire()
    sc = SelfConsistency(llm=_chat(vllm_server, wire), n=6, max_tokens=96, seed=5)
    outs = sc.batch(_questions(3))
    assert len(wire.bodies) == 3  # one prefill per question, the server fans out n
    assert all(b["n"] == 6 and b["temperature"] == 0.7 and b["seed"] == 5 for b in wire.bodies)
    assert all(96 in (b.get("max_tokens"), b.get("max_completion_tokens")) for b in wire.bodies)
    assert wire.most_in_flight == 3  # every question at once
    for out in outs:
        assert len(out["samples"]) == 6
        assert sum(out["votes"].values()) + out["stats"]["unparsed"] == 6


def test_max_concurrency_bounds_requests_in_flight(vllm_server: str) -> None:
    wire = Wire()
    sc = SelfConsistency(llm=_chat(vllm_server, wire), n=2, max_tokens=32)
    sc.batch(_questions(4), config={"max_concurrency": 2})
    assert len(wire.bodies) == 4
    assert wire.most_in_flight <= 2


async def test_async_self_consistency_over_the_server(vllm_server: str) -> None:
    wire = Wire()
    sc = SelfConsistency(llm=_chat(vllm_server, wire), n=4, max_tokens=64, seed=2)
    out = await sc.ainvoke(_questions(1)[0])
    assert len(out["samples"]) == 4
    assert len(wire.bodies) == 1 and wire.bodies[0]["n"] == 4


def test_early_stop_sends_no_more_rounds_once_decided(vllm_server: str) -> None:
    wire = Wire()
    sc = SelfConsistency(
        llm=_chat(vllm_server, wire), n=12, round_size=4, early_stop=True, max_tokens=64,
        temperature=0.0,
    )  # fmt: skip
    out = sc.invoke(_questions(1)[0])
    # Greedy samples agree: after the first round of 4 the leader holds 4 votes and can
    # still be caught by the 8 samples left, after the second (8 vs 4 left) it cannot.
    if out["stats"]["unparsed"] == 0:
        assert out["stats"]["early_stopped"] is True
        assert len(wire.bodies) == out["stats"]["rounds"] < 3
    # greedy: one request of n=1 per round (vLLM refuses greedy n > 1), its sample 4 times
    assert all(b["n"] == 1 for b in wire.bodies)
    assert len(out["samples"]) == 4 * len(wire.bodies)


def _tree(llm: Any, config: dict[str, Any] | None = None) -> dict[str, Any]:
    tot = TreeOfThoughts.from_task(
        "game24", llm=llm, breadth=2, steps=2, n_evaluate_sample=1, max_tokens=40, temperature=0.0
    )
    return tot.invoke({"input": "4 5 6 10"}, config=config)


def test_tree_of_thoughts_over_the_server_matches_in_process_vllm(vllm_server: str) -> None:
    wire = Wire()
    remote = _tree(_chat(vllm_server, wire), config={"max_concurrency": 4})
    local = _tree(ChatSeed(backend="vllm", dtype="float32", backend_kwargs=BACKEND_KWARGS))
    assert len(remote["tree"]) >= 3
    assert remote["tree"] == local["tree"]
    assert remote["answer"] == local["answer"]
    assert all(b["temperature"] == 0.0 for b in wire.bodies)
    # one request per prompt of every phase, never more in flight than max_concurrency
    assert len(wire.bodies) == sum(p["prompts"] for p in remote["stats"]["phases"])
    assert wire.most_in_flight <= 4
