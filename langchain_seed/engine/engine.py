"""Engine: the decoding half. :meth:`Engine.step` is the design's five steps.

Every step:

1. **admit** waiting requests within the KV budget (prefill, prefix reuse, group fork);
2. **draft**: every drafter proposes, the draft policy picks one draft per sequence and
   its length (:mod:`~langchain_seed.engine.speculation.draft_policy`);
3. **verify** every sequence in one target forward (``fcfs_rounds``: one per sequence);
4. **accept** per sequence (:mod:`~langchain_seed.engine.speculation.sampling`), roll
   rejected drafts back in every cache;
5. **finish** sequences (EOS, stop, length) and resolve their futures.

The runner owns the tensors, the scheduler the queue and the budget, the drafters their
own state (told through hooks when a sequence was verified, moved or released). The
submission side (queue, futures, streaming, the thread) is
:class:`~langchain_seed.engine.serving.service.EngineService`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
import time
from collections.abc import Sequence as Seq
from typing import Any, cast

import torch

from langchain_seed.engine.admission import Admitter
from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.execution.loading import (
    LoadedModel,
    chat_prompt_ids,
    release_model,
    shared_model,
    template_renders_tools,
    template_tool_format,
)
from langchain_seed.engine.execution.prefix_cache import PrefixCache
from langchain_seed.engine.execution.runner import ModelRunner, ReleasedModel, context_length
from langchain_seed.engine.results import (
    GenerationResult,
    RequestCancelledError,
    TextDelta,
    TokenLogprob,
)
from langchain_seed.engine.scheduler import Scheduler
from langchain_seed.engine.sequence import SeqStatus, Sequence, check_text
from langchain_seed.engine.serving.service import (
    EngineService,
    Prompt,
    _resolve_error,
    _timeout_error,
)
from langchain_seed.engine.speculation.draft_policy import DraftPolicy
from langchain_seed.engine.speculation.drafters.base import Draft, Drafter, call_hook
from langchain_seed.engine.speculation.drafters.grammar import GrammarDrafter
from langchain_seed.engine.speculation.drafters.model import ModelDrafter
from langchain_seed.engine.speculation.drafters.ngram import NgramDrafter
from langchain_seed.engine.speculation.verification import Verdict, Verification
from langchain_seed.engine.stats import EngineStats
from langchain_seed.engine.text.detokenizer import TextTracker, token_bytes
from langchain_seed.engine.text.grammar import GrammarCompiler

__all__ = ["Engine", "Prompt", "check_same_vocabulary", "release_model", "shared_model"]

logger = logging.getLogger(__name__)


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


def _check_texts(where: str, value: Any) -> None:
    """Raise ``ValueError`` naming ``where`` for a string in ``value`` that is not valid text."""
    if isinstance(value, str):
        check_text(where, value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(f"{where}[{key!r}]", item)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_texts(f"{where}[{i}]", item)


class Engine(EngineService):
    """Continuous-batching engine with scheduled speculative decoding.

    Args:
        config: what to load and how to schedule. Keyword arguments are
            :class:`EngineConfig` fields: they build one, or override ``config``'s (an
            unknown one raises ``ValueError``).
        extra_drafters: custom :class:`Drafter` objects asked next to the configured ones
            (any object with ``name``, ``propose`` and ``release``; see
            :class:`~langchain_seed.engine.speculation.drafters.base.Drafter` for the optional
            hooks).

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
        self._model_keys: list[tuple[str | None, str, str]] = []
        """The ``shared_model`` references this engine holds (given back when it closes)."""
        try:
            self._build(extra_drafters)
        except BaseException:
            self._release_models()
            raise
        self._start_service()

    def _build(self, extra_drafters: Seq[Drafter]) -> None:
        cfg = self.config
        self.target = self._load(cfg.model)
        self.tokenizer = self.target.tokenizer
        self._max_context = context_length(self.target.model)
        embeddings = cast(torch.nn.Embedding, self.target.model.get_input_embeddings())
        self._vocab_size = int(embeddings.num_embeddings)
        self.runner = ModelRunner(
            self.target.model, cfg.max_batch_size, cfg.device, cfg.max_cache_tokens,
            cfg.execution, cfg.deterministic,
        )  # fmt: skip
        self.drafters: list[Drafter] = []
        for name in cfg.drafters:
            if name == "ngram":
                self.drafters.append(NgramDrafter())
            elif name == "consensus":
                from langchain_seed.engine.speculation.drafters.consensus import ConsensusDrafter

                self.drafters.append(ConsensusDrafter())
            elif name == "grammar":
                self.drafters.append(GrammarDrafter(self._encode_text))
            elif name == "model" and cfg.draft_model is not None:
                draft = self._load(cfg.draft_model)
                check_same_vocabulary(self.target, draft)
                draft_runner = ModelRunner(
                    draft.model, cfg.max_batch_size, cfg.device, cfg.max_cache_tokens,
                    cfg.execution,
                    # drafts never change the output: never required to be invariant
                    False if cfg.deterministic is False else None,
                )  # fmt: skip
                self.drafters.append(ModelDrafter(draft_runner))
        self.drafters.extend(extra_drafters)
        names = [d.name for d in self.drafters]
        if len(set(names)) != len(names):
            raise ValueError(f"drafter names must be unique, got {names}")
        self.scheduler = Scheduler(cfg)
        self.policy = DraftPolicy(cfg.gamma, packed=self.runner.packs)
        self.prefix_cache = PrefixCache(cfg.prefix_cache_tokens)
        self._tok_lock = threading.Lock()
        self.text = TextTracker(self.tokenizer, self._tok_lock)
        self.runners: dict[str, ModelRunner] = {"target": self.runner}
        """Every model whose KV cache follows the batch's rows: the target and draft models."""
        for drafter in self.drafters:
            runner = getattr(drafter, "runner", None)
            if isinstance(runner, ModelRunner):
                self.runners[drafter.name] = runner
        self.admitter = Admitter(self.runners, self.prefix_cache)
        self.eos_ids = self._eos_ids()
        self.grammars = GrammarCompiler(
            self.tokenizer, self.vocab_size, self.eos_ids, self._tok_lock
        )
        """Compiles the grammars of constrained requests (xgrammar, loaded on first use)."""
        self._stats = EngineStats()

    def _load(self, model: str | None) -> LoadedModel:
        """The process's copy of ``model`` (a reference this engine gives back on close)."""
        cfg = self.config
        loaded = shared_model(model, cfg.device, cfg.dtype)
        self._model_keys.append((model, cfg.device, cfg.dtype))
        return loaded

    def _release_models(self) -> None:
        """Give back this engine's model references and drop its own pointers to the weights.

        Runs once the engine thread has ended (or when building failed): the last engine
        of a model to close frees its weights, even while a caller still holds the closed
        engine object.
        """
        keys, self._model_keys = self._model_keys, []
        for runner in getattr(self, "runners", {}).values():
            runner.release_model()
        if hasattr(self, "target"):
            self.target = dataclasses.replace(self.target, model=cast(Any, ReleasedModel()))
        for key in keys:
            release_model(*key)

    @property
    def model_drafter(self) -> ModelDrafter | None:
        """The draft-model drafter, if one is configured."""
        return next((d for d in self.drafters if isinstance(d, ModelDrafter)), None)

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
        return self._max_context

    @property
    def vocab_size(self) -> int:
        """Rows of the target's input embedding: valid token ids are below it."""
        return self._vocab_size

    def _encode_text(self, text: str) -> list[int]:
        """Token ids of a piece of output text (no special tokens)."""
        with self._tok_lock:
            return list(self.tokenizer.encode(text, add_special_tokens=False))

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt text (special tokens as the tokenizer adds them).

        Raises:
            ValueError: ``text`` has a lone surrogate (it is not valid Unicode text).
        """
        check_text("text", text)
        with self._tok_lock:
            return list(self.tokenizer.encode(text))

    @functools.cached_property
    def tool_call_format(self) -> str:
        """How the chat template writes tool calls: ``"hermes"``, ``"llama"`` or ``"none"``."""
        with self._tok_lock:
            return template_tool_format(self.tokenizer)

    def token_bytes(self, ids: Seq[int]) -> list[bytes]:
        """The bytes each token of ``ids`` stands for (part of a character, at times)."""
        with self._tok_lock:
            return token_bytes(self.tokenizer, list(ids))

    @property
    def chat_template_renders_tools(self) -> bool:
        """Whether the tokenizer's chat template takes ``tools`` (renders tool schemas)."""
        return template_renders_tools(self.tokenizer)

    def render_chat(self, messages: Seq[dict[str, Any]], **template_kwargs: Any) -> list[int]:
        """Prompt token ids of chat ``messages`` through the tokenizer's chat template.

        Rendered under the engine's tokenizer lock: the engine thread decodes with the
        same tokenizer, and fast tokenizers are not safe to share across threads.

        Args:
            messages: ``{"role": ..., "content": ...}`` turns.
            **template_kwargs: passed to ``apply_chat_template`` (e.g. ``tools``).
        """
        for i, message in enumerate(messages):
            _check_texts(f"messages[{i}]", message)
        with self._tok_lock:
            return chat_prompt_ids(self.tokenizer, messages, **template_kwargs)

    # ----- the step ----------------------------------------------------------------
    def step(self) -> None:
        """One engine step: admit, draft, verify, accept, finish (the module docstring)."""
        t0 = time.perf_counter()
        counters = self._stats  # a callback may reset_stats() mid-step
        timed = counters.phase_seconds()
        self._reap()
        admitted = self.scheduler.schedule_admission()
        if admitted:
            t_prefill = time.perf_counter()
            self._admit(admitted)  # 1. admit
            self._stats.prefill_seconds += time.perf_counter() - t_prefill
            self._release_finished()  # requests that failed at admission leave now
        running = list(self.scheduler.running)
        if running:
            self._stats.steps += 1
            self._stats.peak_batch_size = max(self._stats.peak_batch_size, len(running))
            drafts = self._constrain(running, self._draft(running))  # 2. draft
            if self.config.policy == "fcfs_rounds":  # one forward per sequence, FIFO
                for i in sorted(range(len(running)), key=lambda i: running[i].arrival):
                    if running[i].finished:
                        continue
                    verdicts = self._verify([running[i]], [drafts[i]])  # 3. verify
                    self._accept([running[i]], [drafts[i]], verdicts)  # 4. accept
            else:
                verdicts = self._verify(running, drafts)  # 3. verify
                self._accept(running, drafts, verdicts)  # 4. accept
            self._release_finished()  # 5. finish
        elapsed = time.perf_counter() - t0
        if self._stats is counters:
            self._stats.scheduler_seconds += max(0.0, elapsed - (counters.phase_seconds() - timed))
        if not self.scheduler.has_work:
            self._free_memory()  # idle: give the KV pools back (the prefix cache keeps its spans)

    def _admit(self, seqs: list[Sequence]) -> None:
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
                self._fail(seq, exc)
        for seq in seqs:
            self._stats.spec.prompt_tokens += seq.stats.prompt_tokens
            self._stats.spec.cached_prompt_tokens += seq.stats.cached_prompt_tokens
            self._stats.spec.target_tokens += seq.stats.target_tokens

    def _draft(self, running: list[Sequence]) -> list[Draft]:
        """Step 2: one draft per sequence from the drafters, sized by the draft policy."""
        cfg = self.config
        if cfg.policy == "autoregressive" or not self.drafters or cfg.gamma == 0:
            return [Draft() for _ in running]
        t0 = time.perf_counter()
        adaptive = cfg.adaptive_gamma and cfg.policy == "batched"
        failures = self._stats.drafter_failures
        drafts = self.policy.draft(running, self.drafters, adaptive=adaptive, failures=failures)
        self._stats.draft_seconds += time.perf_counter() - t0
        return drafts

    def _constrain(self, running: list[Sequence], drafts: list[Draft]) -> list[Draft]:
        """Step 2, grammars: cut each constrained draft at its first refused token, with masks.

        Every constrained row gets a token bitmask per verified position, drafted or not
        (see :mod:`~langchain_seed.engine.text.grammar` for where a draft is cut and why).
        """
        out = []
        for seq, draft in zip(running, drafts):
            if seq.grammar is None:
                out.append(draft)
                continue
            rejection = not seq.params.greedy and seq.params.seed is None
            try:
                out.append(
                    seq.grammar.constrain(draft, keep_refused=rejection and draft.probs is not None)
                )
            except Exception as exc:
                self._fail(seq, exc)
                out.append(Draft())
        return out

    def _prepare(self, seq: Sequence) -> None:
        """A constrained request's grammar, compiled at submission (errors raise there)."""
        if seq.params.grammar is not None:
            seq.grammar = self.grammars.matcher(seq.params.grammar)

    def _verify(self, seqs: list[Sequence], drafts: list[Draft]) -> list[Verdict]:
        """Step 3: one target forward over ``seqs`` (contiguous rows) and its verdicts."""
        t0 = time.perf_counter()
        runner = self.runner
        staged = Verification(seqs, drafts, runner.device, runner.vocab_size)  # before the forward
        logits = runner.forward(seqs[0].row, staged.feed)  # [b, s, vocab]
        assert logits is not None
        verdicts = staged.verify(logits)  # ends with the step's one host copy
        seconds = time.perf_counter() - t0
        fed = [1 + len(d.tokens) for d in drafts]
        self.policy.observe_step(len(seqs), self.runner.computed_tokens(fed), seconds)
        self._stats.spec.target_tokens += sum(1 + len(d.tokens) for d in drafts)
        self._stats.verify_seconds += seconds
        return verdicts

    def _accept(self, seqs: list[Sequence], drafts: list[Draft], verdicts: list[Verdict]) -> None:
        """Step 4: keep each row's accepted tokens, roll the rest back, tell the drafters."""
        t0 = time.perf_counter()
        for seq, draft, verdict in zip(seqs, drafts, verdicts):
            if seq.finished:  # failed earlier in this step (its grammar, say)
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
                self.policy.observe(seq, draft.policy_key, len(draft.tokens), accepted)
                self._append(seq, new_tokens, verdict.logprobs)
            except Exception as exc:
                self._fail(seq, exc)
        self._stats.verify_seconds += time.perf_counter() - t0

    def _append(
        self,
        seq: Sequence,
        tokens: list[int],
        logprobs: Seq[TokenLogprob] | None = None,
    ) -> None:
        """Add verified tokens (and their logprobs); finish on EOS / stop / length / stop string."""
        before = len(seq.output_ids)
        for i, token in enumerate(tokens):
            seq.output_ids.append(token)
            if seq.logprobs is not None and logprobs is not None:
                seq.logprobs.append(logprobs[i])
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
                seq.on_delta(self._with_logprobs(seq, piece))

    @staticmethod
    def _with_logprobs(seq: Sequence, piece: str) -> str:
        """``piece`` as a :class:`TextDelta` with the entries not streamed yet, if asked for."""
        if seq.logprobs is None:
            return piece
        fresh, seq.streamed_logprobs = seq.logprobs[seq.streamed_logprobs :], len(seq.logprobs)
        return TextDelta(piece, fresh)

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
                if seq.logprobs is not None:
                    del seq.logprobs[end:]
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
                self._fail(seq, _timeout_error(seq))
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
                for runner in self.runners.values():
                    runner.cache.move_row(last.row, seq.row)
                call_hook(self.drafters, "row_moved", last.row, seq.row)
                last.row = seq.row
                running[i] = last
            running.pop()
            self._resolve(seq)

    def _resolve(self, seq: Sequence) -> None:
        for drafter in self.drafters:
            drafter.release(seq)
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
            logprobs=None if seq.logprobs is None else list(seq.logprobs),
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

    def _free_memory(self) -> None:
        for runner in self.runners.values():
            runner.cache.release_memory()
        call_hook(self.drafters, "reset")

    def _forward_counts(self) -> tuple[int, int]:
        draft = sum(r.forwards for name, r in self.runners.items() if name != "target")
        return self.runner.forwards, draft

    def _kv_bytes(self) -> tuple[int, int]:
        caches = [r.cache for r in self.runners.values()]
        return sum(c.nbytes() for c in caches), sum(c.budget_bytes() or 0 for c in caches)

    def _reset_forward_counts(self) -> None:
        for runner in self.runners.values():
            runner.forwards = 0
