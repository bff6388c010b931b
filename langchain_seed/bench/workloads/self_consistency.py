"""``sc-n<n>``: ``SelfConsistency`` on GSM8K, ``n`` samples per question, one batch."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.results import DEFAULT_BASELINES, REFERENCE_METHOD, RunOutput
from langchain_seed.bench.workloads.common import (
    chat_prompt_template,
    chat_text,
    field_of,
    runnable_output,
)
from langchain_seed.datasets import gsm8k_gold, gsm8k_rows, normalize_number
from langchain_seed.engine.config import SamplingParams


@dataclass
class SelfConsistencyWorkload:
    """``SelfConsistency`` over GSM8K: ``n`` samples per question, all questions in one batch."""

    questions: int = 10
    n: int = 16
    max_tokens: int = 192
    temperature: float = 0.7
    seed: int = 0
    methods: tuple[str, ...] = ("sequential", "hf_batched", "batched_ar", "ours")
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = REFERENCE_METHOD
    compare_outputs: bool = False
    offset: int = 0

    @property
    def name(self) -> str:
        """``sc-n<n>``."""
        return f"sc-n{self.n}"

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"SelfConsistency on {self.questions} GSM8K questions, n = {self.n}, "
            f"temperature {self.temperature}, {self.max_tokens} new tokens"
        )

    def warmup(self, backend: GenBackend) -> None:
        """One short sampled generation and the runnable's import."""
        import langchain_seed.self_consistency  # noqa: F401

        prompt = backend.encode(chat_text(backend.tokenizer, "What is 2 + 3?"))
        backend.generate([prompt], SamplingParams(temperature=self.temperature, max_tokens=4), n=2)

    def run(self, backend: GenBackend) -> RunOutput:
        """All questions through ``SelfConsistency.batch``; accuracy against ``#### n``."""
        from langchain_seed.self_consistency import GSM8K_PROMPT, SelfConsistency

        rows = gsm8k_rows(self.questions, self.offset)
        params = SamplingParams(
            temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed
        )
        sc = SelfConsistency(
            llm=backend.llm(params),
            prompt=chat_prompt_template(backend.tokenizer, GSM8K_PROMPT),
            n=self.n,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            seed=self.seed,
        )
        results = sc.batch([{"question": r["question"]} for r in rows])
        answers = [field_of(res, "answer") for res in results]
        correct = sum(
            1
            for answer, row in zip(answers, rows, strict=True)
            if answer is not None and normalize_number(str(answer)) == gsm8k_gold(row["answer"])
        )
        stats = backend.stats()
        stats["accuracy"] = correct / len(rows) if rows else None
        return runnable_output(backend, [None if a is None else str(a) for a in answers], stats)
