"""Engine results -> LangChain output fields (shared by ``SeedLLM`` and ``ChatSeed``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from langchain_core.messages.ai import UsageMetadata

if TYPE_CHECKING:
    from langchain_seed.engine import GenerationResult
    from langchain_seed.engine.client import EngineClient


def generation_info(result: GenerationResult, model_name: str) -> dict[str, Any]:
    """``generation_info`` / ``response_metadata`` of one sample."""
    return {
        "finish_reason": result.finish_reason,
        "model_name": model_name,
        "spec_stats": result.stats.to_dict(),
    }


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
