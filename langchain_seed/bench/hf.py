"""Baselines on plain transformers ``generate``: sequential, static batches, assisted.

- ``sequential``: one ``generate`` call per sample, one at a time (``HuggingFacePipeline``
  with a sequential caller).
- ``batched``: left-padded static batches of ``hf_batch_size`` prompts, the ``n`` samples
  of a prompt through ``num_return_sequences`` (``HuggingFacePipeline(batch_size=B)``).
- ``assisted``: one call at a time with assisted generation: ``assistant_model`` when a
  draft model is configured, else prompt lookup (``prompt_lookup_num_tokens``); batch
  size 1 is transformers' limit there.

Target forwards are counted with a forward hook on the model, so ``target_forwards``
is measured, not derived.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM
from langchain_core.outputs import Generation, LLMResult
from pydantic import ConfigDict, Field

from langchain_seed.bench import backends
from langchain_seed.bench.backends import BenchConfig, Completion
from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.serving import compute

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from langchain_seed.engine.execution.loading import LoadedModel

HF_MODES = ("sequential", "batched", "assisted")


def shared_model(model: str | None, device: str, dtype: str) -> LoadedModel:
    """The engine's process-wide copy of the weights (one copy for every method).

    Trials never overlap, so the transformers baselines can use the same model object as
    the engines (read-only); peak RSS then compares methods, not copies of the weights.
    """
    from langchain_seed.engine.execution.models import shared_model as engine_shared_model

    return engine_shared_model(model, device, dtype)


class _ForwardCounter:
    """Counts ``forward`` calls of a module while attached."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self._handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.count += 1

    def remove(self) -> None:
        self._handle.remove()


class HFBackend(backends.GenBackend):
    """transformers ``generate`` in one of :data:`HF_MODES`."""

    def __init__(self, config: BenchConfig, mode: str, name: str | None = None) -> None:
        if mode not in HF_MODES:
            raise ValueError(f"mode must be one of {HF_MODES}, got {mode!r}")
        self.config = config
        self.mode = mode
        self.name = name or f"hf_{mode}"
        loaded = shared_model(config.model, config.device, config.dtype)
        self.model: PreTrainedModel = loaded.model
        self._tokenizer = loaded.tokenizer
        self.assistant: PreTrainedModel | None = None
        if mode == "assisted" and config.draft_model is not None:
            self.assistant = shared_model(config.draft_model, config.device, config.dtype).model
        self._forwards = _ForwardCounter(self.model)
        self._draft_forwards = _ForwardCounter(self.assistant) if self.assistant else None
        self._counts = {"calls": 0, "prompt_tokens": 0, "generated_tokens": 0}
        self._cuda = str(self.model.device).startswith("cuda")
        if self._cuda:
            import torch

            torch.cuda.reset_peak_memory_stats(self.model.device)
        eos = self.model.generation_config.eos_token_id
        self._eos = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        pad = self._tokenizer.pad_token_id
        self._pad = int(pad if pad is not None else min(self._eos) if self._eos else 0)
        self.info = {
            "kind": "transformers",
            "mode": mode,
            "batch_size": config.hf_batch_size if mode == "batched" else 1,
            "assistant": "model"
            if self.assistant
            else ("prompt_lookup" if mode == "assisted" else None),
            "gamma": config.prompt_lookup_num_tokens if mode == "assisted" else 0,
            "speculates": False,
        }

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        """The target's tokenizer."""
        return self._tokenizer

    def close(self) -> None:
        """Detach the forward counters (the shared weights stay loaded)."""
        self._forwards.remove()
        if self._draft_forwards is not None:
            self._draft_forwards.remove()

    def stats(self) -> dict[str, float | int | None]:
        """Calls, tokens and target forwards since this backend was opened."""
        stats = backends.empty_stats()
        stats.update(self._counts)
        generated = self._counts["generated_tokens"]
        stats["target_forwards"] = self._forwards.count
        stats["target_forwards_per_token"] = self._forwards.count / generated if generated else None
        if self._draft_forwards is not None:
            stats["draft_forwards"] = self._draft_forwards.count
        if self.mode != "batched" and self._forwards.count:
            # One sequence per forward: tokens per forward is tokens per verification.
            stats["mean_accepted_length"] = generated / self._forwards.count
        stats["peak_batch_size"] = self.config.hf_batch_size if self.mode == "batched" else 1
        if self._cuda:
            import torch

            stats["peak_device_memory_bytes"] = int(
                torch.cuda.max_memory_allocated(self.model.device)
            )
        return stats

    def generate(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        *,
        n: int = 1,
    ) -> list[list[Completion]]:
        """Generate ``n`` samples per prompt in this backend's mode."""
        if self.mode == "batched":
            out: list[list[Completion]] = []
            size = max(1, self.config.hf_batch_size // n) if n > 1 else self.config.hf_batch_size
            for start in range(0, len(prompts), size):
                out.extend(self._generate_batch(prompts[start : start + size], params, n))
            return out
        results: list[list[Completion]] = []
        for prompt in prompts:
            samples = []
            for seed in backends.sample_seeds(params.seed, n):
                samples.append(self._generate_batch([prompt], replace(params, seed=seed), 1)[0][0])
            results.append(samples)
        return results

    def llm(self, params: SamplingParams, budget: Any = None) -> BaseLLM:
        """A LangChain LLM over this backend (``.batch`` sends all prompts in one call)."""
        return TransformersLLM(backend=self, params=params, budget=budget)

    # ----------------------------------------------------------------- one generate call

    def _generate_batch(
        self, prompts: list[list[int]], params: SamplingParams, n: int
    ) -> list[list[Completion]]:
        """One ``generate`` call over left-padded ``prompts`` with ``n`` samples each."""
        import torch
        from transformers import GenerationConfig

        if params.seed is not None:
            torch.manual_seed(params.seed)
        sampling = params.temperature > 0
        # Greedy search refuses num_return_sequences > 1: repeat the rows instead (same
        # order: row i * n + j is sample j of prompt i).
        rows = prompts if sampling or n == 1 else [p for p in prompts for _ in range(n)]
        width = max(len(p) for p in rows)
        # input_ids, attention_mask: [batch, width], left padded
        input_ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, prompt in enumerate(rows):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        gen_config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=sampling,
            temperature=params.temperature if sampling else None,
            top_p=params.top_p if sampling else None,
            top_k=params.top_k if sampling else None,
            num_return_sequences=n if sampling else 1,
            eos_token_id=sorted(self._eos | set(params.stop_token_ids)) or None,
            pad_token_id=self._pad,
            bos_token_id=self.model.generation_config.bos_token_id,
        )
        kwargs: dict[str, Any] = {}
        if self.mode == "assisted":
            if self.assistant is not None:
                kwargs["assistant_model"] = self.assistant
            else:
                gen_config.prompt_lookup_num_tokens = self.config.prompt_lookup_num_tokens
        if params.stop:
            gen_config.stop_strings = list(params.stop)
            kwargs["tokenizer"] = self._tokenizer
        device = self.model.device

        def generate() -> Any:
            with torch.inference_mode():
                return cast(Any, self.model).generate(  # [batch * n, width + new]
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=gen_config,
                    **kwargs,
                )

        # On the engines' compute thread: torch on a second thread would slow both (one
        # OpenMP team per thread), and every method must be measured alike.
        sequences = compute.run(generate)
        new = sequences[:, width:].tolist()
        results: list[list[Completion]] = []
        for i, prompt in enumerate(prompts):
            samples = [self._completion(new[i * n + j], params, len(prompt)) for j in range(n)]
            results.append(samples)
            self._counts["calls"] += n
            self._counts["prompt_tokens"] += n * len(prompt)
            self._counts["generated_tokens"] += sum(c.generated for c in samples)
        return results

    def _completion(self, ids: list[int], params: SamplingParams, prompt_len: int) -> Completion:
        """Cut a generated row after its first EOS (padding follows it) and at stop strings.

        ``generated`` counts what the model produced for the row: through the EOS, or
        through the token that completed a stop string (the text and ids stop before it).
        """
        ended = set(params.stop_token_ids) | self._eos
        finish = "length"
        for k, tok in enumerate(ids):
            if tok in ended:
                ids, finish = ids[: k + 1], "stop"
                break
        generated = len(ids)
        text = str(self._tokenizer.decode(ids, skip_special_tokens=True))
        cuts = [(text.find(s), s) for s in params.stop if s in text]
        if cuts:
            index, stop = min(cuts)
            generated = len(_trim_to_text(self._tokenizer, ids, text[: index + len(stop)]))
            text, finish = text[:index], "stop"
            ids = _trim_to_text(self._tokenizer, ids, text)
        return Completion(
            text=text,
            token_ids=ids,
            finish_reason=finish,
            prompt_tokens=prompt_len,
            generated=generated,
        )


def _trim_to_text(tokenizer: PreTrainedTokenizerBase, ids: list[int], text: str) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded text covers ``text``."""
    for k in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:k], skip_special_tokens=True)) >= len(text):
            return ids[:k]
    return ids


class TransformersLLM(BaseLLM):
    """A LangChain LLM over an :class:`HFBackend`, for runnables' ``.batch()`` fallback.

    Setup:
        Built by the benchmark (``HFBackend.llm(params)``); not a user-facing model.

    Key init args:
        backend: the :class:`HFBackend` that runs ``generate``.
        params: default sampling parameters; call-time ``temperature``, ``max_tokens``,
            ``top_p``, ``top_k``, ``seed``, ``n`` and ``stop`` override them.

    Invoke:
        .. code-block:: python

            llm = HFBackend(BenchConfig(), "batched").llm(SamplingParams(max_tokens=32))
            llm.batch(["1 + 1 =", "2 + 2 ="])  # one call, left-padded static batches
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    backend: Any = Field(exclude=True)
    """The :class:`HFBackend` (typed loosely so pydantic does not validate it)."""
    params: Any = Field(default_factory=SamplingParams)
    """Default :class:`SamplingParams` of every call."""
    budget: Any = None
    """Optional ``prompt -> max_tokens`` (or ``None``): the per-phase token budget a runnable
    gives engine-backed models through ``max_tokens=`` but cannot pass to an arbitrary LLM."""

    @property
    def _llm_type(self) -> str:
        return f"transformers-{self.backend.mode}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"mode": self.backend.mode, "params": repr(self.params)}

    def _generate(
        self,
        prompts: list[str],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> LLMResult:
        base = self.params
        n = int(kwargs.pop("n", 1) or 1)
        params = SamplingParams(
            temperature=float(kwargs.get("temperature", base.temperature)),
            top_p=float(kwargs.get("top_p", base.top_p)),
            top_k=int(kwargs.get("top_k", base.top_k)),
            max_tokens=int(kwargs.get("max_tokens", base.max_tokens)),
            stop=tuple(stop) if stop else base.stop,
            stop_token_ids=base.stop_token_ids,
            seed=kwargs.get("seed", base.seed),
        )
        unique, k = _sample_runs(prompts) if n == 1 else (prompts, n)
        rows: list[list[Completion]] = [[] for _ in unique]
        # One generate per token budget (a phase of a search shares one budget).
        budgets = [self._budget(p, params.max_tokens) for p in unique]
        for budget in sorted(set(budgets)):
            idx = [i for i, b in enumerate(budgets) if b == budget]
            ids = [self.backend.encode(unique[i]) for i in idx]
            out = self.backend.generate(ids, replace(params, max_tokens=budget), n=k)
            for i, samples in zip(idx, out, strict=True):
                rows[i] = samples
        if n == 1 and k > 1:
            # The caller repeated each prompt k times: one sample per repeated prompt.
            rows = [[sample] for row in rows for sample in row]
        return LLMResult(
            generations=[
                [
                    Generation(
                        text=c.text,
                        generation_info={
                            "finish_reason": c.finish_reason,
                            "prompt_tokens": c.prompt_tokens,
                            "generated_tokens": len(c.token_ids),
                        },
                    )
                    for c in row
                ]
                for row in rows
            ]
        )

    def _budget(self, prompt: str, default: int) -> int:
        if self.budget is None:
            return default
        value = self.budget(prompt)
        return default if value is None else int(value)


def _sample_runs(prompts: list[str]) -> tuple[list[str], int]:
    """``(unique, k)`` when ``prompts`` is each prompt repeated ``k`` times in a row.

    Runnables ask a plain LLM for k samples by repeating the prompt in ``batch``; seeing
    that, the baseline uses ``num_return_sequences=k`` as ``HuggingFacePipeline`` would
    (and distinct per-sample seeds). Otherwise ``(prompts, 1)``.
    """
    runs: list[tuple[str, int]] = []
    for prompt in prompts:
        if runs and runs[-1][0] == prompt:
            runs[-1] = (prompt, runs[-1][1] + 1)
        else:
            runs.append((prompt, 1))
    sizes = {size for _, size in runs}
    if len(sizes) == 1 and (k := sizes.pop()) > 1:
        return [p for p, _ in runs], k
    return prompts, 1
