"""Plumbing shared by :class:`~langchain_seed.SeedLLM` and :class:`~langchain_seed.ChatSeed`.

Both classes translate LangChain calls into engine requests and engine results into LangChain
outputs; everything they have in common lives here so that each class stays a thin adapter:

- :class:`SeedFields`: the pydantic fields (model configuration, sampling defaults, the
  ``engine`` escape hatch), their validation, engine resolution and call-time overrides;
- :func:`submit_call`, :func:`wait_all`, :func:`await_all`: one submission for all prompts
  of a call (the ``n`` samples of a prompt as one engine group), and waiting on the futures;
- :class:`DeltaStream`: one request read piece by piece as the engine produces text;
- :func:`generation_info`, :func:`usage_metadata`, :func:`llm_output`: result translation.

The engine thread never runs LangChain code: text pieces reach the caller's thread or event
loop through a queue, and callbacks fire there.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import LangSmithParams
from langchain_core.messages.ai import UsageMetadata
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from langchain_seed.engine.config import EngineConfig, SamplingParams
from langchain_seed.engine.loading import EMBEDDED_NAME

if TYPE_CHECKING:
    from langchain_seed.engine import Engine, GenerationResult

logger = logging.getLogger(__name__)

Prompt = str | list[int]
"""What the engine accepts as a prompt: text, or token ids (a rendered chat template)."""

SAMPLING_KWARGS = frozenset(
    {"temperature", "max_tokens", "top_p", "top_k", "seed", "n", "stop", "request_timeout"}
)
"""Call-time keyword arguments that override the instance's fields for one call."""

_ROUTING_KWARGS = frozenset(
    {
        "stream",
        "ls_structured_output_format",
        "structured_output_format",
        "tags",
        "metadata",
        "run_name",
        "run_id",
    }
)
"""Keyword arguments LangChain itself threads through ``generate``; they carry no sampling."""


class SeedFields(BaseModel):
    """Fields and helpers common to ``SeedLLM`` and ``ChatSeed`` (a pydantic mixin)."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model: str | None = None
    """Target model: ``None`` for the embedded SmolLM2-135M-Instruct, a local folder, a
    ``.gguf`` file or a Hugging Face id already in the local cache."""

    draft_model: str | None = None
    """Optional small causal LM sharing the target's vocabulary (enables the ``"model"``
    drafter)."""

    policy: Literal["autoregressive", "fcfs_rounds", "batched"] = "batched"
    """Engine scheduling policy: ``"batched"`` (batched verification, adaptive draft length),
    ``"fcfs_rounds"`` (SEED as published) or ``"autoregressive"`` (no drafts)."""

    drafters: tuple[str, ...] = ("ngram",)
    """Drafters the engine asks, from ``"model"``, ``"ngram"`` and ``"consensus"``."""

    device: str = "cpu"
    """Torch device of the models: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``..."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weight and activation dtype. ``"auto"``: bfloat16 for the embedded model on a CPU with
    native bfloat16 and on CUDA GPUs that support it, float32 otherwise (see
    :class:`~langchain_seed.engine.EngineConfig`)."""

    temperature: float = 0.0
    """Sampling temperature; ``0`` is greedy decoding (deterministic)."""

    max_tokens: int = 256
    """Most new tokens generated per sample."""

    top_p: float = 1.0
    """Nucleus sampling mass in (0, 1]; ``1`` switches it off."""

    top_k: int = 0
    """Keep only the ``top_k`` most likely tokens; ``0`` switches it off."""

    seed: int | None = None
    """Sampling seed. With a seed, sampled output repeats for the same request; sample ``j``
    of ``n`` uses ``seed + j`` so that the samples differ."""

    stop: list[str] | None = None
    """Stop strings: output ends before the first occurrence of any of them (not returned)."""

    n: int = Field(default=1, ge=1)
    """Samples per prompt. The ``n`` samples of a prompt run as one engine group (shared
    prompt prefix, consensus drafting); ``generations[i]`` holds them."""

    request_timeout: float | None = Field(default=None, alias="timeout", gt=0)
    """Seconds after submission when a request fails with ``TimeoutError``; ``None``: never."""

    engine_: Any = Field(default=None, alias="engine", exclude=True)
    """An already built :class:`~langchain_seed.engine.Engine` to use instead of the shared
    engine for the model configuration above (pass it as ``engine=``)."""

    @model_validator(mode="after")
    def _validate_config(self) -> Self:
        """Check the engine and sampling configuration when the object is built."""
        if self.engine_ is None:
            self.engine_config()
        self.sampling_params(None, {})
        return self

    @property
    def engine(self) -> Engine:
        """The engine serving this model.

        The one passed as ``engine=``, else the process-wide engine for this model
        configuration (loaded on first use, shared by instances with equal configurations).
        """
        if self.engine_ is not None:
            return self.engine_  # type: ignore[no-any-return]
        from langchain_seed.engine import Engine

        return Engine.shared(self.engine_config())

    def engine_config(self) -> EngineConfig:
        """The :class:`EngineConfig` of this model configuration (validated)."""
        return EngineConfig(
            model=self.model,
            draft_model=self.draft_model,
            policy=self.policy,
            drafters=tuple(self.drafters),
            device=self.device,
            dtype=self.dtype,
        )

    @property
    def model_name(self) -> str:
        """Display name of the target model, known without loading it."""
        if self.engine_ is not None:
            return str(self.engine_.model_name)
        return self.model or EMBEDDED_NAME

    def sampling_params(
        self, stop: list[str] | None, kwargs: Mapping[str, Any]
    ) -> tuple[SamplingParams, int]:
        """Fields overridden by this call's ``stop`` and keyword arguments -> (params, n).

        Raises ValueError naming the argument for an unknown keyword or a value out of range.
        """
        unknown = set(kwargs) - SAMPLING_KWARGS - _ROUTING_KWARGS - {"timeout"}
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unsupported call arguments {sorted(unknown)}; "
                f"supported: {sorted(SAMPLING_KWARGS)}"
            )
        if stop is None:
            stop = kwargs.get("stop", self.stop)
        n = kwargs.get("n", self.n)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        timeout = kwargs.get("request_timeout", kwargs.get("timeout", self.request_timeout))
        params = SamplingParams(
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            top_k=kwargs.get("top_k", self.top_k),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=tuple(stop or ()),
            seed=kwargs.get("seed", self.seed),
            request_timeout=timeout,
        )
        return params, n

    def stream_params(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> SamplingParams:
        """:meth:`sampling_params` of a streamed call, which yields one sample (``n == 1``)."""
        params, n = self.sampling_params(stop, kwargs)
        if n != 1:
            raise ValueError(f"streaming yields one sample: n must be 1, got {n}")
        return params

    def identifying_params(self) -> dict[str, Any]:
        """Model configuration and sampling defaults: what makes two instances' outputs equal."""
        return {
            "model": self.model_name,
            "draft_model": self.draft_model,
            "policy": self.policy,
            "drafters": list(self.drafters),
            "device": self.device,
            "dtype": self.dtype,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop,
            "n": self.n,
        }

    def ls_params(
        self, stop: list[str] | None, kwargs: Mapping[str, Any], model_type: Literal["chat", "llm"]
    ) -> LangSmithParams:
        """LangSmith tracing parameters, with this call's overrides applied."""
        params = LangSmithParams(
            ls_provider="seed",
            ls_model_name=kwargs.get("model", self.model_name),
            ls_model_type=model_type,
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_tokens", self.max_tokens),
        )
        if stop := stop or kwargs.get("stop") or self.stop:
            params["ls_stop"] = list(stop)
        return params

    def _cache_configured(self) -> bool:
        cache = getattr(self, "cache", None)
        return cache is not False and (isinstance(cache, BaseCache) or get_llm_cache() is not None)

    def cache_may_serve(
        self, stop: list[str] | None, kwargs: Mapping[str, Any], *, kwargs_in_key: bool = True
    ) -> bool:
        """Whether the LangChain cache may answer this call.

        Only deterministic calls are cached: one sample, greedy or seeded. Independent samples
        (``n > 1``, or ``temperature > 0`` without a seed) are never collapsed into one cached
        answer. ``kwargs_in_key=False`` is for ``BaseLLM``, whose cache key holds the fields
        but not the call's keyword arguments: a call that overrides them is not cached.
        """
        if not self._cache_configured():
            return False
        if not kwargs_in_key and SAMPLING_KWARGS & kwargs.keys():
            return False
        params, n = self.sampling_params(stop, kwargs)
        return n == 1 and (params.greedy or params.seed is not None)

    def for_call(
        self, stop: list[str] | None, kwargs: Mapping[str, Any], *, kwargs_in_key: bool = True
    ) -> Self:
        """``self``, or a shallow copy with the LangChain cache off for this call.

        The copy is made when a cache is configured but must not serve this call (see
        :meth:`cache_may_serve`).
        """
        if not self._cache_configured() or self.cache_may_serve(
            stop, kwargs, kwargs_in_key=kwargs_in_key
        ):
            return self
        return self.model_copy(update={"cache": False})

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the model's own tokenizer."""
        custom = getattr(self, "custom_get_token_ids", None)
        if custom is not None:
            return list(custom(text))
        return list(self.engine.encode(text))


# ---------------------------------------------------------------------------------------
# Submission and waiting


def submit_call(
    engine: Engine, prompts: list[Prompt], params: SamplingParams, n: int
) -> list[list[Future[GenerationResult]]]:
    """Hand every prompt of one call to the engine together -> futures[prompt][sample].

    With ``n == 1`` all prompts go in one ``submit_many``. With ``n > 1`` the ``n`` samples of
    prompt i form one engine group (prefilled once, consensus drafting across samples); the
    groups are submitted back to back, before any result is awaited. If a submission fails,
    the requests already submitted are cancelled and the error is raised.
    """
    if n == 1:
        return [[future] for future in engine.submit_many(prompts, params)]
    samples = [params] * n
    if params.seed is not None:
        samples = [replace(params, seed=params.seed + j) for j in range(n)]
    submitted: list[list[Future[GenerationResult]]] = []
    try:
        for prompt in prompts:
            group = f"lc-{uuid.uuid4().hex[:12]}"
            submitted.append(list(engine.submit_many([prompt] * n, samples, group=group)))
    except BaseException:
        cancel_all(submitted)
        raise
    return submitted


def cancel_all(futures: list[list[Future[GenerationResult]]]) -> None:
    """Cancel every future not yet resolved (the engine frees their slots at its next step)."""
    for row in futures:
        for future in row:
            future.cancel()


def wait_all(futures: list[list[Future[GenerationResult]]]) -> list[list[GenerationResult]]:
    """Block until every request resolves; on the first error cancel the rest and raise it."""
    try:
        return [[future.result() for future in row] for row in futures]
    except BaseException:
        cancel_all(futures)
        raise


async def await_all(
    futures: list[list[Future[GenerationResult]]],
) -> list[list[GenerationResult]]:
    """Await every request on the running loop (no thread per request).

    Cancelling the awaiting task, or the first error, cancels the remaining requests.
    """
    flat = [asyncio.wrap_future(future) for row in futures for future in row]
    try:
        results = await asyncio.gather(*flat)
    except BaseException:
        cancel_all(futures)
        raise
    shaped: list[list[GenerationResult]] = []
    for row in futures:
        shaped.append(results[: len(row)])
        results = results[len(row) :]
    return shaped


_DONE = object()


class DeltaStream:
    """One engine request whose text arrives piece by piece as the engine decodes it.

    The engine calls ``on_delta`` on its own thread; each piece goes through a queue to the
    caller's thread (``for piece in stream``) or event loop (``async for piece in stream``,
    when built with ``loop=``). Leaving the iteration early cancels the request.
    """

    def __init__(
        self,
        engine: Engine,
        prompt: Prompt,
        params: SamplingParams,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self._loop = loop
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._aqueue: asyncio.Queue[object] | None = asyncio.Queue() if loop else None
        self.future: Future[GenerationResult] = engine.submit(prompt, params, on_delta=self._put)
        self.future.add_done_callback(lambda _: self._put(_DONE))

    def _put(self, item: object) -> None:
        if self._loop is None or self._aqueue is None:
            self._queue.put(item)
            return
        try:
            self._loop.call_soon_threadsafe(self._aqueue.put_nowait, item)
        except RuntimeError:  # the caller's loop is closed: nobody reads any more
            self.future.cancel()

    def __iter__(self) -> Iterator[str]:
        try:
            while (item := self._queue.get()) is not _DONE:
                yield str(item)
        finally:
            self.future.cancel()  # no-op once resolved

    async def __aiter__(self) -> AsyncIterator[str]:
        if self._aqueue is None:
            raise RuntimeError("DeltaStream was built without an event loop")
        try:
            while (item := await self._aqueue.get()) is not _DONE:
                yield str(item)
        finally:
            self.future.cancel()

    def result(self) -> GenerationResult:
        """The finished request (raises the request's error)."""
        return self.future.result()


# ---------------------------------------------------------------------------------------
# Result translation


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


def llm_output(engine: Engine) -> dict[str, Any]:
    """``llm_output`` of a call: the model name and the engine-wide stats after the call."""
    return {"model_name": engine.model_name, "engine_stats": engine.stats().to_dict()}
