"""The benchmark workloads (``docs/benchmarks.md``), each runnable through any backend.

| name | module | what it runs |
| --- | --- | --- |
| ``batch`` | ``batch`` | GSM8K questions, chat template, greedy, all submitted at once |
| ``sc-n8``, ``sc-n16`` | ``self_consistency`` | ``SelfConsistency`` on GSM8K, temperature 0.7 |
| ``tot-game24`` | ``tree_of_thoughts`` | ``TreeOfThoughts`` Game of 24 (BFS, propose + value) |
| ``tot-gsm8k`` | ``tree_of_thoughts`` | ``TreeOfThoughts`` GSM8K (SEED's sub-question setup) |
| ``prefix`` | ``prefix`` | one ToT level of Game of 24 value prompts, prefix cache off/on |

Data comes from :mod:`langchain_seed.datasets`; what the workloads share is in
:mod:`.common`. Sizes come from :class:`WorkloadSizes`; ``quick`` sizes keep
``langchain-seed bench --quick`` under ten minutes on a 2-core CPU.
"""

from __future__ import annotations

import re

from langchain_seed.bench.workloads.batch import BatchWorkload
from langchain_seed.bench.workloads.common import ALL_METHODS, chat_prompt_template, chat_text
from langchain_seed.bench.workloads.prefix import PrefixWorkload, first_steps
from langchain_seed.bench.workloads.self_consistency import SelfConsistencyWorkload
from langchain_seed.bench.workloads.sizes import WorkloadSizes
from langchain_seed.bench.workloads.tree_of_thoughts import (
    TreeOfThoughtsWorkload,
    budgeted_task,
    tree_signature,
)

__all__ = [
    "ALL_METHODS",
    "WORKLOADS",
    "AnyWorkload",
    "BatchWorkload",
    "PrefixWorkload",
    "SelfConsistencyWorkload",
    "TreeOfThoughtsWorkload",
    "WorkloadSizes",
    "budgeted_task",
    "build_workloads",
    "chat_prompt_template",
    "chat_text",
    "first_steps",
    "tree_signature",
]

WORKLOADS = ("batch", "sc", "tot-game24", "tot-gsm8k", "prefix")
"""Workload names the CLI accepts (``sc`` runs n = 8 and n = 16)."""

AnyWorkload = BatchWorkload | SelfConsistencyWorkload | TreeOfThoughtsWorkload | PrefixWorkload
"""One of the workload classes above."""


def build_workloads(names: list[str], sizes: WorkloadSizes) -> list[AnyWorkload]:
    """The workload objects for CLI names (``sc`` expands to one per sample count)."""
    out: list[AnyWorkload] = []
    for name in names:
        if name == "batch":
            out.append(BatchWorkload(prompts=sizes.batch_prompts, max_tokens=sizes.batch_tokens))
        elif name == "sc" or re.fullmatch(r"sc-n\d+", name):
            counts = sizes.sc_samples if name == "sc" else (int(name[4:]),)
            for n in counts:
                out.append(
                    SelfConsistencyWorkload(
                        questions=sizes.sc_questions,
                        n=n,
                        max_tokens=sizes.sc_tokens,
                        temperature=sizes.sc_temperature,
                        seed=sizes.seed,
                    )
                )
        elif name in ("tot-game24", "tot-gsm8k"):
            out.append(
                TreeOfThoughtsWorkload(
                    task=name[4:], inputs=sizes.tot_inputs, overrides=dict(sizes.tot_overrides)
                )
            )
        elif name == "prefix":
            out.append(PrefixWorkload(prompts=sizes.prefix_prompts, max_tokens=sizes.prefix_tokens))
        else:
            raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    return out
