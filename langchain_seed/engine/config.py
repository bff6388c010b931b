"""Validated configuration: :class:`EngineConfig` and :class:`SamplingParams`.

Errors name the field and the allowed range, and are raised where the object is built
(on the caller's thread), never later inside the engine thread.
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

POLICIES = ("autoregressive", "fcfs_rounds", "batched")
DRAFTERS = ("model", "ngram", "consensus", "grammar")
DTYPES = ("auto", "float32", "bfloat16", "float16")
EXECUTIONS = ("auto", "own", "transformers")

MIN_TEMPERATURE = 1e-5
"""Temperatures below this are greedy (as in vLLM): ``logits / T`` overflows float32 long
before ``T`` reaches 0 (at ``T ~ 1e-37`` every row became token 0 repeated), and below it
sampling only splits exact ties."""

MAX_LOGPROBS = 20
"""Most alternatives per token that ``SamplingParams.logprobs`` asks for (OpenAI's limit)."""

SEED_RANGE = (-(2**63), 2**64)
"""Seeds are integers in ``[-2**63, 2**64)``: their noise streams are keyed modulo 2**64."""

Policy = Literal["autoregressive", "fcfs_rounds", "batched"]

GRAMMAR_KINDS = ("json_schema", "json_object", "regex", "ebnf", "structural_tag")


@dataclass(frozen=True, slots=True)
class Grammar:
    """A constraint on a request's output, compiled by xgrammar (:mod:`.text.grammar`).

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
    logprobs: int | None = None
    """Return the log probability of every generated token (``GenerationResult.logprobs``)
    and of the ``logprobs`` most likely tokens at its position (0: the generated token's
    only; at most :data:`MAX_LOGPROBS`); ``None``: none. A token's log probability is taken
    under the distribution the sampler draws from: the target's logits with the grammar's
    mask, temperature, top-k and top-p applied, and for greedy requests (temperature 0) the
    target's distribution at temperature 1 (as OpenAI and vLLM report them). Speculation
    does not change them: a token gets the value of the position it was emitted at."""

    def __post_init__(self) -> None:
        self.stop = _strings("stop", self.stop)
        self.stop_token_ids = _token_ids("stop_token_ids", self.stop_token_ids)
        if not _real(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if self.temperature < MIN_TEMPERATURE:
            self.temperature = 0.0  # vanishing temperatures are greedy (MIN_TEMPERATURE)
        if not _real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not _integer(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _integer(self.max_tokens) or self.max_tokens <= 0:
            raise ValueError(f"max_tokens must be an integer > 0, got {self.max_tokens!r}")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be True or False, got {self.ignore_eos!r}")
        if self.seed is not None and (
            not _integer(self.seed) or not SEED_RANGE[0] <= self.seed < SEED_RANGE[1]
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
        if self.logprobs is not None and (
            not _integer(self.logprobs) or not 0 <= self.logprobs <= MAX_LOGPROBS
        ):
            raise ValueError(
                f"logprobs must be an integer in [0, {MAX_LOGPROBS}] (alternatives per token) "
                f"or None, got {self.logprobs!r}"
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


def sample_seed(seed: int, j: int) -> int:
    """The seed of sample ``j`` of ``n`` samples seeded ``seed``: ``seed + j``, modulo 2**64.

    Noise streams are keyed by the seed modulo 2**64
    (:func:`~langchain_seed.engine.speculation.sampling.position_seed`), so wrapping past
    ``2**64 - 1`` keeps the ``n`` streams distinct and every derived seed in :data:`SEED_RANGE`.
    """
    derived = seed + j
    return derived - 2**64 if derived >= SEED_RANGE[1] else derived


def _real(value: object) -> bool:
    """A finite int or float (bool excluded); NaN passes every ``<`` check, so test it."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_int(name: str, value: object, least: int) -> None:
    if not _integer(value) or value < least:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")


def _integer(value: object) -> bool:
    """An ``int`` that is not a ``bool`` (``True`` would otherwise pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def _strings(name: str, value: object) -> tuple[str, ...]:
    """``value`` as a tuple of non-empty strings (one string or ``None`` allowed)."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple, set, frozenset)) or not all(
        isinstance(s, str) and s for s in value
    ):
        raise ValueError(
            f"{name} must be a non-empty string or a list / tuple of them (None: no stop "
            f"strings), got {value!r}"
        )
    return tuple(value)


def _token_ids(name: str, value: object) -> tuple[int, ...]:
    """``value`` as a tuple of token ids (integers >= 0; ``None`` allowed)."""
    if value is None:
        return ()
    ids = [as_token_id(t) for t in value] if isinstance(value, (list, tuple, set)) else [None]
    if any(t is None for t in ids):
        raise ValueError(f"{name} must be a list / tuple of integer token ids >= 0, got {value!r}")
    return tuple(t for t in ids if t is not None)


def as_token_id(value: object) -> int | None:
    """``value`` as a token id (an integer >= 0), or ``None`` when it is none.

    Python, NumPy and 0-d torch integers are token ids; a bool, a float (never truncated), a
    string or a negative number are not.
    """
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return None
    try:
        index = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None
    return index if index >= 0 else None


PREFIX_CACHE_ENV = "SEED_PREFIX_CACHE_TOKENS"


def _default_prefix_cache_tokens() -> int:
    """``$SEED_PREFIX_CACHE_TOKENS`` (a plain integer of tokens >= 0), else 16,384."""
    text = os.environ.get(PREFIX_CACHE_ENV, "16384")
    try:
        value = int(text.strip().replace("_", ""))
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(
            f"environment variable {PREFIX_CACHE_ENV}={text!r} must be an integer number of "
            "tokens >= 0 (e.g. 16384; 0 turns the prefix cache off)"
        )
    return value


class _DefaultDrafters(tuple[str, ...]):
    """The default drafter set, marked so that it follows ``draft_model`` (see EngineConfig)."""

    __slots__ = ()


def default_drafters(draft_model: str | None) -> tuple[str, ...]:
    """``("ngram", "grammar")``, with ``"model"`` first when a draft model is configured."""
    names = ("ngram", "grammar") if draft_model is None else ("model", "ngram", "grammar")
    return _DefaultDrafters(names)


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
            only). Left out: ``("ngram", "grammar")``, with ``"model"`` added when a
            ``draft_model`` is given. Given with a ``draft_model`` but without ``"model"``,
            it is refused (the draft model would never run).
        max_batch_size: most sequences decoded at once; more requests wait in the queue.
        max_cache_tokens: token slots of each model's KV pool, its whole memory. Running
            sequences get one row each, as wide as the largest reservation (prompt +
            max_tokens + 17 draft slots); a request that does not fit waits.
        gamma: most draft tokens per sequence per step (``fcfs_rounds`` uses it as is).
        device: torch device, ``"cpu"`` or ``"cuda"`` (``"cuda:1"``, ``"mps"``, ...).
        dtype: ``"auto"`` (default), ``"float32"``, ``"bfloat16"`` or ``"float16"``. ``"auto"``
            is resolved here: bfloat16 for the embedded model on a CPU with native bfloat16
            and on a CUDA GPU that supports it (float16 on older GPUs), float32 otherwise.
            Greedy output is lossless in float32, and in bfloat16 too on the own execution
            path (see ``deterministic``); on the transformers path in bfloat16 the batch
            composition changes rounding, so a near-tie may flip against one-at-a-time
            decoding.
        prefix_cache_tokens: token budget of the prefix cache; ``0`` turns it off.
        max_queue: most requests waiting for admission; ``None`` is unbounded.
        queue_full: ``"error"`` raises :class:`QueueFullError` at submission when the queue
            is full, ``"block"`` waits for room.
        execution: how the models' forwards run. ``"auto"`` (default): the engine's own
            execution path (:mod:`~langchain_seed.engine.execution`: own model code and CPU
            kernels) for Llama-family models (llama, mistral, qwen2, qwen3) on a CPU, checked
            against the transformers forward at load; the transformers forward otherwise.
            ``"own"``: the own path or an error saying why not; ``"transformers"``: always
            the transformers forward.
        deterministic: greedy decoding gives one answer whatever runs beside it. ``None``
            (default): yes wherever the model runs on the own path, whose kernels compute a
            row with one order of arithmetic at any batch size, length or draft (measured
            cost: none at decode, where these kernels are also the fastest; up to a few
            percent of prefill); ``True``: required (an error when the model runs the
            transformers forward, whose kernels choose their reduction order by shape);
            ``False``: linear layers may take library kernels that measured faster at a
            row count (then a row's logits may change with its neighbours in bfloat16).
        step_prefill_tokens: on the own execution path, the most prompt tokens one step
            feeds beside the running rows' decode and draft tokens (the unified step: a
            newly admitted prompt is computed in the batch's forward instead of a prefill
            forward of its own; a longer one in chunks over several steps while the other
            rows go on decoding). ``0``: prompts are prefilled in forwards of their own at
            admission, as on the transformers path. Default 2048.
    """

    model: str | None = None
    draft_model: str | None = None
    policy: str = "batched"
    drafters: tuple[str, ...] = default_drafters(None)
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
    execution: str = "auto"
    deterministic: bool | None = None
    step_prefill_tokens: int = 2048

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {self.policy!r}")
        if isinstance(self.model, os.PathLike):
            self.model = os.fspath(self.model)
        if isinstance(self.draft_model, os.PathLike):
            self.draft_model = os.fspath(self.draft_model)
        if self.model is not None and not isinstance(self.model, str):
            raise ValueError(f"model must be a path or model id (str) or None, got {self.model!r}")
        if self.draft_model is not None and not isinstance(self.draft_model, str):
            raise ValueError(
                f"draft_model must be a path or model id (str) or None, got {self.draft_model!r}"
            )
        if isinstance(self.drafters, _DefaultDrafters):  # left out: follows draft_model
            self.drafters = default_drafters(self.draft_model)
        elif isinstance(self.drafters, str):
            self.drafters = (self.drafters,)
        if not isinstance(self.drafters, (list, tuple)):
            raise ValueError(
                f"drafters must be a tuple drawn from {DRAFTERS}, got {self.drafters!r}"
            )
        if not isinstance(self.drafters, _DefaultDrafters):
            self.drafters = tuple(self.drafters)
        unknown = [d for d in self.drafters if d not in DRAFTERS]
        if unknown:
            raise ValueError(f"drafters must be drawn from {DRAFTERS}, got unknown {unknown}")
        if "model" in self.drafters and self.draft_model is None:
            raise ValueError("drafters includes 'model' but no draft_model is configured")
        if self.draft_model is not None and "model" not in self.drafters:
            raise ValueError(
                f"draft_model={self.draft_model!r} is given but drafters={self.drafters} has no "
                "'model', so the draft model would never run: add 'model' to drafters (e.g. "
                "drafters=('model', 'ngram', 'grammar')), leave drafters out (then 'model' is "
                "added), or drop draft_model"
            )
        _check_int("max_batch_size", self.max_batch_size, 1)
        _check_int("max_cache_tokens", self.max_cache_tokens, 16)
        if not _integer(self.gamma) or not 0 <= self.gamma <= 16:
            raise ValueError(f"gamma must be an integer in [0, 16], got {self.gamma!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(
                f"device must be a torch device name ('cpu', 'cuda', ...), got {self.device!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.dtype == "auto":
            from langchain_seed.engine.execution.loading import auto_dtype

            self.dtype = auto_dtype(self.model, self.device)
        if not _integer(self.prefix_cache_tokens) or self.prefix_cache_tokens < 0:
            raise ValueError(
                "prefix_cache_tokens must be an integer >= 0 (0 = off), "
                f"got {self.prefix_cache_tokens!r}"
            )
        if not isinstance(self.adaptive_gamma, bool):
            raise ValueError(f"adaptive_gamma must be True or False, got {self.adaptive_gamma!r}")
        if self.max_queue is not None and (not _integer(self.max_queue) or self.max_queue < 1):
            raise ValueError(f"max_queue must be an integer >= 1 or None, got {self.max_queue!r}")
        if self.queue_full not in ("error", "block"):
            raise ValueError(f"queue_full must be 'error' or 'block', got {self.queue_full!r}")
        if self.execution not in EXECUTIONS:
            raise ValueError(f"execution must be one of {EXECUTIONS}, got {self.execution!r}")
        _check_int("step_prefill_tokens", self.step_prefill_tokens, 0)
        if self.deterministic not in (None, True, False):
            raise ValueError(
                f"deterministic must be None (auto), True or False, got {self.deterministic!r}"
            )

    @classmethod
    def of(cls, config: EngineConfig | None = None, **kwargs: Any) -> EngineConfig:
        """``config`` with ``kwargs`` applied (a new config), or one built from ``kwargs``.

        Raises:
            ValueError: a keyword that is no field (the fields are listed), or a bad value.
        """
        names = [f.name for f in fields(cls)]
        unknown = sorted(k for k in kwargs if k not in names)
        if unknown:
            raise ValueError(f"unknown EngineConfig field(s) {unknown}; the fields are {names}")
        if config is None:
            return cls(**kwargs)
        if not isinstance(config, EngineConfig):
            raise ValueError(f"config must be an EngineConfig or None, got {config!r}")
        if not kwargs:
            return config
        # A config whose drafters were left out keeps following draft_model (__post_init__).
        return replace(config, **kwargs)

    @property
    def uses_drafts(self) -> bool:
        """True when the policy speculates (``autoregressive`` never does)."""
        return self.policy != "autoregressive" and self.gamma > 0 and bool(self.drafters)
