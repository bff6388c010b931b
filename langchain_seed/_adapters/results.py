"""Engine results -> LangChain output fields (shared by ``SeedLLM`` and ``ChatSeed``), and back.

:func:`spec_stats_of` reads the typed counters back from a generation (the reasoning
layer's samples).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import Generation

from langchain_seed.engine.stats import SpecStats

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult, TokenLogprob
    from langchain_seed.engine.serving.client import EngineClient


def generation_info(
    result: GenerationResult, engine: EngineClient, *, streamed: int = 0
) -> dict[str, Any]:
    """``generation_info`` / ``response_metadata`` of one sample.

    Args:
        result: the finished request.
        engine: the engine that ran it (its model name, its tokens' bytes).
        streamed: entries of ``result.logprobs`` already sent with streamed chunks; the
            closing chunk carries the rest, so the chunks add up to each entry once.
    """
    info: dict[str, Any] = {
        "finish_reason": result.finish_reason,
        "model_name": engine.model_name,
        "spec_stats": result.stats.to_dict(),
    }
    if result.logprobs is not None:
        info.update(logprobs_metadata(engine, result.logprobs[streamed:]))
    return info


def spec_stats_of(generation: Generation) -> SpecStats | None:
    """The speculation counters :func:`generation_info` wrote for one sample, typed again.

    Read from ``generation_info`` (``SeedLLM``) or the message's ``response_metadata``
    (``ChatSeed``); ``None`` for a generation no engine-backed model made.
    """
    info = generation.generation_info or {}
    message = getattr(generation, "message", None)
    if not info.get("spec_stats") and message is not None:
        info = message.response_metadata or {}
    data = info.get("spec_stats")
    return SpecStats.from_dict(data) if data else None


def logprobs_metadata(engine: EngineClient, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """``{"logprobs": {"content": [...]}}`` in OpenAI's chat format, as ``ChatOpenAI`` has it.

    Each entry: ``token`` (its text; a token holding part of a character shows U+FFFD),
    ``logprob``, ``bytes`` (the token's exact UTF-8 bytes) and ``top_logprobs`` (the most
    likely tokens at its position, each with ``token``, ``logprob`` and ``bytes``).
    """
    ids = sorted({e.token_id for e in entries} | {t for e in entries for t, _ in e.top})
    raw = dict(zip(ids, engine.token_bytes(ids))) if ids else {}

    def token(token_id: int, logprob: float) -> dict[str, Any]:
        data = raw[token_id]
        return {
            "token": data.decode("utf-8", errors="replace"),
            "logprob": logprob,
            "bytes": list(data),
        }

    content = [
        {**token(e.token_id, e.logprob), "top_logprobs": [token(t, v) for t, v in e.top]}
        for e in entries
    ]
    return {"logprobs": {"content": content}}


def usage_metadata(result: GenerationResult) -> UsageMetadata:
    """Token counts of one sample.

    Prompt tokens whose KV came from the prefix cache or a group sibling are reported as
    ``input_token_details['cache_read']``.
    """
    output_tokens = len(result.token_ids)
    usage = UsageMetadata(
        input_tokens=result.prompt_tokens,
        output_tokens=output_tokens,
        total_tokens=result.prompt_tokens + output_tokens,
    )
    if result.stats.cached_prompt_tokens:
        usage["input_token_details"] = {"cache_read": result.stats.cached_prompt_tokens}
    return usage


def llm_output(engine: EngineClient) -> dict[str, Any]:
    """``llm_output`` of a call: the model name and the engine-wide stats after the call."""
    return {"model_name": engine.model_name, "engine_stats": engine.stats().to_dict()}
