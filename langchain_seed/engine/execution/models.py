"""The models an engine runs: the process's loaded models, and one engine's runners.

Loaded models are shared by the engines of a process (:func:`shared_model`: one copy of
the weights per ``(model, device, dtype)``, freed when the last engine using it closes).
:class:`EngineModels` is one engine's share: the target model and its runner, a draft
model's runner if one is configured, and every runner whose KV cache follows the batch's
rows (:attr:`EngineModels.runners`).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any, cast

import torch

from langchain_seed.engine.config import EngineConfig
from langchain_seed.engine.execution.loading import EMBEDDED_NAME, LoadedModel, load_model
from langchain_seed.engine.execution.runner import ModelRunner, ReleasedModel

logger = logging.getLogger(__name__)


class EngineModels:
    """One engine's models and runners (see the module docstring).

    Args:
        config: the engine's configuration (models, device, dtype, KV budget, execution).

    Raises:
        ModelLoadError: a model cannot be loaded (nothing is held then).
        ValueError: the own execution path was required and is not possible.
    """

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._keys: list[tuple[str | None, str, str]] = []
        """The :func:`shared_model` references held (given back by :meth:`release`)."""
        try:
            self.target = self._load(config.model)
            self.runner = self._runner(self.target, config.deterministic)
        except BaseException:
            self.release()
            raise
        self.runners: dict[str, ModelRunner] = {"target": self.runner}
        """Every model whose KV cache follows the batch's rows: the target, then draft models
        by drafter name (:meth:`add_runner`)."""
        embeddings = cast(torch.nn.Embedding, self.target.model.get_input_embeddings())
        self.vocab_size = int(embeddings.num_embeddings)
        """Rows of the target's input embedding: valid token ids are below it."""
        self.eos_ids = _eos_ids(self.target)
        """Token ids that end generation (the generation config's and the tokenizer's)."""

    def _load(self, model: str | None) -> LoadedModel:
        cfg = self.config
        loaded = shared_model(model, cfg.device, cfg.dtype)
        self._keys.append((model, cfg.device, cfg.dtype))
        return loaded

    def _runner(self, loaded: LoadedModel, deterministic: bool | None) -> ModelRunner:
        cfg = self.config
        return ModelRunner(
            loaded.model, cfg.max_batch_size, cfg.device, cfg.max_cache_tokens,
            cfg.execution, deterministic,
        )  # fmt: skip

    def draft_runner(self) -> ModelRunner:
        """A runner of the configured ``draft_model`` (its vocabulary checked)."""
        assert self.config.draft_model is not None
        draft = self._load(self.config.draft_model)
        check_same_vocabulary(self.target, draft)
        # drafts never change the output: never required to be invariant
        return self._runner(draft, False if self.config.deterministic is False else None)

    def add_runner(self, name: str, runner: ModelRunner) -> None:
        """Let ``runner``'s KV cache follow the batch's rows (a drafter's draft model)."""
        self.runners[name] = runner

    def forward_counts(self) -> tuple[int, int]:
        """(target forwards, draft-model forwards) so far."""
        draft = sum(r.forwards for name, r in self.runners.items() if name != "target")
        return self.runner.forwards, draft

    def reset_forward_counts(self) -> None:
        """Start the forward counters afresh."""
        for runner in self.runners.values():
            runner.forwards = 0

    def kv_bytes(self) -> tuple[int, int]:
        """(bytes the KV pools hold now, bytes of their budget) over every model."""
        caches = [r.cache for r in self.runners.values()]
        return sum(c.nbytes() for c in caches), sum(c.budget_bytes() or 0 for c in caches)

    def free_memory(self) -> None:
        """Give every KV pool back (the engine is idle, or its rows are unusable)."""
        for runner in self.runners.values():
            runner.cache.release_memory()

    def release(self) -> None:
        """Give back the model references and drop this engine's pointers to the weights.

        Runs once the engine thread has ended (or when building failed): the last engine
        of a model to close frees its weights, even while a caller still holds the closed
        engine object.
        """
        keys, self._keys = self._keys, []
        for runner in getattr(self, "runners", {}).values():
            runner.release_model()
        if hasattr(self, "target"):
            self.target = dataclasses.replace(self.target, model=cast(Any, ReleasedModel()))
        for key in keys:
            release_model(*key)


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


def _eos_ids(loaded: LoadedModel) -> set[int]:
    ids: set[int] = set()
    gen_eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    for value in (gen_eos, loaded.tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


_MODELS: dict[tuple[Any, ...], LoadedModel] = {}
_USERS: dict[tuple[Any, ...], int] = {}  # key -> references taken by shared_model
_MODELS_LOCK = threading.Lock()


def shared_model(model: str | None, device: str, dtype: str) -> LoadedModel:
    """Load a model once per process per ``(model, device, dtype)`` and take a reference.

    Every call takes one reference; :func:`release_model` gives it back, and the last one
    given back drops the process's copy (the weights are freed once nothing else holds
    them). An :class:`~langchain_seed.engine.Engine` takes its references when it is built
    and gives them back when it closes.
    """
    key = (model, device, dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(model, device=device, dtype=dtype)
            _USERS[key] = 0
        _USERS[key] += 1
        return _MODELS[key]


def release_model(model: str | None, device: str, dtype: str) -> bool:
    """Give back one reference taken by :func:`shared_model` for ``(model, device, dtype)``.

    Returns:
        True when that was the last reference and the process's copy was dropped.
    """
    key = (model, device, dtype)
    with _MODELS_LOCK:
        if key not in _USERS:
            return False
        _USERS[key] -= 1
        if _USERS[key] > 0:
            return False
        del _USERS[key], _MODELS[key]
    logger.info("released %s (%s, %s)", model or EMBEDDED_NAME, device, dtype)
    return True


def loaded_models() -> dict[tuple[Any, ...], int]:
    """The models this process holds now: ``(model, device, dtype)`` -> references."""
    with _MODELS_LOCK:
        return dict(_USERS)
