"""The pydantic fields of :class:`~langchain_seed.SeedLLM` and :class:`~langchain_seed.ChatSeed`.

:class:`EngineFields` holds the model configuration, the sampling defaults and the ``engine``
escape hatch, in one place with their documentation; it validates them, resolves the engine
and decides whether the LangChain cache may serve a call. A call's own options (its
overrides of the fields) are :class:`~langchain_seed._adapters.options.CallOptions`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from langchain_core.caches import BaseCache
from langchain_core.globals import get_llm_cache
from langchain_core.language_models import LangSmithParams
from pydantic import BaseModel, ConfigDict, Field, model_validator
from typing_extensions import Self

from langchain_seed._adapters.options import (
    GRAMMAR_KWARGS,
    SAMPLING_KWARGS,
    TOOL_KWARGS,
    CallOptions,
)
from langchain_seed._adapters.tool_parsing import HERMES, TOOL_FORMATS, ToolFormat
from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.execution.loading import EMBEDDED_NAME

if TYPE_CHECKING:
    from langchain_seed.engine.serving.client import EngineClient

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

    execution: Literal["auto", "own", "transformers"] = "auto"
    """How forwards run: ``"auto"``, the engine's own execution path (own model code and CPU
    kernels) for Llama-family models on a CPU, the transformers forward otherwise;
    ``"own"`` (or an error saying why not); ``"transformers"``."""

    deterministic: bool | None = None
    """Greedy output independent of what runs beside it: ``None`` (default) wherever the own
    path runs (in every dtype); ``True`` required (refused where the model runs the
    transformers forward); ``False`` allows faster library kernels (see
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
                    "device, dtype, execution and deterministic"
                )
            self.engine_config()
        self.call_options(None, {})
        return self

    def _check_vllm_fields(self) -> None:
        """VLLM installed, and no embedded-engine field that vLLM would silently ignore."""
        from langchain_seed.backends.vllm import require_vllm

        require_vllm()
        embedded_only = sorted(
            {
                "draft_model",
                "policy",
                "drafters",
                "gamma",
                "max_batch_size",
                "device",
                "execution",
                "deterministic",
            }
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
            execution=self.execution,
            deterministic=self.deterministic,
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

    def call_options(self, stop: list[str] | None, kwargs: Mapping[str, Any]) -> CallOptions:
        """A call's options: the fields overridden by its ``stop`` and keyword arguments.

        Raises ValueError naming the argument for an unknown keyword or a value out of range.
        """
        return CallOptions.parse(self, stop, kwargs)

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
            "execution": self.execution,
            "deterministic": self.deterministic,
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

    def cache_may_serve(self, options: CallOptions, *, kwargs_in_key: bool = True) -> bool:
        """Whether the LangChain cache may answer a call with ``options``.

        Only deterministic calls are cached: one sample, greedy or seeded. Independent samples
        (``n > 1``, or ``temperature > 0`` without a seed) are never collapsed into one cached
        answer. ``kwargs_in_key=False`` is for ``BaseLLM``, whose cache key holds the fields
        but not the call's keyword arguments: a call that overrides them is not cached.
        """
        if not self._cache_configured():
            return False
        overrides = (SAMPLING_KWARGS | GRAMMAR_KWARGS | TOOL_KWARGS) & options.kwargs.keys()
        if not kwargs_in_key and overrides:
            return False
        return options.deterministic

    def for_call(self, options: CallOptions, *, kwargs_in_key: bool = True) -> Self:
        """``self``, or a shallow copy with the LangChain cache off for this call.

        The copy is made when a cache is configured but must not serve this call (see
        :meth:`cache_may_serve`).
        """
        if not self._cache_configured() or self.cache_may_serve(
            options, kwargs_in_key=kwargs_in_key
        ):
            return self
        return self.model_copy(update={"cache": False})

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` under the model's own tokenizer."""
        custom = getattr(self, "custom_get_token_ids", None)
        if custom is not None:
            return list(custom(text))
        return list(self.engine.encode(text))
