"""Self-consistency: sample N answers to one prompt, return the majority vote.

With a :class:`~langchain_seed.SeedLLM` or :class:`~langchain_seed.ChatSeed` the N samples
of a question go to the engine as one group in one ``generate(..., n=N)`` call, so they
are decoded in one continuous batch and draft for each other (consensus drafting). A model
that takes ``n`` itself (an OpenAI-compatible client, e.g. ``ChatOpenAI`` on a vLLM server)
gets one ``generate([prompt], n=N)`` per question, all in flight at once; any other
LangChain LLM or chat model gets one ``.batch()`` with each prompt N times. The run is one
generator (:meth:`SelfConsistency._rounds`) driven by :mod:`langchain_seed.model_calls`,
the layer Tree of Thoughts uses too; the answer parsers are :mod:`langchain_seed.answers`.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

from langchain_core.callbacks.manager import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.language_models import BaseLanguageModel
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import BasePromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from pydantic import ConfigDict, Field, field_validator

from langchain_seed.answers import (
    gsm8k_answer,
    majority,
    normalize_answer,
    regex_parser,
    resolve_parser,
)
from langchain_seed.datasets import normalize_number
from langchain_seed.engine.config import sample_seed
from langchain_seed.model_calls import (
    ModelCall,
    Progress,
    Run,
    Sample,
    Totals,
    adrive,
    drive,
    engine_backed,
)

logger = logging.getLogger(__name__)

GSM8K_PROMPT = (
    "{question}\nSolve the problem step by step, then finish with "
    '"The answer is N." where N is the final number.'
)
"""Default prompt: asks for the "The answer is N" ending :func:`gsm8k_answer` reads best."""

PROGRESS_EVENT = "self_consistency_progress"
"""Name of the custom event dispatched after every sampling round (``astream_events``)."""

# ---------------------------------------------------------------------- state


@dataclass
class _Question:
    """Sampling state of one question."""

    prompt: PromptValue
    samples: list[dict[str, Any]] = field(default_factory=list)
    counters: list[Sample] = field(default_factory=list)
    """What the model reported about each sample (token and speculation counters)."""
    rounds: int = 0
    early_stopped: bool = False
    done: bool = False

    def votes(self) -> Counter[str]:
        return Counter(s["answer"] for s in self.samples if s["answer"] is not None)


def _decided(votes: Counter[str], remaining: int) -> bool:
    """True when the leader stays ahead even if every remaining sample votes for the runner-up."""
    top = votes.most_common(2)
    if not top:
        return False
    lead = top[0][1]
    runner_up = top[1][1] if len(top) > 1 else 0
    return lead > runner_up + remaining


class SelfConsistency(RunnableSerializable[dict[str, Any] | str, dict[str, Any]]):
    """Majority vote over N sampled completions of one prompt.

    Setup:
        ``pip install langchain-seed``; any LangChain LLM or chat model works, a
        ``SeedLLM`` / ``ChatSeed`` gets grouped, speculative batched sampling.

    Key init args:
        llm: the model. prompt: template or string with ``{question}``. n: samples.
        temperature, max_tokens, seed: sampling (engine-backed models, and models that take
        ``n`` such as ``ChatOpenAI`` over a vLLM server). parser: how to read an
        answer. early_stop: stop once the leading answer cannot be overtaken.

    Instantiate:
        .. code-block:: python

            from langchain_seed import ChatSeed, SelfConsistency
            from langchain_seed.self_consistency import gsm8k_answer

            sc = SelfConsistency(llm=ChatSeed(), n=16, parser=gsm8k_answer, early_stop=True)

    Invoke:
        .. code-block:: python

            out = sc.invoke({"question": "Tom has 3 apples and buys 2 more. How many?"})
            out["answer"], out["votes"], out["confidence"]

    Batch (all samples of all questions in one engine batch):
        .. code-block:: python

            sc.batch([{"question": q} for q in questions])

    Async and progress:
        .. code-block:: python

            await sc.ainvoke({"question": "..."})
            async for ev in sc.astream_events({"question": "..."}, version="v2"):
                if ev["event"] == "on_custom_event":
                    print(ev["data"])  # drawn, votes, leader after every round

    Early stop: samples are drawn in rounds of ``round_size`` (default
    ``max(ceil(n / 4), min(n, 4))``: a round is one engine group, and a group of at least
    four samples keeps consensus drafting useful);
    after each round the run stops when the leader's votes exceed the runner-up's plus the
    samples still to draw, i.e. no outcome of the remaining samples could change the
    answer (not even into a tie). Without ``early_stop`` all ``n`` samples are drawn in one
    round.

    Output: ``answer`` (``None`` when no sample parsed), ``votes`` (answer -> count, most
    first), ``confidence`` (leader votes / samples drawn), ``samples`` (``text`` and parsed
    ``answer``, ``None`` when unparsed) and ``stats`` (samples, unparsed, rounds,
    early_stopped, wall_seconds, engine_backed, and for engine-backed models generated
    tokens, acceptance and the engine's stats).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: BaseLanguageModel
    """Any LangChain LLM or chat model; ``SeedLLM`` / ``ChatSeed`` get one grouped call."""
    prompt: BasePromptTemplate | str = GSM8K_PROMPT
    """Prompt template (or template string) that turns the input into the model prompt."""
    n: int = Field(default=8, ge=1)
    """Number of samples per question."""
    temperature: float = Field(default=0.7, ge=0.0)
    """Sampling temperature for engine-backed models and models that take ``n`` (others use
    their own settings)."""
    max_tokens: int = Field(default=256, ge=1)
    """Most new tokens per sample (engine-backed models and models that take ``n``)."""
    parser: Any = None
    """Callable ``text -> answer``, regex string (last match, group 1 if any) or output
    parser; ``None`` is :func:`gsm8k_answer`. A parser that raises leaves that sample
    unparsed. ``ainvoke`` / ``abatch`` run it off the event loop (on a worker thread), so a
    slow parser, or a slow pattern on a degenerate sample, never stalls the loop."""
    early_stop: bool = False
    """Sample in rounds and stop once the leading answer can no longer be overtaken."""
    round_size: int | None = Field(default=None, ge=1)
    """Samples per round with ``early_stop``; ``None`` is ``max(ceil(n / 4), min(n, 4))``."""
    seed: int | None = None
    """Sampling seed for engine-backed models and models that take ``n`` (reproducible
    samples where the server honours seeds, as vLLM does)."""

    @field_validator("parser")
    @classmethod
    def _check_parser(cls, value: Any) -> Any:
        try:
            resolve_parser(value)
        except (TypeError, re.error) as exc:
            raise ValueError(f"parser: {exc}") from exc
        return value

    # ------------------------------------------------------------------ inputs

    def _template(self) -> BasePromptTemplate:
        if isinstance(self.prompt, str):
            return PromptTemplate.from_template(self.prompt)
        return self.prompt

    def _prompt_value(self, value: dict[str, Any] | str) -> PromptValue:
        template = self._template()
        if isinstance(value, str):
            names = template.input_variables
            if len(names) != 1:
                raise ValueError(
                    f"a string input needs a prompt with one variable, this one has {names}"
                )
            value = {names[0]: value}
        return template.invoke(value)

    @property
    def _chunk(self) -> int:
        if not self.early_stop:
            return self.n
        return self.round_size or max(math.ceil(self.n / 4), min(self.n, 4))

    # ------------------------------------------------------------------ voting

    def _parse(self, text: str) -> str | None:
        try:
            return normalize_answer(resolve_parser(self.parser)(text))
        except Exception as exc:  # noqa: BLE001 - any parser failure means "unparsed"
            logger.debug("parser failed on a sample: %s", exc)
            return None

    def _absorb(self, question: _Question, samples: list[Sample]) -> dict[str, Any]:
        """Add one round of samples to a question; returns the progress event payload."""
        for sample in samples:
            question.samples.append({"text": sample.text, "answer": self._parse(sample.text)})
            question.counters.append(sample)
        question.rounds += 1
        votes = question.votes()
        drawn = len(question.samples)
        if drawn >= self.n:
            question.done = True
        elif self.early_stop and _decided(votes, self.n - drawn):
            question.done = question.early_stopped = True
        leader = votes.most_common(1)
        return {
            "drawn": drawn,
            "n": self.n,
            "votes": dict(votes.most_common()),
            "leader": leader[0][0] if leader else None,
            "done": question.done,
            "early_stopped": question.early_stopped,
        }

    def _result(self, question: _Question, engine: dict, seconds: float, backed: bool) -> dict:
        votes = question.votes()
        ranked = votes.most_common()  # ties: the answer seen first wins
        drawn = len(question.samples)
        answer = ranked[0][0] if ranked else None
        stats: dict[str, Any] = {
            "samples": drawn,
            "unparsed": sum(1 for s in question.samples if s["answer"] is None),
            "rounds": question.rounds,
            "early_stopped": question.early_stopped,
            "wall_seconds": seconds,
            "engine_backed": backed,
        }
        counted = Totals.of(question.counters)
        if backed and counted.spec is not None:
            total = {
                "generated_tokens": counted.generated_tokens or 0,
                "drafted": counted.spec.drafted,
                "accepted": counted.spec.accepted,
                "verifications": counted.spec.verifications,
            }
            stats.update(total)
            stats["acceptance_rate"] = (
                total["accepted"] / total["drafted"] if total["drafted"] else 0.0
            )
            stats["mean_accepted_length"] = (
                1.0 + total["accepted"] / total["verifications"] if total["verifications"] else 0.0
            )
        if engine:
            stats["engine"] = engine
        return {
            "answer": answer,
            "votes": dict(ranked),
            "confidence": (ranked[0][1] / drawn) if ranked and drawn else 0.0,
            "samples": question.samples,
            "stats": stats,
        }

    # ------------------------------------------------------------------ runs

    def _rounds(
        self, inputs: list[dict[str, Any] | str], configs: list[RunnableConfig]
    ) -> Run[list[dict[str, Any]]]:
        """The whole run as a generator: one model call per round, a progress event per question.

        Every round samples all questions still open at once (each question's samples one
        engine group); questions that stopped early drop out of later rounds.
        """
        start = time.perf_counter()
        questions = [_Question(self._prompt_value(x)) for x in inputs]
        engine: dict[str, Any] = {}
        while active := [i for i, q in enumerate(questions) if not q.done]:
            drawn = len(questions[active[0]].samples)
            result = yield ModelCall(
                [questions[i].prompt for i in active],
                n=min(self._chunk, self.n - drawn),
                max_tokens=self.max_tokens,
                temperature=self.temperature,
                # sample j of a call uses seed + j: offset each round so rounds do not repeat
                seed=None if self.seed is None else sample_seed(self.seed, drawn),
                configs=[configs[i] for i in active],
            )
            assert result is not None
            engine = result.engine_stats or engine
            for i, row in zip(active, result.samples, strict=True):
                event = self._absorb(questions[i], row)
                yield Progress(PROGRESS_EVENT, event, configs[i])
        seconds = time.perf_counter() - start
        backed = engine_backed(self.llm)
        return [self._result(q, engine, seconds, backed) for q in questions]

    def _run_many(
        self,
        inputs: list[dict[str, Any] | str],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[dict[str, Any]]:
        # one config per input (names fixed by Runnable._batch_with_config)
        return drive(self._rounds(inputs, config), self.llm, config[0])

    async def _arun_many(
        self,
        inputs: list[dict[str, Any] | str],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[dict[str, Any]]:
        return await adrive(self._rounds(inputs, config), self.llm, config[0])

    def _invoke_one(
        self,
        value: dict[str, Any] | str,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        return self._run_many([value], run_manager=[run_manager], config=[config])[0]

    async def _ainvoke_one(
        self,
        value: dict[str, Any] | str,
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> dict[str, Any]:
        return (await self._arun_many([value], run_manager=[run_manager], config=[config]))[0]

    def invoke(
        self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Sample, parse and vote for one question.

        Args:
            input: the prompt's variables, or a string for a one-variable prompt.
            config: the run config (callbacks, tags, ...).
            **kwargs: ignored.

        Returns:
            ``answer``, ``votes``, ``confidence``, ``samples`` and ``stats``.
        """
        return self._call_with_config(self._invoke_one, input, config)

    async def ainvoke(
        self, input: dict[str, Any] | str, config: RunnableConfig | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        """Async :meth:`invoke`."""
        return await self._acall_with_config(self._ainvoke_one, input, config)

    def batch(
        self,
        inputs: list[dict[str, Any] | str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[dict[str, Any]]:
        """Many questions at once: every round samples all of them in one model call.

        With an engine-backed model that is one ``generate(..., n=...)`` call per round, each
        question's samples one engine group; questions that stopped early drop out of
        later rounds.

        Args:
            inputs: one input per question (see :meth:`invoke`).
            config: one config, or one per input.
            return_exceptions: return an exception in place of a failed question's output.
            **kwargs: ignored.

        Returns:
            One output per question, in input order.
        """
        if not inputs:
            return []
        return self._batch_with_config(
            cast(Any, self._run_many), inputs, config, return_exceptions=return_exceptions
        )

    async def abatch(
        self,
        inputs: list[dict[str, Any] | str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[dict[str, Any]]:
        """Async :meth:`batch`."""
        if not inputs:
            return []
        return await self._abatch_with_config(
            cast(Any, self._arun_many), inputs, config, return_exceptions=return_exceptions
        )


__all__ = [
    "GSM8K_PROMPT",
    "PROGRESS_EVENT",
    "SelfConsistency",
    "gsm8k_answer",
    "majority",
    "normalize_answer",
    "normalize_number",
    "regex_parser",
    "resolve_parser",
]
