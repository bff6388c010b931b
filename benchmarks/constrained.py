"""Constrained generation with and without speculation, next to unconstrained.

The same chat prompts (GSM8K questions asking for a JSON answer) decoded four ways on one
engine configuration each: {unconstrained, JSON-schema grammar} x {no drafts
(``policy="autoregressive"``), the default speculation (``policy="batched"``, n-gram)}.
Reports generated tokens/s, acceptance rate and mean accepted length, all greedy. Then
8 forced tool calls through ``ChatSeed.bind_tools(..., tool_choice="required")`` with no
drafts, n-gram drafts, and n-gram + grammar drafts (the text the grammar forces: the call's
header, keys and punctuation).

    python benchmarks/constrained.py --questions 16 --max-tokens 96
"""

from __future__ import annotations

import argparse
import json
import time

SCHEMA = {
    "type": "object",
    "properties": {
        "reasoning": {"type": "string", "maxLength": 300},
        "answer": {"type": "integer"},
    },
    "required": ["reasoning", "answer"],
}
SYSTEM = (
    "Solve the problem. Reply with JSON only: "
    '{"reasoning": "<one or two sentences>", "answer": <integer>}'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args()

    from langchain_seed.datasets import gsm8k_rows
    from langchain_seed.engine import Engine, EngineConfig, SamplingParams
    from langchain_seed.engine.config import Grammar

    questions = [row["question"] for row in gsm8k_rows()[: args.questions]]
    rows = []
    for policy, drafters in (("autoregressive", ()), ("batched", ("ngram", "grammar"))):
        for constrained in (False, True):
            # a fresh engine per row: the draft policy learns nothing from another row
            config = EngineConfig(policy=policy, drafters=drafters, dtype=args.dtype)
            with Engine(config) as engine:
                prompts = [
                    engine.render_chat(
                        [{"role": "system", "content": SYSTEM}, {"role": "user", "content": q}]
                    )
                    for q in questions
                ]
                engine.generate(prompts[:2], SamplingParams(max_tokens=8))  # warm up
                grammar = Grammar.json_schema(SCHEMA) if constrained else None
                params = SamplingParams(max_tokens=args.max_tokens, grammar=grammar)
                engine.reset_stats()
                t0 = time.perf_counter()
                results = engine.generate(prompts, params)
                seconds = time.perf_counter() - t0
                spec = engine.stats().spec
            tokens = sum(len(r.token_ids) for r in results)
            parsed = 0
            for r in results:
                try:
                    json.loads(r.text, strict=False)
                    parsed += 1
                except json.JSONDecodeError:
                    pass
            row = {
                "policy": policy,
                "constrained": constrained,
                "tokens": tokens,
                "seconds": round(seconds, 2),
                "tokens_per_s": round(tokens / seconds, 1),
                "drafted": spec.drafted,
                "acceptance_rate": round(spec.acceptance_rate, 3),
                "mean_accepted_length": round(spec.mean_accepted_length, 3),
                "valid_json": f"{parsed}/{len(results)}",
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    base = {(r["constrained"]): r for r in rows if r["policy"] == "autoregressive"}
    for r in rows:
        if r["policy"] == "batched":
            ratio = r["tokens_per_s"] / base[r["constrained"]]["tokens_per_s"]
            print(f"constrained={r['constrained']}: speculation {ratio:.2f}x no drafts")
    rows.extend(tool_rows(args.dtype))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


CITIES = ("Paris", "Rome", "Oslo", "Lima", "Cairo", "Tokyo", "Quito", "Dakar")


def tool_rows(dtype: str) -> list[dict]:
    """8 forced tool calls, one engine per drafter setting."""
    from langchain_core.tools import tool

    from langchain_seed import ChatSeed
    from langchain_seed.engine import Engine, EngineConfig

    @tool
    def get_weather(city: str, unit: str) -> str:
        """Get the current weather in a city, in celsius or fahrenheit."""
        return "sunny"

    @tool
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    rows = []
    base = None
    settings = (("autoregressive", ()), ("batched", ("ngram",)), ("batched", ("ngram", "grammar")))
    for policy, drafters in settings:
        with Engine(EngineConfig(policy=policy, drafters=drafters, dtype=dtype)) as engine:
            chat = ChatSeed(engine=engine, max_tokens=64).bind_tools(
                [get_weather, add], tool_choice="required", parallel_tool_calls=False
            )
            chat.invoke("warm up")
            engine.reset_stats()
            t0 = time.perf_counter()
            outs = chat.batch([f"What is the weather in {c}?" for c in CITIES])
            seconds = time.perf_counter() - t0
            spec = engine.stats().spec
        base = base or seconds
        row = {
            "workload": "tool calls",
            "policy": policy,
            "drafters": list(drafters),
            "seconds": round(seconds, 2),
            "x_no_drafts": round(base / seconds, 2),
            "mean_accepted_length": round(spec.mean_accepted_length, 3),
            "accepted_by_drafter": dict(spec.accepted_by_drafter),
            "drafted_by_drafter": dict(spec.drafted_by_drafter),
            "valid_calls": f"{sum(bool(o.tool_calls) for o in outs)}/{len(outs)}",
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


if __name__ == "__main__":
    main()
