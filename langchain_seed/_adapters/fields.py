"""The pydantic fields of :class:`~langchain_seed.SeedLLM` and :class:`~langchain_seed.ChatSeed`.

:class:`EngineFields` holds the model configuration, the sampling defaults and the ``engine``
escape hatch, in one place with their documentation; it validates them, resolves the engine,
applies a call's overrides (:meth:`EngineFields.sampling_params`) and decides whether the
LangChain cache may serve a call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import LangSmithParams
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from langchain_seed._adapters.tool_parsing import HERMES, TOOL_FORMATS, ToolFormat
from langchain_seed.engine.config import MAX_LOGPROBS, EngineConfig, Grammar, SamplingParams
from langchain_seed.engine.execution.loading import EMBEDDED_NAME

if TYPE_CHECKING:
    from langchain_seed.engine.serving.client import EngineClient

SAMPLING_KWARGS = frozenset(
    {
        "temperature",
        "max_tokens",
        "top_p",
        "top_k",
        "seed",
        "n",
        "stop",
        "request_timeout",
        "logprobs",
        "top_logprobs",
    }
)
"""Call-time keyword arguments that override the instance's fields for one call."""

GRAMMAR_KWARGS = frozenset({"grammar", "json_schema", "regex", "response_format"})
"""Call-time keyword arguments that constrain the output (at most one per call)."""

TOOL_KWARGS = frozenset({"tools", "tool_choice", "parallel_tool_calls"})
"""Call-time keyword arguments of tool calling (``ChatSeed`` only, set by ``bind_tools``)."""

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


PROVIDER = "seed"
"""The provider name: LangSmith's ``ls_provider`` and ``ChatSeed``'s
``response_metadata["model_provider"]``."""

PROVIDER_PARAMS = frozenset({"api_key", "base_url", "max_retries"})
"""Constructor arguments LangChain's standard tests and hosted chat models use; accepted
(a local engine has no key, server or retries) and ignored."""


class EngineFields(BaseModel):
    """Fields and helpers common to ``SeedLLM`` and ``ChatSeed`` (a pydantic mixin)."""

    _takes_tools: ClassVar[bool] = False
    """Whether calls may carry ``tools`` / ``tool_choice`` (``ChatSeed``)."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=())

    model: str | None = None
    """Target model: ``None`` for the embedded SmolLM2-135M-Instruct, a local folder, a
    ``.gguf`` file or a Hugging Face id already in the local cache."""

    draft_model: str | None = None
    """Optional small causal LM sharing the target's vocabulary: it drafts (the ``"model"``
    drafter joins the default ``drafters``; ``drafters`` given without ``"model"`` is
    refused, since the draft model would never run)."""

    policy: Literal["autoregressive", "fcfs_rounds", "batched"] = "batched"
    """Engine scheduling policy: ``"batched"`` (batched verification, adaptive draft length),
    ``"fcfs_rounds"`` (SEED as published) or ``"autoregressive"`` (no drafts)."""

    drafters: tuple[str, ...] = ("ngram", "grammar")
    """Drafters the engine asks, from ``"model"``, ``"ngram"``, ``"consensus"`` and
    ``"grammar"`` (the text a grammar forces next: tool-call headers, JSON keys). Left out
    with a ``draft_model``: ``("model", "ngram", "grammar")``."""

    gamma: int = Field(default=4, ge=0, le=16)
    """Most draft tokens per sequence per step (0 to 16); the engine's draft policy picks
    each step's lengths up to it from measured costs and acceptance."""

    max_batch_size: int = Field(default=16, ge=1)
    """Most sequences decoded together in one engine step (the rest wait in the queue)."""

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
    """Sampling seed in ``[-2**63, 2**64)``. With a seed, sampled output repeats for the same
    request; sample ``j`` of ``n`` uses ``seed + j`` (wrapped past ``2**64 - 1``) so that the
    samples differ."""

    stop: list[str] | None = None
    """Stop strings: output ends before the first occurrence of any of them (not returned)."""

    n: int = Field(default=1, ge=1)
    """Samples per prompt. The ``n`` samples of a prompt run as one engine group (shared
    prompt prefix, consensus drafting); ``generations[i]`` holds them."""

    logprobs: bool | None = None
    """Return each generated token's log probability, as ``ChatOpenAI`` does:
    ``response_metadata["logprobs"]["content"]`` (``generation_info`` for ``SeedLLM``), one
    ``{"token", "logprob", "bytes", "top_logprobs"}`` per token, streamed chunks included.
    The log probability is the one under the distribution the sampler draws from
    (temperature, top-k, top-p and a grammar applied); greedy decoding reports the model's
    distribution at temperature 1. Speculation does not change the values."""

    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    """Most likely alternatives (0 to 20) returned with each token's log probability;
    setting it turns ``logprobs`` on."""

    request_timeout: float | None = Field(default=None, alias="timeout", gt=0)
    """Seconds after submission when a request fails with ``TimeoutError``; ``None``: never."""

    backend: Literal["embedded", "vllm"] = "embedded"
    """Which engine serves the model: ``"embedded"`` (this package's engine, scheduled
    speculative decoding) or ``"vllm"`` (vLLM's engine: GPUs, tensor / pipeline
    parallelism, Ray clusters; needs vLLM installed, see the README's "Scale out")."""

    backend_kwargs: dict[str, Any] = Field(default_factory=dict)
    """``backend="vllm"``: vLLM ``AsyncEngineArgs`` fields, passed as they are, e.g.
    ``{"tensor_parallel_size": 2, "speculative_config": {"method": "ngram",
    "num_speculative_tokens": 4, "prompt_lookup_max": 4}, "max_model_len": 4096}``."""

    engine_: Any = Field(default=None, alias="engine", exclude=True)
    """An already built :class:`~langchain_seed.engine.Engine` to use instead of the shared
    engine for the model configuration above (pass it as ``engine=``)."""

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_arguments(cls, data: Any) -> Any:
        """Raise for a constructor keyword that is no field (LangChain's models ignore it).

        A misspelt field or an engine option that is not a field (``adaptive_gamma``) would
        otherwise be dropped silently. LangChain's cross-provider parameters
        (:data:`PROVIDER_PARAMS`) are accepted and have no effect on a local engine.
        """
        if not isinstance(data, dict):
            return data
        known = set(cls.model_fields) | {
            f.alias for f in cls.model_fields.values() if f.alias is not None
        }
        unknown = sorted(str(k) for k in data if k not in known and k not in PROVIDER_PARAMS)
        if unknown:
            fields = sorted(set(EngineFields.model_fields) - {"engine_"} | {"engine"})
            raise ValueError(
                f"unknown argument(s) {unknown} for {cls.__name__}; its fields are {fields} "
                "and LangChain's (callbacks, tags, metadata, cache, ...); other engine options "
                "go through engine=Engine(EngineConfig(...))"
            )
        return data

    @model_validator(mode="after")
    def _validate_config(self) -> Self:
        """Check the engine and sampling configuration when the object is built."""
        if self.engine_ is None and self.backend == "vllm":
            self._check_vllm_fields()
        elif self.engine_ is None:
            if self.backend_kwargs:
                raise ValueError(
                    "backend_kwargs are for backend='vllm'; the embedded engine takes the "
                    "fields model, draft_model, policy, drafters, gamma, max_batch_size, "
                    "device and dtype"
                )
            self.engine_config()
        self.sampling_params(None, {})
        return self

    def _check_vllm_fields(self) -> None:
        """VLLM installed, and no embedded-engine field that vLLM would silently ignore."""
        from langchain_seed.backends.vllm import require_vllm

        require_vllm()
        embedded_only = sorted(
            {"draft_model", "policy", "drafters", "gamma", "max_batch_size", "device"}
            & self.model_fields_set
        )
        if embedded_only:
            raise ValueError(
                f"{embedded_only} configure the embedded engine; with backend='vllm' set "
                "speculation in backend_kwargs['speculative_config'] (e.g. {'method': 'ngram', "
                "'num_speculative_tokens': 4} or {'model': 'path/to/draft', "
                "'num_speculative_tokens': 4}), the batch size with "
                "backend_kwargs['max_num_seqs'] and devices with CUDA_VISIBLE_DEVICES / "
                "tensor_parallel_size"
            )

    @property
    def engine(self) -> EngineClient:
        """The engine serving this model.

        The one passed as ``engine=``, else the process-wide engine for this model
        configuration (loaded on first use, shared by instances with equal configurations):
        an embedded :class:`~langchain_seed.engine.Engine`, or with ``backend="vllm"`` a
        :class:`~langchain_seed.backends.vllm.VLLMEngine`.
        """
        if self.engine_ is not None:
            return self.engine_  # type: ignore[no-any-return]
        if self.backend == "vllm":
            from langchain_seed.backends.vllm import VLLMEngine

            return VLLMEngine.shared(
                self.model, dtype=self._vllm_dtype(), backend_kwargs=self.backend_kwargs
            )
        from langchain_seed.engine import Engine

        return Engine.shared(self.engine_config())

    def _vllm_dtype(self) -> str:
        """The dtype vLLM gets: ``dtype``, ``"auto"`` resolved as the embedded engine does.

        For the embedded model (its converted weights are float32 on disk) as on the embedded
        engine; for other models vLLM's own ``"auto"`` (the checkpoint's dtype).
        """
        if self.dtype != "auto" or self.model is not None:
            return self.dtype
        from langchain_seed.engine.execution.loading import auto_dtype

        return auto_dtype(None, "cpu")

    def engine_config(self) -> EngineConfig:
        """The :class:`EngineConfig` of this model configuration (validated)."""
        config = EngineConfig(
            model=self.model,
            draft_model=self.draft_model,
            policy=self.policy,
            gamma=self.gamma,
            max_batch_size=self.max_batch_size,
            device=self.device,
            dtype=self.dtype,
        )  # drafters left out: the engine's default, which adds "model" with a draft_model
        if "drafters" in self.model_fields_set:
            config = EngineConfig.of(config, drafters=tuple(self.drafters))
        return config

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
        supported = SAMPLING_KWARGS | GRAMMAR_KWARGS | (TOOL_KWARGS if self._takes_tools else set())
        unknown = set(kwargs) - supported - _ROUTING_KWARGS - {"timeout"}
        if unknown:
            raise ValueError(
                f"{type(self).__name__} got unsupported call arguments {sorted(unknown)}; "
                f"supported: {sorted(supported)}"
            )
        if stop is None:
            stop = kwargs.get("stop", self.stop)
        n = kwargs.get("n", self.n)
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be an integer >= 1, got {n!r}")
        timeout = kwargs.get("request_timeout", kwargs.get("timeout", self.request_timeout))
        params = SamplingParams(
            logprobs=_logprobs(
                kwargs.get("logprobs", self.logprobs),
                kwargs.get("top_logprobs", self.top_logprobs),
            ),
            temperature=kwargs.get("temperature", self.temperature),
            top_p=kwargs.get("top_p", self.top_p),
            top_k=kwargs.get("top_k", self.top_k),
            max_tokens=kwargs.get("max_tokens", self.max_tokens),
            stop=tuple(stop or ()),
            seed=kwargs.get("seed", self.seed),
            request_timeout=timeout,
            grammar=call_grammar(kwargs, self.tool_format() if kwargs.get("tools") else None),
        )
        return params, n

    def known_context(self) -> int | None:
        """The model's context in tokens when known without loading it, else ``None``.

        From the engine when one is built, else from a local folder's ``config.json``.
        """
        if self.engine_ is not None:
            return int(self.engine_.max_context)
        from langchain_seed.engine.execution.loading import EMBEDDED_CONTEXT, config_context

        if self.model is None:
            return EMBEDDED_CONTEXT
        return config_context(self.model)

    def tool_format(self) -> ToolFormat:
        """The format the model's chat template writes tool calls in (Hermes as fallback)."""
        if not self._takes_tools:
            return HERMES
        return TOOL_FORMATS.get(self.engine.tool_call_format, HERMES)

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
            "backend": self.backend,
            "backend_kwargs": dict(self.backend_kwargs),
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
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
        }

    def ls_params(
        self, stop: list[str] | None, kwargs: Mapping[str, Any], model_type: Literal["chat", "llm"]
    ) -> LangSmithParams:
        """LangSmith tracing parameters, with this call's overrides applied."""
        params = LangSmithParams(
            ls_provider=PROVIDER,
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
        if not kwargs_in_key and (SAMPLING_KWARGS | GRAMMAR_KWARGS | TOOL_KWARGS) & kwargs.keys():
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


def _logprobs(logprobs: Any, top_logprobs: Any) -> int | None:
    """``SamplingParams.logprobs`` of a call's ``logprobs`` / ``top_logprobs``.

    Raises:
        ValueError: a value of the wrong kind, naming the argument.
    """
    if logprobs is not None and not isinstance(logprobs, bool):
        raise ValueError(f"logprobs must be True, False or None, got {logprobs!r}")
    if top_logprobs is None:
        return 0 if logprobs else None
    if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int):
        raise ValueError(f"top_logprobs must be an integer in [0, 20], got {top_logprobs!r}")
    if not 0 <= top_logprobs <= MAX_LOGPROBS:
        raise ValueError(
            f"top_logprobs must be an integer in [0, {MAX_LOGPROBS}], got {top_logprobs!r}"
        )
    if logprobs is False:
        raise ValueError("top_logprobs needs logprobs (got logprobs=False)")
    return top_logprobs


def call_grammar(kwargs: Mapping[str, Any], fmt: ToolFormat | None = None) -> Grammar | None:
    """The grammar a call's keyword arguments ask for, or ``None``.

    ``grammar`` (a :class:`Grammar`), ``json_schema`` (a JSON-schema dict or text, a pydantic
    class or a TypedDict), ``regex``, ``response_format`` (OpenAI's ``{"type":
    "json_object"}`` or ``{"type": "json_schema", "json_schema": {"schema": ...}}``), or
    ``tools`` with a ``tool_choice`` other than ``"none"``. At most one of them, except that
    tools and a ``response_format`` / ``json_schema`` go together: the answer is tool calls
    or, with ``tool_choice="auto"``, one JSON value of that schema (LangChain's
    ``create_agent`` asks for both in one call).

    Args:
        kwargs: the call's keyword arguments.
        fmt: the model's tool-call format (Hermes when not given).

    Raises:
        ValueError: two constraints in one call, or a value of the wrong kind.
    """
    from langchain_seed._adapters.tools import (
        active_tools,
        resolve_tool_choice,
        tool_grammar,
        tool_names,
    )

    given = sorted(k for k in GRAMMAR_KWARGS if kwargs.get(k) is not None)
    tools = active_tools(kwargs)  # bound tools with tool_choice "none" constrain nothing
    if tools:
        answer = None
        if given in (["json_schema"], ["response_format"]):  # tool calls or this answer
            answer = _answer_schema(kwargs[given[0]], given[0])
        elif given:
            raise ValueError(
                f"one output constraint per call, got {[*given, 'tools']} (tools combine "
                "with response_format or json_schema only)"
            )
        choice = resolve_tool_choice(kwargs.get("tool_choice"), tool_names(tools))
        parallel = kwargs.get("parallel_tool_calls") is not False
        return tool_grammar(tools, choice, parallel=parallel, fmt=fmt or HERMES, answer=answer)
    if len(given) > 1:
        raise ValueError(f"one output constraint per call, got {given}")
    if not given:
        return None
    key = given[0]
    value = kwargs[key]
    if key == "grammar":
        if not isinstance(value, Grammar):
            raise TypeError(f"grammar must be a Grammar, got {type(value).__name__}")
        return value
    if key == "json_schema":
        return Grammar.json_schema(json_schema_of(value))
    if key == "regex":
        return Grammar.regex(value)
    return _response_format_grammar(value)


def _answer_schema(value: Any, key: str) -> dict[str, Any]:
    """The JSON schema of a ``json_schema`` / ``response_format`` argument (a dict)."""
    if key == "response_format":
        grammar = _response_format_grammar(value)
    else:
        grammar = Grammar.json_schema(json_schema_of(value))
    return dict(json.loads(grammar.spec)) if grammar.spec else {"type": "object"}


def json_schema_of(schema: Any) -> dict[str, Any] | str:
    """A JSON schema (dict or text) from a dict, JSON text, pydantic class or TypedDict."""
    if isinstance(schema, (dict, str)):
        return schema
    from langchain_core.utils.function_calling import convert_to_json_schema

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    try:
        return convert_to_json_schema(schema)
    except (ValueError, TypeError) as exc:
        raise TypeError(
            "json_schema must be a dict, JSON text, a pydantic class or a TypedDict, "
            f"got {schema!r}"
        ) from exc


def _response_format_grammar(value: Any) -> Grammar:
    if not isinstance(value, Mapping) or value.get("type") not in ("json_object", "json_schema"):
        raise ValueError(
            "response_format must be {'type': 'json_object'} or {'type': 'json_schema', "
            f"'json_schema': {{'schema': ...}}}}, got {value!r}"
        )
    if value["type"] == "json_object":
        return Grammar.json_object()
    inner = value.get("json_schema") or {}
    schema = inner.get("schema") if isinstance(inner, Mapping) else None
    if schema is None:
        raise ValueError("response_format of type json_schema needs json_schema.schema")
    return Grammar.json_schema(json_schema_of(schema))
