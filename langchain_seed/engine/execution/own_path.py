"""The own forward of a loaded model: built once per model object, checked before use.

:func:`own_forward` builds :class:`~langchain_seed.engine.execution.llama.LlamaForward` for a
model (kernels loaded, architecture supported) and compares its logits with the
transformers forward (:func:`self_check`); a model that fails any of it keeps the
transformers forward, with the reason logged once and returned.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Any

import torch

from langchain_seed.engine.execution import kernels
from langchain_seed.engine.execution.llama import Batch, LlamaForward, unsupported_reason
from langchain_seed.engine.serving import compute

logger = logging.getLogger(__name__)


SELF_CHECK_TOLERANCE = {torch.float32: 1e-3, torch.bfloat16: 0.1}
"""Largest ``max |own - reference| / max |reference|`` over the check's logits, by dtype.

Measured on random models of the four families: float32 ~1e-6 (reassociation only),
bfloat16 1-2e-2 (the reference itself moves that much between batch shapes); a wrong
implementation (a misplaced RoPE half, a missing bias) is off by ~1.
"""


@torch.inference_mode()
def self_check(own: LlamaForward, model: torch.nn.Module, seed: int = 0) -> str | None:
    """Compare the own forward with ``model``'s on two short prompts; ``None`` if they agree.

    The prompts are prefilled in two ragged steps (the second step reads the first one's
    KV from the pool), as the engine feeds them. Returns the disagreement, worded for a log.
    """
    generator = torch.Generator().manual_seed(seed)
    vocab = min(own.vocab_size, own.embed.shape[0])
    lengths, cut = (12, 7), (5, 7)
    prompts = [torch.randint(0, vocab, (n,), generator=generator) for n in lengths]
    capacity = max(lengths)
    pools = [
        tuple(
            torch.zeros(len(prompts), own.kv_heads, capacity, own.head_dim, dtype=own.dtype)
            for _ in range(2)
        )
        for _ in own.layers
    ]
    first = Batch.of(0, [p[:c].tolist() for p, c in zip(prompts, cut)], [0, 0])
    second = Batch.of(0, [p[c:].tolist() for p, c in zip(prompts, cut)], list(cut))
    outs = []
    for batch in (first, second):
        logits = own.forward(batch, pools, torch.arange(batch.ids.shape[0]))  # type: ignore[arg-type]
        assert logits is not None
        outs.append(logits)
    parts = [*outs[0].split(list(cut)), *outs[1].split([n - c for n, c in zip(lengths, cut)])]
    worst = 0.0
    for i, prompt in enumerate(prompts):
        reference = model(input_ids=prompt[None]).logits[0].float()  # [n, vocab]
        mine = torch.cat([parts[i], parts[len(prompts) + i]])[:, : reference.shape[-1]]
        scale = reference.abs().max().clamp(min=1e-6)
        worst = max(worst, float((mine - reference).abs().max() / scale))
    tolerance = SELF_CHECK_TOLERANCE.get(own.dtype, 0.1)
    if not worst <= tolerance:  # NaN fails too
        return f"own forward differs from the transformers forward: {worst:.3g} > {tolerance}"
    return None


_BUILT: weakref.WeakKeyDictionary[torch.nn.Module, LlamaForward | str] = weakref.WeakKeyDictionary()
_BUILD_LOCK = threading.Lock()


def own_forward(model: torch.nn.Module, positions: int) -> tuple[LlamaForward | None, str]:
    """The own forward of ``model``, built and checked once per model object.

    Returns:
        ``(forward, "own")``, or ``(None, reason)`` when the model keeps the transformers
        forward: the kernels are unavailable, the architecture is not supported, or the
        logits self-check failed (each reason is logged once).
    """
    with _BUILD_LOCK:
        built = _BUILT.get(model)
        if built is None:
            # On the compute thread: packing and the self-check run parallel kernels, and a
            # second thread's OpenMP team would slow every later step (engine/serving/compute.py).
            built = compute.run(lambda: _build(model))
            _BUILT[model] = built
            if isinstance(built, str):
                logger.warning("%s keeps the transformers forward: %s", _label(model), built)
            else:
                logger.info("%s runs on the own execution path", _label(model))
    if isinstance(built, str):
        return None, built
    built.ensure_positions(positions)
    return built, "own"


def _build(model: torch.nn.Module) -> LlamaForward | str:
    if kernels.load() is None:
        return f"CPU kernels unavailable ({kernels.unavailable_reason()})"
    reason = unsupported_reason(model)
    if reason is not None:
        return reason
    try:
        own = LlamaForward(model)
        failure = self_check(own, model)
    except Exception as exc:  # an unforeseen variant of the family: keep the reference
        return f"own forward failed to build: {type(exc).__name__}: {exc}"
    return failure if failure is not None else own


def _label(model: torch.nn.Module) -> str:
    config: Any = model.config
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)
