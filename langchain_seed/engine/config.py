"""Validated configuration: :class:`EngineConfig` and :class:`SamplingParams`.

Errors name the field and the allowed range, and are raised where the object is built
(on the caller's thread), never later inside the engine thread.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

POLICIES = ("autoregressive", "fcfs_rounds", "batched")
DRAFTERS = ("model", "ngram", "consensus", "grammar")
DTYPES = ("auto", "float32", "bfloat16", "float16")

Policy = Literal["autoregressive", "fcfs_rounds", "batched"]

GRAMMAR_KINDS = ("json_schema", "json_object", "regex", "ebnf", "structural_tag")


@dataclass(frozen=True, slots=True)
class Grammar:
    """A constraint on a request's output, compiled by xgrammar (DESIGN 4.3: grammars).

    Build one with a constructor: :meth:`json_schema`, :meth:`json_object`, :meth:`regex`,
    :meth:`ebnf` or :meth:`structural_tag`. The output is then a string of the language,
    followed by EOS once the grammar allows it to end.

    Attributes:
        kind: one of ``"json_schema"``, ``"json_object"`` (any JSON object),
            ``"regex"``, ``"ebnf"`` (GBNF, root rule ``root``) or ``"structural_tag"`` (free
            text in which each trigger string starts a constrained part; xgrammar's
            structural-tag JSON).
        spec: the schema (JSON text), pattern, grammar or structural tag; ``""`` for
            ``json_object``.
    """

    kind: str
    spec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in GRAMMAR_KINDS:
            raise ValueError(f"grammar kind must be one of {GRAMMAR_KINDS}, got {self.kind!r}")
        if not isinstance(self.spec, str):
            raise TypeError(f"grammar spec must be a string, got {type(self.spec).__name__}")
        if self.kind != "json_object" and not self.spec:
            raise ValueError(f"a {self.kind} grammar needs a non-empty spec")

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | str) -> Grammar:
        """Output is one JSON value valid against ``schema`` (a dict or JSON text)."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"json_schema is not valid JSON: {exc}") from exc
        if not isinstance(schema, dict):
            raise TypeError(f"json_schema must be a dict, got {type(schema).__name__}")
        return cls("json_schema", json.dumps(schema))  # key order kept: it orders the output

    @classmethod
    def json_object(cls) -> Grammar:
        """Output is any one JSON object (OpenAI's ``json_mode``)."""
        return cls("json_object")

    @classmethod
    def regex(cls, pattern: str) -> Grammar:
        """Output matches ``pattern`` as a whole."""
        return cls("regex", pattern)

    @classmethod
    def ebnf(cls, grammar: str) -> Grammar:
        """Output is a sentence of the EBNF (GBNF) ``grammar``, from its ``root`` rule."""
        return cls("ebnf", grammar)

    @classmethod
    def structural_tag(cls, tag: dict[str, Any] | str) -> Grammar:
        """Free text with constrained parts (xgrammar's structural-tag format, as JSON)."""
        return cls("structural_tag", tag if isinstance(tag, str) else json.dumps(tag))


@dataclass(slots=True)
class SamplingParams:
    """How one request is decoded.

    ``temperature == 0`` is greedy decoding. ``top_k == 0`` and ``top_p == 1.0`` switch
    those filters off. Order of processing (as in transformers): temperature, top-k, top-p.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends before the first occurrence, which is not returned."""
    stop_token_ids: tuple[int, ...] = ()
    """Extra token ids that end generation (the tokenizer's EOS always does)."""
    ignore_eos: bool = False
    """Keep generating past EOS (benchmarks, distribution tests)."""
    seed: int | None = None
    """Per-request seed: the same request with the same seed and engine config repeats."""
    request_timeout: float | None = None
    """Seconds after submission when the request fails with ``TimeoutError``."""
    grammar: Grammar | None = None
    """Constrain the output to a grammar (JSON schema, regex, EBNF, structural tag). The
    request ends with the EOS the grammar allows once complete (or at ``max_tokens`` / a
    stop string); ``stop_token_ids`` other than EOS are refused by the grammar's mask."""

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)
        if not _real(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not _real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not isinstance(self.max_tokens, int) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be an integer > 0, got {self.max_tokens!r}")
        if any(not isinstance(s, str) or s == "" for s in self.stop):
            raise ValueError(f"stop must be non-empty strings, got {self.stop!r}")
        if self.seed is not None and (
            not isinstance(self.seed, int) or not -(2**63) <= self.seed < 2**64
        ):
            raise ValueError(
                f"seed must be an integer in [-2**63, 2**64) or None, got {self.seed!r}"
            )
        if self.request_timeout is not None and (
            not _real(self.request_timeout) or self.request_timeout <= 0
        ):
            raise ValueError(
                f"request_timeout must be a finite number > 0 seconds, got {self.request_timeout!r}"
            )
        if self.grammar is not None and not isinstance(self.grammar, Grammar):
            raise TypeError(
                f"grammar must be a Grammar (Grammar.json_schema(...), .regex(...), ...), "
                f"got {type(self.grammar).__name__}"
            )
        if self.grammar is not None and self.ignore_eos:
            raise ValueError(
                "grammar and ignore_eos=True cannot be combined: a constrained request ends "
                "with the EOS its grammar allows"
            )

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic argmax (temperature 0)."""
        return self.temperature == 0.0


def _real(value: object) -> bool:
    """A finite int or float (bool excluded); NaN passes every ``<`` check, so test it."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _default_prefix_cache_tokens() -> int:
    return int(os.environ.get("SEED_PREFIX_CACHE_TOKENS", "16384"))


@dataclass(slots=True)
class EngineConfig:
    """What the engine loads and how it schedules.

    Args:
        model: target model: ``None`` (embedded SmolLM2-135M-Instruct), a local folder, a
            ``.gguf`` file or a Hugging Face id in the local cache.
        draft_model: optional small causal LM sharing the target's vocabulary.
        policy: ``"autoregressive"`` (batched, no drafts), ``"fcfs_rounds"`` (SEED: batched
            drafting, one target forward per sequence in FIFO order, in rounds) or
            ``"batched"`` (one target forward verifies every sequence, adaptive gamma).
        drafters: drafters to ask, from ``"model"``, ``"ngram"``, ``"consensus"`` and
            ``"grammar"`` (the text a request's grammar forces next; constrained requests
            only).
        max_batch_size: most sequences decoded at once; more requests wait in the queue.
        max_cache_tokens: token slots of each model's KV pool, its whole memory. Running
            sequences get one row each, as wide as the largest reservation (prompt +
            max_tokens + 17 draft slots); a request that does not fit waits.
        gamma: most draft tokens per sequence per step (``fcfs_rounds`` uses it as is).
        device: torch device, ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ``"mps"``, ...).
        dtype: ``"auto"`` (default), ``"float32"``, ``"bfloat16"`` or ``"float16"``. ``"auto"``
            is resolved here: bfloat16 for the embedded model on a CPU with native bfloat16
            and on a CUDA GPU that supports it (float16 on older GPUs), float32 otherwise.
            Greedy output is lossless in float32; in bfloat16 the batch composition changes
            rounding, so a near-tie may flip against one-at-a-time bfloat16 decoding.
        prefix_cache_tokens: token budget of the prefix cache; ``0`` turns it off.
        max_queue: most requests waiting for admission; ``None`` is unbounded.
        queue_full: ``"error"`` raises :class:`QueueFullError` at submission when the queue
            is full, ``"block"`` waits for room.
    """

    model: str | None = None
    draft_model: str | None = None
    policy: str = "batched"
    drafters: tuple[str, ...] = ("ngram", "grammar")
    max_batch_size: int = 16
    max_cache_tokens: int = 65536
    gamma: int = 4
    device: str = "cpu"
    dtype: str = "auto"
    prefix_cache_tokens: int = field(default_factory=_default_prefix_cache_tokens)
    adaptive_gamma: bool = True
    """``batched`` only: size drafts per sequence from acceptance and cost (False: always
    up to ``gamma``, as far as drafts reach)."""
    max_queue: int | None = None
    queue_full: str = "error"
    extra: dict[str, Any] = field(default_factory=dict)
    """Loader options passed through (reserved)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if isinstance(self.drafters, str):
            self.drafters = (self.drafters,)
        self.drafters = tuple(self.drafters)
        unknown = [d for d in self.drafters if d not in DRAFTERS]
        if unknown:
            raise ValueError(f"drafters must be drawn from {DRAFTERS}, got unknown {unknown}")
        if "model" in self.drafters and self.draft_model is None:
            raise ValueError("drafters includes 'model' but no draft_model is configured")
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be an integer >= 1, got {self.max_batch_size}")
        if not isinstance(self.max_cache_tokens, int) or self.max_cache_tokens < 16:
            raise ValueError(
                f"max_cache_tokens must be an integer >= 16, got {self.max_cache_tokens}"
            )
        if not isinstance(self.gamma, int) or not 0 <= self.gamma <= 16:
            raise ValueError(f"gamma must be an integer in [0, 16], got {self.gamma}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.dtype == "auto":
            from langchain_seed.engine.loading import auto_dtype

            self.dtype = auto_dtype(self.model, self.device)
        if not isinstance(self.prefix_cache_tokens, int) or self.prefix_cache_tokens < 0:
            raise ValueError(
                "prefix_cache_tokens must be an integer >= 0 (0 = off), "
                f"got {self.prefix_cache_tokens}"
            )
        if self.max_queue is not None and self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 or None, got {self.max_queue}")
        if self.queue_full not in ("error", "block"):
            raise ValueError(f"queue_full must be 'error' or 'block', got {self.queue_full!r}")

    @property
    def uses_drafts(self) -> bool:
        """True when the policy speculates (``autoregressive`` never does)."""
        return self.policy != "autoregressive" and self.gamma > 0 and bool(self.drafters)

    def key(self) -> tuple[Any, ...]:
        """Identity of the loaded models: engines with equal keys can share weights."""
        return (self.model, self.draft_model, self.device, self.dtype)
