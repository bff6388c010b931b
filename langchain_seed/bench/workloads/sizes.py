"""How big each workload is: the full run's sizes and ``--quick``'s."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class WorkloadSizes:
    """How big each workload is; :meth:`quick` for the under-ten-minutes run."""

    batch_prompts: int = 32
    batch_tokens: int = 128
    sc_questions: int = 10
    sc_samples: tuple[int, ...] = (8, 16)
    sc_tokens: int = 192
    sc_temperature: float = 0.7
    tot_inputs: int = 5
    tot_overrides: dict[str, Any] = field(default_factory=dict)
    """Extra ``TreeOfThoughts.from_task`` arguments (e.g. a smaller beam for quick runs)."""
    prefix_prompts: int = 40
    prefix_tokens: int = 48
    seed: int = 0

    @classmethod
    def quick(cls) -> WorkloadSizes:
        """Tiny sizes: every workload in well under two minutes on a 2-core CPU."""
        return cls(
            batch_prompts=4,
            batch_tokens=24,
            sc_questions=1,
            sc_samples=(8,),
            sc_tokens=24,
            tot_inputs=1,
            tot_overrides={
                "breadth": 1,
                "steps": 1,
                "n_evaluate_sample": 1,
                "max_tokens": 32,
                "max_nodes": 4,
            },
            prefix_prompts=8,
            prefix_tokens=8,
        )
