"""``batch``: GSM8K questions through the chat template, greedy, all submitted at once."""

from __future__ import annotations

from dataclasses import dataclass

from langchain_seed.bench.backends import GenBackend
from langchain_seed.bench.results import DEFAULT_BASELINES, REFERENCE_METHOD, RunOutput
from langchain_seed.bench.workloads.common import ALL_METHODS, chat_text, run_greedy
from langchain_seed.datasets import gsm8k_rows
from langchain_seed.engine.config import SamplingParams


@dataclass
class BatchWorkload:
    """``n`` GSM8K questions through the chat template, greedy, submitted at once."""

    prompts: int = 32
    max_tokens: int = 128
    name: str = "batch"
    methods: tuple[str, ...] = ALL_METHODS
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    reference: str = REFERENCE_METHOD
    compare_outputs: bool = True
    offset: int = 0

    @property
    def description(self) -> str:
        """One line for the report."""
        return (
            f"{self.prompts} GSM8K questions (chat template), {self.max_tokens} new tokens, "
            "greedy, one llm.batch"
        )

    def _ids(self, backend: GenBackend, count: int) -> list[list[int]]:
        rows = gsm8k_rows(count, self.offset)
        return [backend.encode(chat_text(backend.tokenizer, r["question"])) for r in rows]

    def warmup(self, backend: GenBackend) -> None:
        """Two prompts, a few tokens."""
        backend.generate(self._ids(backend, 2), SamplingParams(max_tokens=4))

    def run(self, backend: GenBackend) -> RunOutput:
        """Every prompt at once, greedy; outputs are the generated token ids."""
        return run_greedy(backend, self._ids(backend, self.prompts), self.max_tokens)
