"""Engine: submit / step / generate / stream. Thin glue over scheduler, runner and drafters.

One engine thread owns the queue and the batch; each step runs on the process-wide
compute thread (:mod:`langchain_seed.engine.compute`: one OpenMP team for all engines).
Callers on any thread or event loop submit requests and get a
:class:`concurrent.futures.Future` (or await / iterate); ``on_delta`` callbacks run on the
compute thread. Every step:

1. admit waiting requests within the memory budget (prefill, prefix reuse, group fork);
2. choose a draft length per running sequence and draft (batched);
3. verify every sequence in one target forward (``fcfs_rounds``: one per forward);
4. accept per sequence, roll rejected drafts back in both caches;
5. finish sequences (EOS, stop, length) and resolve their futures.
"""

from __future__ import annotations

import asyncio
import atexit
import copy
import logging
import queue
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import Any, cast

import torch

from langchain_seed.engine import compute
from langchain_seed.engine.admission import Admitter
from langchain_seed.engine.config import EngineConfig, SamplingParams
from langchain_seed.engine.draft_policy import DraftPolicy
from langchain_seed.engine.drafters.base import Draft, Drafter
from langchain_seed.engine.drafters.model import ModelDrafter
from langchain_seed.engine.drafters.ngram import NgramDrafter
from langchain_seed.engine.loading import LoadedModel, load_model
from langchain_seed.engine.prefix_cache import PrefixCache
from langchain_seed.engine.results import (
    EngineClosedError,
    GenerationResult,
    QueueFullError,
    RequestCancelledError,
)
from langchain_seed.engine.runner import ModelRunner
from langchain_seed.engine.scheduler import Scheduler
from langchain_seed.engine.sequence import DRAFT_SLACK, SeqStatus, Sequence
from langchain_seed.engine.stats import EngineStats
from langchain_seed.engine.text import TextTracker
from langchain_seed.engine.verify import (
    accept_coupled,
    accept_greedy,
    accept_sampling,
    position_noise,
    process_logits,
)

logger = logging.getLogger(__name__)

Prompt = str | list[int]

_MODELS: dict[tuple[Any, ...], LoadedModel] = {}
_MODELS_LOCK = threading.Lock()
_SHARED: dict[tuple[Any, ...], Engine] = {}
_SHARED_LOCK = threading.Lock()  # guards _SHARED; held while a shared engine is built
_ALL_ENGINES: weakref.WeakSet[Engine] = weakref.WeakSet()


def shared_model(model: str | None, device: str, dtype: str) -> LoadedModel:
    """Load a model once per process per ``(model, device, dtype)``."""
    key = (model, device, dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(model, device=device, dtype=dtype)
        return _MODELS[key]


def check_same_vocabulary(target: LoadedModel, draft: LoadedModel) -> None:
    """Raise ``ValueError`` when the draft cannot draft for the target (vocabularies differ)."""
    t_vocab, d_vocab = target.tokenizer.get_vocab(), draft.tokenizer.get_vocab()
    t_rows = target.model.get_output_embeddings().weight.shape[0]
    d_rows = draft.model.get_output_embeddings().weight.shape[0]
    if t_vocab != d_vocab or t_rows != d_rows:
        raise ValueError(
            f"draft_model {draft.name!r} does not share the target's vocabulary "
            f"(target: {len(t_vocab)} tokens / {t_rows} logits, draft: {len(d_vocab)} tokens / "
            f"{d_rows} logits); a draft model must use the target's tokenizer"
        )


class Engine:
    """Continuous-batching engine with scheduled speculative decoding.

    Args:
        config: what to load and how to schedule; keyword arguments build one instead.
        extra_drafters: custom :class:`Drafter` objects asked next to the configured ones
            (any object with ``name``, ``propose`` and ``release``).

    Example:
        .. code-block:: python

            from langchain_seed.engine import Engine, EngineConfig, SamplingParams

            engine = Engine(EngineConfig(policy="batched", drafters=("ngram",)))
            [result] = engine.generate(["2 + 2 ="], SamplingParams(max_tokens=8))
            print(result.text, result.stats.mean_accepted_length)
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        extra_drafters: Seq[Drafter] = (),
        **kwargs: Any,
    ) -> None:
        self.config = config if config is not None else EngineConfig(**kwargs)
        cfg = self.config
        self.target = shared_model(cfg.model, cfg.device, cfg.dtype)
        self.tokenizer = self.target.tokenizer
        self.model_drafter: ModelDrafter | None = None
        if cfg.draft_model is not None:
            draft = shared_model(cfg.draft_model, cfg.device, cfg.dtype)
            check_same_vocabulary(self.target, draft)
            if "model" in cfg.drafters:
                self.model_drafter = ModelDrafter(draft.model, cfg.max_batch_size, cfg.device)
        self.runner = ModelRunner(self.target.model, cfg.max_batch_size, cfg.device)
        self.drafters: list[Drafter] = []
        for name in cfg.drafters:
            if name == "ngram":
                self.drafters.append(NgramDrafter())
            elif name == "consensus":
                from langchain_seed.engine.drafters.consensus import ConsensusDrafter

                self.drafters.append(ConsensusDrafter())
        self.drafters.extend(extra_drafters)
        self.scheduler = Scheduler(cfg)
        self.policy = DraftPolicy(cfg.gamma)
        self.prefix_cache = PrefixCache(cfg.prefix_cache_tokens)
        self._tok_lock = threading.Lock()
        self.text = TextTracker(self.tokenizer, self._tok_lock)
        self.admitter = Admitter(self.runner, self.model_drafter, self.prefix_cache)
        self.eos_ids = self._eos_ids()
        self._cv = threading.Condition()
        self._inbox: list[Sequence] = []
        self._closed = False
        self._stats = EngineStats()
        self._step_lock = threading.Lock()  # held while a step mutates state and stats
        self._shared_key: tuple[Any, ...] | None = None  # set by Engine.shared
        self._thread = threading.Thread(target=self._loop, name="seed-engine", daemon=True)
        self._thread.start()
        _ALL_ENGINES.add(self)

    # ----- construction helpers ----------------------------------------------------
    @classmethod
    def shared(cls, config: EngineConfig | None = None, **kwargs: Any) -> Engine:
        """The process-wide engine for this configuration (created on first use)."""
        cfg = config if config is not None else EngineConfig(**kwargs)
        key = (
            cfg.model, cfg.draft_model, cfg.policy, cfg.drafters, cfg.max_batch_size,
            cfg.max_cache_tokens, cfg.gamma, cfg.device, cfg.dtype, cfg.prefix_cache_tokens,
            cfg.adaptive_gamma, cfg.max_queue, cfg.queue_full,
        )  # fmt: skip
        # Check and build under one lock: threads racing for the same configuration
        # must get one engine (one batch, one KV budget), never one each.
        with _SHARED_LOCK:
            engine = _SHARED.get(key)
            if engine is None or engine.closed:
                engine = cls(cfg)
                engine._shared_key = key
                _SHARED[key] = engine
            return engine

    @staticmethod
    def close_shared() -> int:
        """Close every shared engine of this process; returns how many were closed.

        Each shared engine keeps its thread, its KV buffers and its prefix cache until it is
        closed: close the engines of a finished job to give that memory back.
        """
        with _SHARED_LOCK:
            engines = list(_SHARED.values())
        for engine in engines:
            engine.close()
        return len(engines)

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        gen_eos = getattr(self.target.model.generation_config, "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, (list, tuple)):
                ids.update(int(v) for v in value)
        return ids

    @property
    def model_name(self) -> str:
        """Display name of the target model."""
        return self.target.name

    @property
    def max_context(self) -> int:
        """Context length of the target model in tokens."""
        config = self.target.model.config
        return int(getattr(config, "max_position_embeddings", 0) or 2048)

    @property
    def vocab_size(self) -> int:
        """Rows of the target's input embedding: valid token ids are below it."""
        embeddings = cast(torch.nn.Embedding, self.target.model.get_input_embeddings())
        return int(embeddings.num_embeddings)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (special tokens as the tokenizer adds them)."""
        with self._tok_lock:
            return list(self.tokenizer.encode(text))

    def render_chat(self, messages: Seq[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        """Prompt token ids of chat ``messages`` through the tokenizer's chat template.

        Rendered under the engine's tokenizer lock: the engine thread decodes with the
        same tokenizer, and fast tokenizers are not safe to share across threads.

        Args:
            messages: ``{"role": ..., "content": ...}`` turns.
            **template_kwargs: passed to ``apply_chat_template`` (e.g. ``tools``).
        """
        with self._tok_lock:
            ids = self.tokenizer.apply_chat_template(
                list(messages),
                add_generation_prompt=True,
                tokenize=True,
                return_dict=False,
                **template_kwargs,
            )
        return [int(i) for i in ids]  # type: ignore[union-attr, arg-type]

    # ----- submission --------------------------------------------------------------
    def submit(
        self,
        prompt: Prompt,
        params: SamplingParams | None = None,
        *,
        group: str | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> Future[GenerationResult]:
        """Queue one request; it joins the running batch at the next step."""
        return self.submit_many([prompt], params, group=group, on_delta=on_delta)[0]

    def submit_many(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> list[Future[GenerationResult]]:
        """Queue several requests together (they are admitted together when they fit).

        ``group`` is one group id for all prompts, or one (or ``None``) per prompt.

        With a bounded queue (``max_queue``), a batch that does not fit waits for room
        (``queue_full="block"``) or raises (``"error"``). A batch larger than ``max_queue``
        itself can never fit at once: in ``"block"`` mode it is queued in parts as room
        frees (a group's members stay in one part when the group fits in the queue); in
        ``"error"`` mode it raises at once. If the engine closes while a blocked batch
        waits, its requests not yet queued fail with :class:`EngineClosedError`.

        Raises:
            ValueError: an empty or over-long prompt, or a params list of the wrong length.
            EngineClosedError: the engine is closed.
            QueueFullError: ``queue_full="error"`` and the queue has no room for the batch,
                or the batch is larger than ``max_queue``.
        """
        if isinstance(prompts, str):
            raise ValueError("prompts must be a list of prompts; use submit() for one prompt")
        plist = self._params_list(params, len(prompts))
        if group is None or isinstance(group, str):
            groups: list[str | None] = [group] * len(prompts)
        else:
            groups = list(group)
            if len(groups) != len(prompts):
                raise ValueError(f"got {len(groups)} groups for {len(prompts)} prompts")
        seqs = [self._make_sequence(p, sp, g, on_delta) for p, sp, g in zip(prompts, plist, groups)]
        limit = self.config.max_queue
        if limit is not None and len(seqs) > limit and self.config.queue_full == "error":
            raise QueueFullError(
                f"a batch of {len(seqs)} requests exceeds max_queue={limit} and can never be "
                "queued at once; submit it in parts, raise max_queue, or use queue_full='block' "
                "(which queues it in parts as room frees)"
            )
        with self._cv:
            if self._closed:
                raise EngineClosedError("engine closed")
            queued = 0
            while queued < len(seqs):
                part = self._next_part(seqs, queued)
                try:
                    self._wait_for_room(part)
                except EngineClosedError as exc:
                    if queued == 0:
                        raise
                    for seq in seqs[queued:]:
                        _resolve_error(seq, exc)
                    break
                self._inbox.extend(seqs[queued : queued + part])
                queued += part
                self._cv.notify_all()
        return [s.future for s in seqs]

    def _next_part(self, seqs: list[Sequence], start: int) -> int:
        """How many of ``seqs[start:]`` to queue next: all, or a part that fits ``max_queue``.

        A part never splits a group whose members fit in the queue together (siblings are
        admitted together); a group larger than the queue is split, its late members fork
        a running sibling's prompt at admission.
        """
        limit = self.config.max_queue
        rest = len(seqs) - start
        if limit is None or rest <= limit:
            return rest
        end = start + limit
        group = seqs[end - 1].group
        if group is not None and end < len(seqs) and seqs[end].group == group:
            first = end - 1
            while first > start and seqs[first - 1].group == group:
                first -= 1
            if first > start:  # end the part before the group; it starts the next part
                return first - start
        return limit

    def _params_list(
        self, params: SamplingParams | Seq[SamplingParams] | None, count: int
    ) -> list[SamplingParams]:
        if params is None:
            return [SamplingParams()] * count
        if isinstance(params, SamplingParams):
            return [params] * count
        plist = list(params)
        if len(plist) != count:
            raise ValueError(f"got {len(plist)} SamplingParams for {count} prompts")
        return plist

    def check_prompt(self, prompt: Prompt, params: SamplingParams | None = None) -> list[int]:
        """Token ids of ``prompt`` if this engine can run it with ``params``.

        Raises:
            ValueError: the prompt is empty, has token ids outside the vocabulary, or
                does not fit the context (or ``max_cache_tokens``) with ``max_tokens``.
        """
        params = params if params is not None else SamplingParams()
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty")
            ids = self.encode(prompt)
        else:
            ids = [int(t) for t in prompt]
            bad = [t for t in ids if not 0 <= t < self.vocab_size]
            if bad:
                raise ValueError(
                    f"prompt token ids {bad[:5]} are outside the model's vocabulary "
                    f"(ids must be in [0, {self.vocab_size}))"
                )
        if not ids:
            raise ValueError("prompt is empty (no tokens)")
        limit = self.max_context - params.max_tokens
        if len(ids) > limit:
            raise ValueError(
                f"prompt is {len(ids)} tokens; the model's context is {self.max_context} tokens "
                f"and max_tokens is {params.max_tokens}, so prompts may have at most {limit}"
            )
        if len(ids) + params.max_tokens + DRAFT_SLACK > self.config.max_cache_tokens:
            raise ValueError(
                f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) + "
                f"{DRAFT_SLACK} draft slots exceeds max_cache_tokens={self.config.max_cache_tokens}"
            )
        return ids

    def _make_sequence(
        self,
        prompt: Prompt,
        params: SamplingParams,
        group: str | None,
        on_delta: Callable[[str], None] | None,
    ) -> Sequence:
        ids = self.check_prompt(prompt, params)
        seq = Sequence(prompt_ids=ids, params=params, group=group, on_delta=on_delta)
        if params.request_timeout is not None:
            seq.deadline = time.monotonic() + params.request_timeout
        seq.future = Future()
        seq.stats.prompt_tokens = len(ids)
        return seq

    def _wait_for_room(self, count: int) -> None:
        limit = self.config.max_queue
        if limit is None:
            return
        while len(self._inbox) + len(self.scheduler.waiting) + count > limit:
            if self.config.queue_full == "error":
                raise QueueFullError(
                    f"submission queue is full (max_queue={limit}); retry later or use "
                    "queue_full='block'"
                )
            self._cv.wait(timeout=0.1)
            if self._closed:
                raise EngineClosedError("engine closed")

    # ----- convenience -------------------------------------------------------------
    def generate(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
    ) -> list[GenerationResult]:
        """Run ``prompts`` to completion (one batch) and return their results in order."""
        return [f.result() for f in self.submit_many(prompts, params, group=group)]

    async def agenerate(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
    ) -> list[GenerationResult]:
        """Async :meth:`generate`; cancelling the awaiting task cancels the requests."""
        futures = self.submit_many(prompts, params, group=group)
        wrapped = [asyncio.wrap_future(f) for f in futures]
        try:
            return list(await asyncio.gather(*wrapped))
        except asyncio.CancelledError:
            for f in futures:
                f.cancel()
            raise

    def stream(
        self, prompt: Prompt, params: SamplingParams | None = None, *, group: str | None = None
    ) -> Iterator[str]:
        """Yield text deltas of one request as the engine produces them."""
        pieces: queue.Queue[str | None] = queue.Queue()
        future = self.submit(prompt, params, group=group, on_delta=pieces.put)
        future.add_done_callback(lambda _: pieces.put(None))
        try:
            while (piece := pieces.get()) is not None:
                yield piece
            future.result()
        finally:
            future.cancel()

    async def astream(
        self, prompt: Prompt, params: SamplingParams | None = None, *, group: str | None = None
    ) -> AsyncIterator[str]:
        """Async :meth:`stream` (no thread hop per token: the engine posts to this loop)."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def post(piece: str | None) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        future = self.submit(prompt, params, group=group, on_delta=post)
        future.add_done_callback(lambda _: post(None))
        try:
            while (piece := await pieces.get()) is not None:
                yield piece
            future.result()
        finally:
            future.cancel()

    def stats(self) -> EngineStats:
        """A snapshot of the engine-wide counters (taken between steps, safe to keep)."""
        with self._step_lock:
            stats = copy.deepcopy(self._stats)
            stats.target_forwards = self.runner.forwards
            stats.draft_forwards = self.model_drafter.forwards if self.model_drafter else 0
            stats.prefix_cache = self.prefix_cache.stats()
        stats.peak_memory_bytes = _peak_memory(self.config.device)
        return stats

    def reset_stats(self) -> None:
        """Start counting afresh (forward counters included)."""
        with self._step_lock:
            self._stats = EngineStats()
            self.runner.forwards = 0
            if self.model_drafter:
                self.model_drafter.runner.forwards = 0

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread and free its memory.

        Pending requests fail with :class:`EngineClosedError`; the KV buffers and the
        prefix cache are released, and a shared engine leaves the registry, so the next
        :meth:`shared` call builds a fresh one.
        """
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._unregister()
        # From a callback (on the compute thread, inside a step) or the engine thread itself,
        # joining would wait for the step that is calling: the thread ends after it.
        if threading.current_thread() is not self._thread and not compute.on_compute_thread():
            self._thread.join(timeout)

    def _unregister(self) -> None:
        if self._shared_key is None:
            return
        with _SHARED_LOCK:
            if _SHARED.get(self._shared_key) is self:
                del _SHARED[self._shared_key]

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- the engine thread -------------------------------------------------------
    def _loop(self) -> None:
        crash: BaseException | None = None
        new: list[Sequence] = []
        try:
            while True:
                with self._cv:
                    while not self._closed and not self._inbox and not self.scheduler.has_work:
                        self._cv.wait()
                    if self._closed:
                        break
                    new, self._inbox = self._inbox, []
                    self._cv.notify_all()
                for seq in new:
                    self._attach_generator(seq)
                    self.scheduler.add(seq)
                with self._step_lock:
                    compute.run(self._guarded_step)
        except BaseException as exc:  # the thread itself broke: nothing may be left hanging
            logger.exception("engine thread crashed; failing every pending request")
            crash = exc
            with self._cv:
                self._closed = True
                self._cv.notify_all()
            for seq in new:
                if seq not in self.scheduler.waiting:
                    _resolve_error(seq, exc)
        self._unregister()
        with self._cv:
            leftover, self._inbox = self._inbox, []
        error = crash or EngineClosedError("engine closed before the request finished")

        def fail_all() -> None:
            with torch.inference_mode():
                self._fail_all(error, include_waiting=True, also=leftover)

        with self._step_lock:
            compute.run(fail_all)

    def _guarded_step(self) -> None:
        """One step on the compute thread; a failure fails the batch, the engine goes on."""
        with torch.inference_mode():
            try:
                self.step()
            except Exception as exc:
                logger.exception("engine step failed")
                self._fail_all(exc, include_waiting=False)

    def _attach_generator(self, seq: Sequence) -> None:
        """Give an unseeded sampled request its own random stream (rejection rule).

        Seeded requests need none: their noise is keyed by (seed, position).
        """
        if seq.params.greedy or seq.params.seed is not None:
            return
        seq.generator = torch.Generator(device=self.runner.device)
        seq.generator.manual_seed(random.randrange(2**63))

    def step(self) -> None:
        """One engine step (the five steps of the module docstring)."""
        t0 = time.perf_counter()
        timed = self._stats.prefill_seconds + self._stats.draft_seconds + self._stats.verify_seconds
        self._reap()
        admitted = self.scheduler.schedule_admission()
        if admitted:
            t_prefill = time.perf_counter()
            self._admit(admitted)
            self._stats.prefill_seconds += time.perf_counter() - t_prefill
        running = self.scheduler.running
        if running:
            self._stats.steps += 1
            self._stats.peak_batch_size = max(self._stats.peak_batch_size, len(running))
            policy = self.config.policy
            speculates = bool(self.drafters or self.model_drafter) and self.config.gamma > 0
            if policy == "autoregressive" or not speculates:
                self._verify(running, [Draft() for _ in running])
            elif policy == "batched":
                self._verify(running, self._draft(running, adaptive=self.config.adaptive_gamma))
            else:  # fcfs_rounds: batched drafting, then one target forward per sequence, FIFO
                drafts = self._draft(running, adaptive=False)
                order = sorted(range(len(running)), key=lambda i: running[i].arrival)
                batch = list(running)
                for i in order:
                    if not batch[i].finished:
                        self._verify([batch[i]], [drafts[i]])
            self._release_finished()
        phases = (
            self._stats.prefill_seconds + self._stats.draft_seconds + self._stats.verify_seconds
        )
        self._stats.scheduler_seconds += max(0.0, time.perf_counter() - t0 - (phases - timed))
        if not self.scheduler.has_work:
            self._idle()

    def _admit(self, seqs: list[Sequence]) -> None:
        start = len(self.scheduler.running)
        seqs = self.admitter.order(seqs, self.scheduler.running)
        for offset, seq in enumerate(seqs):
            seq.row = start + offset
            seq.status = SeqStatus.RUNNING
        self.scheduler.running.extend(seqs)
        try:
            self.admitter.admit(seqs)
        except Exception as exc:
            for seq in seqs:
                self._fail(seq, exc)
        for seq in seqs:
            self._stats.spec.prompt_tokens += seq.stats.prompt_tokens
            self._stats.spec.cached_prompt_tokens += seq.stats.cached_prompt_tokens
            self._stats.spec.target_tokens += seq.stats.target_tokens

    # ----- drafting ----------------------------------------------------------------
    def _draft(self, running: list[Sequence], adaptive: bool) -> list[Draft]:
        """Step 2: drafters propose, the draft policy picks one draft per sequence.

        When ``adaptive`` it also picks one length cap for the step (0 = a plain step).
        """
        t0 = time.perf_counter()
        caps = [max(0, min(self.config.gamma, seq.remaining - 1)) for seq in running]
        candidates: list[list[Draft]] = [[] for _ in running]
        for drafter in self.drafters:
            for i, draft in enumerate(drafter.propose(running, caps)):
                if draft.tokens:
                    candidates[i].append(draft)
        if self.model_drafter is not None:
            md = self.model_drafter
            lens = caps
            if adaptive:
                per_position = self.policy.draft_cost.step_time(len(running))
                acceptance = [self.policy.acceptance.estimate(s, md.name) for s in running]
                lens = self.policy.choose_length(running, caps, acceptance, per_position)
            t_draft = time.perf_counter()
            forwards = md.runner.forwards
            for i, draft in enumerate(md.propose(running, lens)):
                if draft.tokens:
                    candidates[i].append(draft)
            if md.runner.forwards > forwards:
                per = (time.perf_counter() - t_draft) / (md.runner.forwards - forwards)
                self.policy.draft_cost.observe(len(running), per)
        chosen = [self.policy.best(seq, c) for seq, c in zip(running, candidates)]
        if adaptive:
            gammas = self.policy.choose_length(
                running,
                [len(d.tokens) for d in chosen],
                [self.policy.acceptance.estimate(s, d.drafter) for s, d in zip(running, chosen)],
            )
            for draft, g in zip(chosen, gammas):
                if g < len(draft.tokens):
                    draft.tokens = draft.tokens[:g]
                    if draft.probs is not None:
                        draft.probs = draft.probs[:g]
        self._stats.draft_seconds += time.perf_counter() - t0
        return chosen

    # ----- verification ------------------------------------------------------------
    def _verify(self, seqs: list[Sequence], drafts: list[Draft]) -> None:
        """One target forward over ``seqs`` (contiguous rows), then per-sequence acceptance."""
        t0 = time.perf_counter()
        feed = [[seq.last_token, *d.tokens] for seq, d in zip(seqs, drafts)]
        logits = self.runner.forward(seqs[0].row, feed)  # [b, q, vocab]
        assert logits is not None
        fed = sum(len(f) for f in feed)
        argmax = logits.argmax(dim=-1).tolist()  # [b, q]; the host sync ends the forward
        # The forward pads every row to the longest feed: b rows x p positions.
        self.policy.observe_step(len(feed), max(len(f) for f in feed), time.perf_counter() - t0)
        finite = torch.isfinite(logits).all(dim=-1).tolist()  # [b, q]
        self._stats.spec.target_tokens += fed
        for i, (seq, draft) in enumerate(zip(seqs, drafts)):
            try:
                n = len(feed[i])
                if not all(finite[i][:n]):
                    raise FloatingPointError(
                        f"non-finite logits (NaN/inf) from the target for request {seq.seq_id}"
                    )
                if seq.params.greedy:
                    accepted, nxt = accept_greedy(argmax[i][:n], draft.tokens)
                else:
                    p = process_logits(logits[i, :n], seq.params)  # [n, vocab]
                    if seq.params.seed is not None:  # repeatable: noise keyed by position
                        t = len(seq.output_ids)  # output positions t .. t + n - 1
                        positions = range(t, t + n)
                        noise = position_noise(seq.params.seed, positions, p.shape[-1], p.device)
                        accepted, nxt = accept_coupled(p, draft.tokens, noise)
                    else:
                        accepted, nxt = accept_sampling(p, draft.tokens, draft.probs, seq.generator)
                self.runner.keep(seq.row, self.runner.lengths[seq.row] + 1 + accepted)
                new_tokens = [*draft.tokens[:accepted], nxt]
                if self.model_drafter is not None:
                    self.model_drafter.rollback(seq, new_tokens)
                seq.stats.target_tokens += n
                seq.stats.record(draft.drafter or "none", len(draft.tokens), accepted)
                self._stats.spec.record(draft.drafter or "none", len(draft.tokens), accepted)
                self.policy.observe(seq, draft.drafter, len(draft.tokens), accepted)
                self._append(seq, new_tokens)
            except Exception as exc:
                self._fail(seq, exc)
        self._stats.verify_seconds += time.perf_counter() - t0

    def _append(self, seq: Sequence, tokens: list[int]) -> None:
        """Add verified tokens; finish on EOS / stop token / length / stop string."""
        before = len(seq.output_ids)
        for token in tokens:
            seq.output_ids.append(token)
            seq.stats.generated_tokens += 1
            self._stats.spec.generated_tokens += 1
            if (token in self.eos_ids and not seq.params.ignore_eos) or (
                token in seq.params.stop_token_ids
            ):
                seq.finish_reason = "stop"
                break
            if len(seq.output_ids) >= seq.params.max_tokens:
                seq.finish_reason = "length"
                break
        if self.text.update(seq):
            seq.finish_reason = "stop"
            self._trim_after_stop(seq, before)
        if seq.finish_reason is not None:
            seq.status = SeqStatus.FINISHED
        if seq.on_delta is not None:
            piece = self.text.delta(seq, final=seq.finished)
            if piece:
                seq.on_delta(piece)

    def _trim_after_stop(self, seq: Sequence, before: int) -> None:
        """Drop accepted tokens past the one that completed a stop string.

        Token by token decoding would have ended there, so the token ids (and counts) of
        a speculative step must end there too.
        """
        for end in range(before + 1, len(seq.output_ids)):
            text = self.text.decode(seq.output_ids[:end])
            if any(stop in text for stop in seq.params.stop):
                extra = len(seq.output_ids) - end
                del seq.output_ids[end:]
                seq.stats.generated_tokens -= extra
                self._stats.spec.generated_tokens -= extra
                return

    # ----- finishing ---------------------------------------------------------------
    def _fail(self, seq: Sequence, exc: BaseException) -> None:
        """Mark ``seq`` failed with ``exc`` (a cause recorded earlier is kept)."""
        seq.status = SeqStatus.FINISHED
        seq.finish_reason = "error"
        seq.meta.setdefault("error", exc)

    def _reap(self) -> None:
        """Finish cancelled and timed-out requests (running or waiting)."""
        now = time.monotonic()
        for seq in list(self.scheduler.waiting) + self.scheduler.running:
            if seq.future.cancelled():
                self._fail(seq, RequestCancelledError(f"request {seq.seq_id} cancelled"))
                self._stats.requests_cancelled += 1
            elif seq.deadline is not None and now > seq.deadline:
                self._fail(
                    seq,
                    TimeoutError(
                        f"request {seq.seq_id} exceeded request_timeout="
                        f"{seq.params.request_timeout}s"
                    ),
                )
        waiting = [s for s in self.scheduler.waiting if s.finished]
        for seq in waiting:
            self.scheduler.waiting.remove(seq)
            self._resolve(seq)
        self._release_finished()

    def _release_finished(self) -> None:
        """Resolve finished sequences and keep the rows of running ones contiguous."""
        running = self.scheduler.running
        i = 0
        while i < len(running):
            seq = running[i]
            if not seq.finished:
                i += 1
                continue
            last = running[-1]
            if last is not seq:
                self.runner.cache.move_row(last.row, seq.row)
                if self.model_drafter is not None:
                    self.model_drafter.move_row(last.row, seq.row)
                last.row = seq.row
                running[i] = last
            running.pop()
            self._resolve(seq)

    def _resolve(self, seq: Sequence) -> None:
        for drafter in self.drafters:
            drafter.release(seq)
        if self.model_drafter is not None:
            self.model_drafter.release(seq)
        self.prefix_cache.release(seq.prefix_handle)
        seq.prefix_handle = None
        seq.row = -1
        error = seq.meta.get("error")
        if error is not None:
            if not isinstance(error, RequestCancelledError):
                self._stats.requests_failed += 1
            _resolve_error(seq, error)
            return
        self._stats.requests_finished += 1
        result = GenerationResult(
            text=seq.text,
            token_ids=list(seq.output_ids),
            finish_reason=seq.finish_reason or "stop",
            prompt_tokens=len(seq.prompt_ids),
            stats=seq.stats,
            request_id=seq.seq_id,
            group=seq.group,
        )
        if not seq.future.done():
            try:
                seq.future.set_result(result)
            except Exception:  # cancelled concurrently
                pass

    def _fail_all(
        self, exc: BaseException, include_waiting: bool, also: Seq[Sequence] = ()
    ) -> None:
        """Fail every running request (and waiting ones) with ``exc``; free all state.

        After a failed step the KV rows may be half written, so no row is moved: every
        affected request is resolved with the cause, its drafter state (consensus group
        membership, model-draft bookkeeping) and prefix-cache references are released,
        and the KV buffers and the prefix cache are dropped.
        """
        seqs = [*also, *self.scheduler.running]
        self.scheduler.running.clear()
        if include_waiting:
            seqs += self.scheduler.waiting
            self.scheduler.waiting.clear()
        for seq in seqs:
            self._fail(seq, exc)
            try:
                self._resolve(seq)
            except Exception:  # releasing drafter state failed: the caller still hears why
                logger.exception("releasing request %s failed", seq.seq_id)
                self._stats.requests_failed += 1
                _resolve_error(seq, seq.meta.get("error", exc))
        self._free_memory()
        self.prefix_cache.clear()

    def _idle(self) -> None:
        """Nothing to do: give the KV buffers back (the prefix cache keeps its spans)."""
        self._free_memory()

    def _free_memory(self) -> None:
        self.runner.cache.release_memory()
        if self.model_drafter is not None:
            self.model_drafter.runner.cache.release_memory()


def _resolve_error(seq: Sequence, exc: BaseException) -> None:
    seq.status = SeqStatus.FINISHED
    future = seq.future
    if future is None or future.done():
        return
    try:
        future.set_exception(exc)
    except Exception:  # cancelled concurrently
        pass


def _peak_memory(device: str) -> int:
    if device.startswith("cuda") and torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    except ImportError:  # pragma: no cover - Windows
        return 0


@atexit.register
def _close_all() -> None:
    # A step in flight must end before the interpreter tears torch down (an abort
    # otherwise); steps are short, so waiting for it is cheap.
    for engine in list(_ALL_ENGINES):
        engine.close(timeout=60.0)
