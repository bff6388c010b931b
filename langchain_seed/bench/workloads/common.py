"""What the workloads share: method lists, chat rendering, greedy runs, run outputs."""

from __future__ import annotations

from typing import Any

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.results import RunOutput
from langchain_seed.engine.config import SamplingParams

ALL_METHODS = ("sequential", "hf_batched", "hf_assisted", "seed_fcfs", "batched_ar", "ours")
"""Every method a generation workload runs by default (``ours_nocache`` is prefix-only)."""


def chat_text(tokenizer: Any, user: str) -> str:
    """``user`` as one user turn through the model's chat template, ready for the reply."""
    return str(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
        )
    )


def chat_prompt_template(tokenizer: Any, user_template: str = "{question}") -> str:
    """An f-string prompt template: the chat template around ``user_template``.

    Lets a plain-text LLM (``SeedLLM`` and the transformers baseline alike) see exactly the
    chat-formatted prompt an instruct model expects. Braces of the chat template's own text
    are escaped; ``user_template`` keeps its variables.
    """
    sentinel = "\x00SEED_SLOT\x00"
    text = chat_text(tokenizer, sentinel).replace("{", "{{").replace("}", "}}")
    return text.replace(sentinel, user_template)


def run_greedy(backend: GenBackend, prompts: list[list[int]], max_tokens: int) -> RunOutput:
    """Every prompt at once, greedy; outputs are the generated token ids."""
    results = backend.generate(prompts, SamplingParams(temperature=0.0, max_tokens=max_tokens))
    outputs = [row[0].token_ids for row in results]
    return RunOutput(
        outputs=outputs,
        generated_tokens=sum(len(o) for o in outputs),
        stats=backend.stats(),
        info=dict(backend.info),
    )


def runnable_output(
    backend: GenBackend, outputs: list[Any], stats: dict[str, float | int | None]
) -> RunOutput:
    """A runnable's outputs; generated tokens are the backend's count (in ``stats``)."""
    return RunOutput(
        outputs=outputs,
        generated_tokens=int(stats.get("generated_tokens") or 0),
        stats=stats,
        info=dict(backend.info),
    )


def field_of(obj: Any, name: str) -> Any:
    """``obj[name]`` for mappings, ``obj.name`` otherwise (``None`` when absent)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)
