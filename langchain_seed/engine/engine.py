"""Engine: continuous batching with scheduled speculative decoding, in five steps.

:meth:`Engine.step` is the design's five steps:

1. **admit** waiting requests within the KV budget (prefill, prefix reuse, group fork;
   on the own path step 3's forward feeds new prompts: :mod:`~.step_feed`);
2. **draft**: every drafter proposes, the draft policy picks one draft per sequence and
   its length (:mod:`~langchain_seed.engine.speculation.draft_policy`);
3. **verify** every sequence in one target forward (``fcfs_rounds``: one per sequence);
4. **accept** per sequence (:mod:`~langchain_seed.engine.speculation.verification`), roll
   rejected drafts back in every cache;
5. **finish** sequences (EOS, stop, length: :mod:`~langchain_seed.engine.finishing`) and
   settle their futures.

The runners own the tensors (:mod:`~langchain_seed.engine.execution`), the scheduler the
queue and the budget, the drafters their own state (told through hooks when a sequence
was verified or released). The engine holds the parts by composition: its models
(:class:`~langchain_seed.engine.execution.models.EngineModels`), its tokenizer face
(:class:`~langchain_seed.engine.text.tokenizer.ChatTokenizer`) and its service
(:class:`~langchain_seed.engine.serving.service.EngineService`: the queue and the engine
thread, which runs :meth:`Engine.step`).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import Any

from langchain_seed.engine.admission import Admitter
from langchain_seed.engine.coalescing import COALESCED, coalesce
from langchain_seed.engine.config import EngineConfig, SamplingParams
from langchain_seed.engine.execution.loading import LoadedModel
from langchain_seed.engine.execution.models import EngineModels
from langchain_seed.engine.execution.prefix_cache import PrefixCache
from langchain_seed.engine.execution.runner import ModelRunner
from langchain_seed.engine.finishing import Finishing
from langchain_seed.engine.results import (
    GenerationResult,
)
from langchain_seed.engine.scheduler import Scheduler
from langchain_seed.engine.sequence import SeqStatus, SequenceState
from langchain_seed.engine.serving import compute
from langchain_seed.engine.serving.client import EngineClient, Prompt, SharedEngines
from langchain_seed.engine.serving.service import EngineService
from langchain_seed.engine.speculation.draft_policy import DraftPolicy
from langchain_seed.engine.speculation.drafters import build_drafters
from langchain_seed.engine.speculation.drafters.base import Draft, Drafter, call_hook
from langchain_seed.engine.speculation.drafters.model import ModelDrafter
from langchain_seed.engine.speculation.verification import Verdict
from langchain_seed.engine.stats import EngineStats, peak_memory
from langchain_seed.engine.step_feed import StepFeed, constrain, prompt_chunks, whole
from langchain_seed.engine.text.detokenizer import TextTracker
from langchain_seed.engine.text.grammar import GrammarCompiler
from langchain_seed.engine.text.tokenizer import ChatTokenizer

__all__ = ["EMBEDDED_ENGINES", "Engine"]

logger = logging.getLogger(__name__)


class Engine(EngineClient):
    """Continuous-batching engine with scheduled speculative decoding.

    Args:
        config: what to load and how to schedule. Keyword arguments are
            :class:`EngineConfig` fields: they build one, or override ``config``'s (an
            unknown one raises ``ValueError``).
        extra_drafters: custom :class:`Drafter` objects asked next to the configured ones
            (any object with ``name``, ``propose`` and ``release``; see
            :class:`~langchain_seed.engine.speculation.drafters.base.Drafter` for the
            optional hooks).

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
        self.config = EngineConfig.of(config, **kwargs)
        self.models = EngineModels(self.config)
        try:
            self._build(extra_drafters)
        except BaseException:
            self.models.release()
            raise
        self.service = EngineService(self.config, self.scheduler, self, self.runner.device)
        EMBEDDED_ENGINES.track(self)

    def _build(self, extra_drafters: Seq[Drafter]) -> None:
        cfg, models = self.config, self.models
        self.runner, self.runners = models.runner, models.runners
        self.tokenizer = models.target.tokenizer
        self._tok_lock = threading.Lock()
        self.chat = ChatTokenizer(self.tokenizer, self._tok_lock)
        """Prompts and chat templates (under the lock the detokenizer shares)."""
        self.drafters: list[Drafter] = build_drafters(
            cfg.drafters,
            encode_text=self.chat.encode_text,
            draft_runner=models.draft_runner if cfg.draft_model is not None else None,
            extra=extra_drafters,
        )
        for drafter in self.drafters:
            runner = getattr(drafter, "runner", None)
            if isinstance(runner, ModelRunner):
                models.add_runner(drafter.name, runner)
        self.text = TextTracker(self.tokenizer, self._tok_lock)
        self.eos_ids = models.eos_ids
        self.grammars = GrammarCompiler(
            self.tokenizer, self.vocab_size, self.eos_ids, self._tok_lock
        )
        """Compiles the grammars of constrained requests (xgrammar, loaded on first use)."""
        self.scheduler = Scheduler(cfg)
        self.draft_policy = DraftPolicy(cfg.gamma, packed=self.runner.packs)
        self.prefix_cache = PrefixCache(cfg.prefix_cache_tokens)
        self.admitter = Admitter(
            self.runners,
            self.prefix_cache,
            defer=self.runner.own is not None and cfg.step_prefill_tokens > 0,
        )
        self.finishing = Finishing(
            self.eos_ids, self.text, self.scheduler, self.runners, self.drafters,
            self.prefix_cache,
        )  # fmt: skip
        self._stats = EngineStats()

    @classmethod
    def shared(cls, config: EngineConfig | None = None, **kwargs: Any) -> Engine:
        """The process-wide engine for this configuration (created on first use).

        ``kwargs`` are :class:`EngineConfig` fields: they build the configuration, or
        override those of ``config`` (an unknown one raises ``ValueError``).
        """
        cfg = EngineConfig.of(config, **kwargs)
        key = tuple(getattr(cfg, f.name) for f in dataclasses.fields(cfg))  # every field
        return EMBEDDED_ENGINES.get(key, lambda: cls(cfg))

    @staticmethod
    def close_shared() -> int:
        """Close every shared engine of this process; returns how many were closed.

        Each shared engine keeps its thread, its KV buffers, its prefix cache and its models
        until it is closed: close the engines of a finished job to give that memory back (a
        model's weights are freed when the last engine using it closes).
        """
        return EMBEDDED_ENGINES.close_all()

    @property
    def target(self) -> LoadedModel:
        """The target model and its tokenizer (a stand-in model once the engine closed)."""
        return self.models.target

    @property
    def model_drafter(self) -> ModelDrafter | None:
        """The draft-model drafter, if one is configured."""
        return next((d for d in self.drafters if isinstance(d, ModelDrafter)), None)

    @property
    def model_name(self) -> str:
        """Display name of the target model."""
        return self.target.name

    @property
    def max_context(self) -> int:
        """Context length of the target model in tokens."""
        return self.runner.max_positions

    @property
    def vocab_size(self) -> int:
        """Rows of the target's input embedding: valid token ids are below it."""
        return self.models.vocab_size

    # ----- submission (EngineClient) --------------------------------------------------
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

        Requests of the batch in one group with the same prompt and the same deterministic
        parameters (greedy, or one seed), say the ``n`` greedy samples of a prompt, are
        decoded once and each gets its own result (:mod:`~langchain_seed.engine.coalescing`;
        not when streaming with ``on_delta``). They count once against ``max_queue``.

        With a bounded queue (``max_queue``), a batch that does not fit waits for room
        (``queue_full="block"``) or raises (``"error"``); see
        :meth:`EngineService.enqueue` for batches larger than the queue.

        Raises:
            ValueError: an empty or over-long prompt, or a params list of the wrong length.
            EngineClosedError: the engine is closed.
            QueueFullError: ``queue_full="error"`` and the queue has no room for the batch,
                or the batch is larger than ``max_queue``.
        """
        plist, groups = self._per_prompt(prompts, params, group)
        made = [self._sequence(p, sp, g, on_delta) for p, sp, g in zip(prompts, plist, groups)]
        futures = [s.future for s in made]  # the callers' (coalescing gives leaders another)
        queued = self.service.enqueue(coalesce(made))  # identical requests decode once
        self._stats.requests_coalesced += sum(s.meta.get(COALESCED, 0) for s in queued)
        return futures

    def _cache_token_limit(self) -> int | None:
        return self.config.max_cache_tokens

    def _sequence(
        self,
        prompt: Prompt,
        params: SamplingParams,
        group: str | None,
        on_delta: Callable[[str], None] | None,
    ) -> SequenceState:
        """A request's sequence, checked and with its grammar compiled (errors raise here)."""
        ids = self.check_prompt(prompt, params)
        seq = SequenceState(prompt_ids=ids, params=params, group=group, on_delta=on_delta)
        if params.request_timeout is not None:
            seq.deadline = time.monotonic() + params.request_timeout
        seq.future = Future()
        seq.stats.prompt_tokens = len(ids)
        if params.grammar is not None:
            seq.grammar = self.grammars.matcher(params.grammar)
        return seq

    def stats(self) -> EngineStats:
        """A snapshot of the engine-wide counters (safe to keep).

        Taken on the compute thread, so between steps of every engine; from an ``on_delta``
        callback (which runs inside a step on that thread) it is taken at once, with the
        counters as far as the step has come. Never waits on a step lock: a callback that
        asks would otherwise wait for the step that is calling it.
        """

        def snapshot() -> EngineStats:
            stats = copy.deepcopy(self._stats)
            stats.target_forwards, stats.draft_forwards = self.models.forward_counts()
            stats.kv_pool_bytes, stats.kv_budget_bytes = self.models.kv_bytes()
            stats.prefix_cache = self.prefix_cache.stats()
            return stats

        stats = compute.run(snapshot)
        stats.peak_memory_bytes = peak_memory(self.config.device)
        return stats

    def reset_stats(self) -> None:
        """Start counting afresh (forward counters included).

        Runs on the compute thread like :meth:`stats` (from a callback: at once).
        """

        def reset() -> None:
            self._stats = EngineStats()
            self.models.reset_forward_counts()

        compute.run(reset)

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self.service.closed

    def close(self, timeout: float = 10.0) -> None:
        """Stop the engine thread and free its memory.

        Pending requests fail with :class:`EngineClosedError`; the KV buffers and the
        prefix cache are released, the models are given back (their weights are freed
        when no other engine uses them), and a shared engine leaves the registry, so the
        next :meth:`shared` call builds a fresh one.
        """
        EMBEDDED_ENGINES.remove(self)
        self.service.close(timeout)

    def stopped(self) -> None:
        """The engine thread ended: leave the registry, give the models back."""
        EMBEDDED_ENGINES.remove(self)
        self.models.release()

    # ----- the step ----------------------------------------------------------------
    def step(self) -> None:
        """One engine step: admit, draft, verify, accept, finish (the module docstring)."""
        t0 = time.perf_counter()
        counters = self._stats  # a callback may reset_stats() mid-step
        timed = counters.phase_seconds()
        self.finishing.reap(self._stats)
        admitted = self.scheduler.schedule_admission()
        if admitted:
            t_prefill = time.perf_counter()
            self._admit(admitted)  # 1. admit
            self._stats.prefill_seconds += time.perf_counter() - t_prefill
            self._finish()  # requests that failed at admission leave now
        running = list(self.scheduler.running)
        if running:
            self._stats.steps += 1
            self._stats.peak_batch_size = max(self._stats.peak_batch_size, len(running))
            chunks = prompt_chunks(running, self.config.step_prefill_tokens)
            # No drafts while a row is fed a part of its prompt (drafters see whole batches).
            drafts = self._draft(running) if whole(running, chunks) else [Draft() for _ in running]
            drafts = constrain(running, drafts)  # 2. draft
            if self.config.policy == "fcfs_rounds":  # one forward per sequence, FIFO
                for i in sorted(range(len(running)), key=lambda i: running[i].arrival):
                    if running[i].finished:
                        continue
                    verdicts = self._verify([running[i]], [drafts[i]], [chunks[i]])  # 3.
                    self._accept([running[i]], [drafts[i]], verdicts)  # 4. accept
            else:
                verdicts = self._verify(running, drafts, chunks)  # 3. verify
                self._accept(running, drafts, verdicts)  # 4. accept
            self._finish()  # 5. finish
        elapsed = time.perf_counter() - t0
        if self._stats is counters:
            self._stats.scheduler_seconds += max(0.0, elapsed - (counters.phase_seconds() - timed))
        if not self.scheduler.has_work:
            self.models.free_memory()  # idle: give the KV pools back (prefix cache kept)

    def _admit(self, seqs: list[SequenceState]) -> None:
        """Step 1: rows for the admitted sequences, a KV layout that fits, their prompt KV."""
        running = self.scheduler.running
        start = len(running)
        seqs = self.admitter.order(seqs, running)
        capacity = self.scheduler.row_width([*running, *seqs], self.runner.cache.capacity)
        for runner in self.runners.values():
            runner.cache.layout(capacity, live_rows=start)
        for offset, seq in enumerate(seqs):
            seq.row = start + offset
            seq.status = SeqStatus.RUNNING
        running.extend(seqs)
        try:
            self.admitter.admit(seqs)
        except Exception as exc:
            for seq in seqs:
                seq.fail(exc)
        for seq in seqs:
            self._stats.spec.prompt_tokens += seq.stats.prompt_tokens
            self._stats.spec.cached_prompt_tokens += seq.stats.cached_prompt_tokens
            self._stats.spec.target_tokens += seq.stats.target_tokens

    def _draft(self, running: list[SequenceState]) -> list[Draft]:
        """Step 2: one draft per sequence from the drafters, sized by the draft policy."""
        cfg = self.config
        if cfg.policy == "autoregressive" or not self.drafters or cfg.gamma == 0:
            return [Draft() for _ in running]
        t0 = time.perf_counter()
        adaptive = cfg.adaptive_gamma and cfg.policy == "batched"
        failures = self._stats.drafter_failures
        drafts = self.draft_policy.draft(
            running, self.drafters, adaptive=adaptive, failures=failures
        )
        self._stats.draft_seconds += time.perf_counter() - t0
        return drafts

    def _verify(
        self, seqs: list[SequenceState], drafts: list[Draft], chunks: list[list[int]]
    ) -> list[Verdict | None]:
        """Step 3: one target forward over ``seqs`` (contiguous rows) and its verdicts.

        ``chunks``: prompt tokens fed ahead of each row's pending token (the unified step,
        :mod:`~langchain_seed.engine.step_feed`); a row still prefilling gets ``None``.
        """
        t0 = time.perf_counter()
        runner = self.runner
        feed = StepFeed(seqs, drafts, chunks, runner)  # staged before the forward
        if feed.empty:
            return [None] * len(seqs)
        logits = feed.forward(runner)  # [b, s, vocab]
        feed.fed_prompts(runner, self.admitter.complete)
        verdicts = feed.verdicts(logits)  # ends with the step's one host copy
        seconds = time.perf_counter() - t0
        fed = [len(f) for f in feed.feeds]
        if not feed.prefilling:  # the cost model learns decode and verification steps
            self.draft_policy.observe_step(len(seqs), runner.computed_tokens(fed), seconds)
        self._stats.spec.target_tokens += sum(fed)
        self._stats.verify_seconds += seconds
        return verdicts

    def _accept(
        self, seqs: list[SequenceState], drafts: list[Draft], verdicts: list[Verdict | None]
    ) -> None:
        """Step 4: keep each row's accepted tokens, roll the rest back, tell the drafters."""
        t0 = time.perf_counter()
        for seq, draft, verdict in zip(seqs, drafts, verdicts):
            if seq.finished or verdict is None:  # failed earlier in this step; prefilling
                continue
            try:
                if not verdict.finite:
                    raise FloatingPointError(
                        f"non-finite logits or sampling probabilities (NaN/inf) from the target "
                        f"for request {seq.seq_id}"
                    )
                accepted = verdict.accepted
                self.runner.keep(seq.row, self.runner.lengths[seq.row] + 1 + accepted)
                new_tokens = [*draft.tokens[:accepted], verdict.next_token]
                if seq.grammar is not None:
                    seq.grammar.advance(new_tokens)
                call_hook(self.drafters, "verified", seq, new_tokens)
                seq.stats.target_tokens += 1 + len(draft.tokens)
                seq.stats.record(draft.drafter or "none", len(draft.tokens), accepted)
                self._stats.spec.record(draft.drafter or "none", len(draft.tokens), accepted)
                self.draft_policy.observe(seq, draft.policy_key, len(draft.tokens), accepted)
                self.finishing.append(seq, new_tokens, verdict.logprobs, self._stats.spec)
            except Exception as exc:
                seq.fail(exc)
        self._stats.verify_seconds += time.perf_counter() - t0

    def _finish(self) -> None:
        """Step 5: finished sequences leave the batch; their callers get results or errors."""
        self.finishing.release_finished(self._stats)

    def fail_all(
        self, exc: BaseException, include_waiting: bool, also: Seq[SequenceState] = ()
    ) -> None:
        """Fail every running request (and waiting ones) with ``exc``; free all state.

        The KV buffers and the prefix cache are dropped too: after a failed step the KV
        rows may be half written.
        """
        self.finishing.fail_all(exc, include_waiting, also, self._stats)
        self.models.free_memory()
        self.prefix_cache.clear()


EMBEDDED_ENGINES: SharedEngines[Engine] = SharedEngines(exit_timeout=60.0)
"""The process's embedded engines: the shared ones by configuration (:meth:`Engine.shared`),
and every engine, closed at interpreter exit (a step in flight must end before the
interpreter tears torch down: an abort otherwise)."""
