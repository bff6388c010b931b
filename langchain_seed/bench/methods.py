"""The methods the benchmark compares (``docs/benchmarks.md``), by name.

| name | what it is |
| --- | --- |
| ``sequential`` | one transformers ``generate`` call at a time |
| ``hf_batched`` | transformers ``generate`` over left-padded static batches |
| ``hf_assisted`` | one call at a time with assisted generation (prompt lookup or a draft model) |
| ``seed_fcfs`` | Engine, ``fcfs_rounds`` policy, prefix cache off (SEED as published) |
| ``batched_ar`` | Engine, ``autoregressive`` policy (prefix cache on) |
| ``ours`` | Engine, ``batched`` policy, best drafters, prefix cache on |
| ``ours_nocache`` | ``ours`` with the prefix cache off (the prefix-cache workload's baseline) |
| ``vllm`` | vLLM's engine (``backend="vllm"``), no speculation; needs vLLM installed |
| ``vllm_spec`` | vLLM with n-gram speculation (``gamma`` tokens); needs vLLM installed |

Every trial opens a fresh backend: an engine method builds a new :class:`Engine` (weights
are shared between engines of one process; the prefix cache and stats start empty), so a
warm-up or an earlier repeat never pre-fills the cache of a timed run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from langchain_seed.bench.backends import BenchConfig, GenBackend
from langchain_seed.bench.engine_backend import EngineBackend, EngineSettings

logger = logging.getLogger(__name__)

METHODS = (
    "sequential",
    "hf_batched",
    "hf_assisted",
    "seed_fcfs",
    "batched_ar",
    "ours",
    "ours_nocache",
    "vllm",
    "vllm_spec",
)
"""Every method name the CLI accepts."""


@dataclass(slots=True)
class BenchMethod:
    """A named method: ``open()`` builds a fresh backend for one trial."""

    name: str
    factory: Callable[[], GenBackend]

    def open(self) -> GenBackend:
        """A fresh backend (untimed)."""
        return self.factory()


def best_drafters(config: BenchConfig) -> tuple[str, ...]:
    """``ours``' drafters: a draft model when configured, consensus across siblings, n-gram."""
    return (("model",) if config.draft_model else ()) + ("consensus", "ngram")


def engine_settings(name: str, config: BenchConfig, gamma: int | None = None) -> EngineSettings:
    """The engine settings of an engine method name."""
    basic = ("model",) if config.draft_model else ("ngram",)
    if name == "seed_fcfs":
        # SEED drafts with a small model; without one the n-gram drafter stands in.
        return EngineSettings("fcfs_rounds", basic, prefix_cache=False, gamma=gamma)
    if name == "batched_ar":
        return EngineSettings("autoregressive", (), prefix_cache=True, gamma=0)
    if name in ("ours", "ours_nocache"):
        return EngineSettings(
            "batched",
            best_drafters(config),
            prefix_cache=name == "ours",
            gamma=gamma,
            fallback_drafters=basic,
        )
    raise ValueError(f"not an engine method: {name!r}")


def make_method(name: str, config: BenchConfig, *, gamma: int | None = None) -> BenchMethod:
    """Build the method called ``name`` (one of :data:`METHODS`).

    Args:
        name: method name.
        config: shared model settings.
        gamma: override the draft length of a speculating engine method; the method is
            then named ``name[g=gamma]``.
    """
    from langchain_seed.bench.hf import HFBackend

    hf_modes = {"sequential": "sequential", "hf_batched": "batched", "hf_assisted": "assisted"}
    if name in hf_modes:
        mode = hf_modes[name]
        return BenchMethod(name, lambda: HFBackend(config, mode, name=name))
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    if name in ("vllm", "vllm_spec"):
        from langchain_seed.backends.vllm import require_vllm
        from langchain_seed.bench.vllm import VLLMBackend

        require_vllm()  # fail at the start of a run, not in its first trial
        spec = name == "vllm_spec"
        return BenchMethod(name, lambda: VLLMBackend(config, spec=spec, name=name))
    settings = engine_settings(name, config, gamma)
    label = name if gamma is None else f"{name}[g={gamma}]"
    return BenchMethod(label, lambda: EngineBackend(config, settings, label))
