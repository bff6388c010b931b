"""One request on vLLM (``backend="vllm"``): what it becomes in vLLM's terms, and its run.

:class:`~langchain_seed.backends.vllm.VLLMEngine` owns the engine, the loop and the futures;
this module translates: an engine configuration into ``AsyncEngineArgs`` keyword arguments
(:func:`engine_kwargs`), :class:`~langchain_seed.engine.config.SamplingParams` and grammars
into vLLM's sampling arguments, the samples of one prompt into one vLLM request with ``n``
(:func:`group_requests`), and runs one request into our results (:func:`generate`, with
vLLM's logprobs as ours: :func:`token_logprobs`); :func:`spec_metrics` reads vLLM's
speculative counters.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

from langchain_seed.engine.config import Grammar, SamplingParams, sample_seed
from langchain_seed.engine.execution.loading import ModelLoadError
from langchain_seed.engine.results import (
    GenerationResult,
    RequestCancelledError,
    TextDelta,
    TokenLogprob,
)
from langchain_seed.engine.stats import SpecStats

CPU_KV_CACHE_BYTES = 2 << 30
"""KV cache vLLM reserves on a CPU when ``backend_kwargs`` set neither
``kv_cache_memory_bytes`` nor ``gpu_memory_utilization`` (vLLM's own default, 92% of the
NUMA node's memory, refuses to start on a machine that runs anything else)."""

CPU_PREFILL_TOKENS = 32768
"""Step token budget on a CPU when neither ``max_model_len`` nor the checkpoint's context
length is known (without chunked prefill it must cover the longest prompt)."""


def sampling_kwargs(params: SamplingParams, n: int = 1) -> dict[str, Any]:
    """VLLM ``SamplingParams`` keyword arguments of a request of ``n`` samples.

    ``top_k=0`` and ``top_p=1`` switch the filters off in both engines; ``temperature=0``
    is greedy in both. The grammar is mapped by :func:`structured_outputs_kwargs`.
    """
    return {
        "n": n,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop),
        "stop_token_ids": list(params.stop_token_ids),
        "ignore_eos": params.ignore_eos,
        "seed": params.seed,
        "logprobs": params.logprobs,
    }


def structured_outputs_kwargs(grammar: Grammar) -> dict[str, Any]:
    """VLLM ``StructuredOutputsParams`` keyword arguments of a :class:`Grammar`."""
    if grammar.kind == "json_object":
        return {"json_object": True}
    field_of = {
        "json_schema": "json",
        "regex": "regex",
        "ebnf": "grammar",
        "structural_tag": "structural_tag",
    }
    return {field_of[grammar.kind]: grammar.spec}


def engine_kwargs(
    location: str,
    dtype: str,
    backend_kwargs: Mapping[str, Any],
    *,
    on_cpu: bool,
    model_context: int | None = None,
) -> dict[str, Any]:
    """``AsyncEngineArgs`` keyword arguments: ``backend_kwargs`` with the model and defaults.

    ``backend_kwargs`` win over every default. The defaults: the resolved model folder, the
    dtype, and on a CPU a KV cache of :data:`CPU_KV_CACHE_BYTES` and whole prefills (no
    chunked prefill, a step budget of the model's context ``model_context``).
    """
    # Logprobs of the distribution the sampler draws from, as the embedded engine reports
    # them (vLLM's default is the raw logits' distribution, before temperature and top-k/p).
    kwargs: dict[str, Any] = {
        "model": location,
        "dtype": dtype,
        "logprobs_mode": "processed_logprobs",
    }
    if on_cpu and not {"kv_cache_memory_bytes", "gpu_memory_utilization"} & backend_kwargs.keys():
        kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
    if on_cpu and not {"enable_chunked_prefill", "max_num_batched_tokens"} & backend_kwargs.keys():
        # A prefill split across steps rewinds a seeded request's generator, which a CPU
        # generator cannot do: vLLM's engine dies ("CPU Generator does not use offset").
        # Whole prefills only; the step's token budget must then hold the longest prompt.
        kwargs["enable_chunked_prefill"] = False
        max_len = backend_kwargs.get("max_model_len") or model_context or CPU_PREFILL_TOKENS
        kwargs["max_num_batched_tokens"] = max(int(max_len), 2048)
    kwargs.update(backend_kwargs)
    return kwargs


def model_context(location: str) -> int | None:
    """The checkpoint's context length (``max_position_embeddings``), if it can be read."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError):
        return None
    value = getattr(config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None


def load_tokenizer(location: str) -> Any:
    """The tokenizer of a local model folder (nothing is downloaded)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(location, local_files_only=True)
    except OSError as exc:
        raise ModelLoadError(f"Could not load the tokenizer of {location!r}: {exc}") from exc


def group_requests(
    ids: Seq[list[int]], params: Seq[SamplingParams], groups: Seq[str | None], streaming: bool
) -> list[list[int]]:
    """Indices of the prompts that go to vLLM as one request with ``n``.

    Consecutive prompts of one group, with the same tokens, whose params equal the first's
    but for a seed of ``seed + j`` (the adapters' samples of one prompt), form one request;
    a streamed request stays alone (it yields one sample).
    """
    packs: list[list[int]] = []
    for i in range(len(ids)):
        if packs and not streaming and groups[i] is not None:
            first = packs[-1][0]
            same = groups[first] == groups[i] and ids[first] == ids[i]
            if same and params[i] == sample_params(params[first], len(packs[-1])):
                packs[-1].append(i)
                continue
        packs.append([i])
    return packs


def sample_params(first: SamplingParams, j: int) -> SamplingParams:
    """The params of sample ``j`` of a request whose sample 0 has ``first``."""
    return first if first.seed is None else replace(first, seed=sample_seed(first.seed, j))


def token_logprobs(
    token_ids: Seq[int], entries: Seq[Mapping[int, Any]] | None, top: int
) -> list[TokenLogprob]:
    """VLLM's logprobs of ``token_ids`` (one ``{token_id: Logprob}`` per token) as ours.

    Each dict holds the sampled token and the ``top`` most likely ones (``rank`` 1..top).
    """
    out = []
    for token, entry in zip(token_ids, entries or ()):
        ranked = sorted(
            (lp.rank, int(t), float(lp.logprob))
            for t, lp in entry.items()
            if lp.rank is not None and lp.rank <= top and lp.logprob != float("-inf")
        )
        chosen = entry[token]
        out.append(
            TokenLogprob(int(token), float(chosen.logprob), tuple((t, v) for _, t, v in ranked))
        )
    return out


@dataclass
class VLLMRequest:
    """One vLLM request: the futures of its ``n`` samples."""

    ids: list[int]
    params: SamplingParams
    futures: list[Future[GenerationResult]]
    group: str | None
    on_delta: Callable[[str], None] | None
    request_id: str = field(default_factory=lambda: f"seed-{uuid.uuid4().hex[:16]}")
    task: Future[None] | None = None
    number: int = 0


async def generate(llm: Any, request: VLLMRequest) -> list[GenerationResult]:
    """Run ``request`` on vLLM's ``AsyncLLM`` and return one result per sample.

    Greedy samples of one prompt are one vLLM sample repeated (vLLM refuses greedy
    ``n > 1``); a streamed request hands each new piece to its ``on_delta``.

    Raises:
    RequestCancelledError: vLLM aborted the request.
    """
    from vllm import SamplingParams as VSamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

    n = len(request.futures)
    # Greedy samples of one prompt are one sample n times (vLLM refuses greedy n > 1).
    draws = 1 if request.params.greedy else n
    kwargs = sampling_kwargs(request.params, draws)
    if request.params.grammar is not None:
        structured = structured_outputs_kwargs(request.params.grammar)
        kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
    streaming = request.on_delta is not None
    kwargs["output_kind"] = RequestOutputKind.DELTA if streaming else RequestOutputKind.FINAL_ONLY
    sampling = VSamplingParams(**kwargs)
    texts, tokens = [""] * draws, [[] for _ in range(draws)]  # type: list[str], list[list[int]]
    logprobs: list[list[TokenLogprob]] = [[] for _ in range(draws)]
    top = request.params.logprobs
    finish: list[str | None] = [None] * draws
    cached = 0
    prompt = TokensPrompt(prompt_token_ids=request.ids)
    async for out in llm.generate(prompt, sampling, request.request_id):
        cached = int(getattr(out, "num_cached_tokens", 0) or 0)
        for completion in out.outputs:
            j = completion.index
            texts[j] += completion.text
            tokens[j].extend(int(t) for t in completion.token_ids)
            finish[j] = completion.finish_reason or finish[j]
            piece: str = completion.text
            if top is not None:
                fresh = token_logprobs(completion.token_ids, completion.logprobs, top)
                logprobs[j].extend(fresh)
                piece = TextDelta(piece, fresh)
            if streaming and piece:
                request.on_delta(piece)  # type: ignore[misc]
    if draws < n:
        texts, tokens, finish = texts * n, [list(t) for t in tokens * n], finish * n
        logprobs = logprobs * n
    results = []
    for j in range(n):
        if finish[j] == "abort":
            raise RequestCancelledError(f"vLLM aborted request {request.number + j}")
        stats = SpecStats(
            prompt_tokens=len(request.ids),
            generated_tokens=len(tokens[j]),
            cached_prompt_tokens=cached,
            target_tokens=len(request.ids) - cached + len(tokens[j]),
        )
        results.append(
            GenerationResult(
                text=texts[j],
                token_ids=tokens[j],
                finish_reason="length" if finish[j] == "length" else "stop",
                prompt_tokens=len(request.ids),
                stats=stats,
                request_id=request.number + j,
                group=request.group,
                logprobs=None if top is None else list(logprobs[j]),
            )
        )
    return results


_SPEC_METRICS = {
    "vllm:spec_decode_num_drafts": "drafts",
    "vllm:spec_decode_num_draft_tokens": "drafted",
    "vllm:spec_decode_num_accepted_tokens": "accepted",
}


def spec_metrics(model_name: str) -> dict[str, Any]:
    """The speculative-decoding counters of ``model_name`` in vLLM's metrics registry."""
    from vllm.v1.metrics.reader import Counter, Vector, get_metrics_snapshot

    out: dict[str, Any] = {}
    for metric in get_metrics_snapshot():
        if metric.labels.get("model_name") != model_name:
            continue
        if isinstance(metric, Counter) and metric.name in _SPEC_METRICS:
            key = _SPEC_METRICS[metric.name]
            out[key] = out.get(key, 0) + metric.value
        elif isinstance(metric, Vector) and metric.name.endswith("accepted_tokens_per_pos"):
            out["by_position"] = list(metric.values)
    return out
