"""Issue 9 soak: mixed load from many threads and an event loop; nothing lost, nothing leaks.

1,000 requests (by default) on a tiny random byte-vocabulary Llama built in a temp folder:
plain greedy requests, grouped samples (``group=``, greedy and sampled, some with members
cancelled), streaming (sync and async, some abandoned after the first piece), requests
cancelled at random (future or asyncio task), requests that time out, and invalid requests.
Eight threads and one asyncio event loop submit at once. Checks:

- every valid greedy request (plain, grouped, streamed) equals its reference: transformers'
  own ``generate`` greedy on the same weights, token for token (streamed text: the joined
  pieces equal the reference's text);
- every sampled request respects ``max_tokens`` and its stop strings;
- every invalid request got its ``ValueError`` at submission;
- every cancelled request freed its slot: at the end nothing runs or waits, no prefix-cache
  span is still referenced, the KV buffers are released, and the engine's counters account
  for every submitted request exactly once;
- RSS at the end is within 10% of RSS after a warm-up round of the same mix.

    python benchmarks/soak.py                 # 1,000 requests, 8 threads + an event loop
    python benchmarks/soak.py --requests 200  # shorter
    python benchmarks/soak.py --draft         # also the draft-model and consensus drafters
    python benchmarks/soak.py --model PATH    # another model (references from transformers)

Exits 1 on any violation. A 100-request version runs in ``make test``
(``tests/unit_tests/test_reliability.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MAX_NEW = 24  # longest greedy request; references are generated once to this length
LONG = 300  # tokens of a request meant to be cancelled or timed out before it ends

# What one plan item is (weights of the mix).
KINDS = {
    "plain": 30,
    "group": 14,
    "stream": 14,
    "sampled": 8,
    "cancel": 14,
    "timeout": 4,
    "invalid": 10,
    "stream_abandoned": 6,
    "group_cancel": 6,
}


@dataclass
class Item:
    """One planned request (a group item submits ``k`` requests sharing a group id)."""

    index: int
    kind: str
    prompt: int  # index into the prompt pool
    max_tokens: int
    k: int = 1
    sampled: bool = False
    delay: float = 0.0  # seconds before a cancel
    variant: int = 0  # which invalid input


@dataclass
class SoakReport:
    """Outcome counts and every violation found (empty ``violations``: the soak passed)."""

    items: int = 0
    submitted: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
    rss_warm: int = 0
    rss_end: int = 0
    engine_stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.violations

    def summary(self) -> str:
        """Human-readable multi-line summary."""
        stats = self.engine_stats
        lines = [
            f"items {self.items}, engine requests submitted {self.submitted}, "
            f"{self.seconds:.1f} s ({self.submitted / max(self.seconds, 1e-9):.1f} requests/s)",
            "outcomes: " + ", ".join(f"{k}={v}" for k, v in sorted(self.outcomes.items())),
            f"engine: finished={stats.get('requests_finished')} "
            f"failed={stats.get('requests_failed')} cancelled={stats.get('requests_cancelled')} "
            f"steps={stats.get('steps')} peak_batch={stats.get('peak_batch_size')}",
        ]
        if self.rss_warm:
            growth = (self.rss_end - self.rss_warm) / self.rss_warm
            lines.append(
                f"RSS after warm-up {self.rss_warm / 2**20:.1f} MiB, at the end "
                f"{self.rss_end / 2**20:.1f} MiB ({growth:+.1%})"
            )
        lines.append(f"violations: {len(self.violations)}")
        lines.extend(f"  - {v}" for v in self.violations[:30])
        if len(self.violations) > 30:
            lines.append(f"  ... {len(self.violations) - 30} more")
        return "\n".join(lines)


def build_tiny_pair(root: Path) -> tuple[Path, Path]:
    """The tests' tiny byte-vocabulary target and its draft, saved under ``root``."""
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import make_tiny_pair

    pair = make_tiny_pair(root, vocab="byte", seed=0)
    return Path(pair.target_path), Path(pair.draft_path)


def rss_bytes() -> int:
    """Resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


class References:
    """Greedy references from transformers ``generate`` on the model's own weights."""

    def __init__(self, model_path: str, prompts: list[str]) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).eval()
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        eos = model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        self.tokenizer = tokenizer
        self.ids: list[list[int]] = [[] for _ in prompts]
        # Prompts of equal token length run as one unpadded batch: each row computes exactly
        # what it would alone (no padding, no mask holes), in a few generate calls instead of
        # one per prompt.
        by_length: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            by_length.setdefault(len(tokenizer(prompt).input_ids), []).append(i)
        with torch.no_grad():
            for rows in by_length.values():
                ids = torch.tensor([tokenizer(prompts[i]).input_ids for i in rows])  # [b, len]
                out = model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    max_new_tokens=MAX_NEW,
                    do_sample=False,
                    pad_token_id=pad,
                )
                for i, row in zip(rows, out[:, ids.shape[1] :].tolist()):
                    ends = [j for j, t in enumerate(row) if t in eos_ids]
                    self.ids[i] = row[: ends[0] + 1] if ends else row  # a row past EOS is padding

    def tokens(self, prompt: int, max_tokens: int) -> list[int]:
        """Greedy continuation of pool prompt ``prompt`` with ``max_tokens`` new tokens."""
        return self.ids[prompt][:max_tokens]

    def text(self, prompt: int, max_tokens: int) -> str:
        """Its text (special tokens skipped, as the engine reports text)."""
        return str(self.tokenizer.decode(self.tokens(prompt, max_tokens), skip_special_tokens=True))


def prompt_pool(size: int = 48, seed: int = 1) -> list[str]:
    """Distinct ASCII prompts in six lengths (a third share a header), for batched references."""
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "soak", "the", "cat", "7 + 5 =", "ok", "zeta"]
    lengths = (12, 20, 28, 40, 56, 80)
    pool = []
    for i in range(size):
        head = "shared header: " if i % 3 == 0 else ""
        body = " ".join(rng.choice(words) for _ in range(20))
        pool.append(f"{head}{i:02d} {body}"[: lengths[i % len(lengths)]])
    return pool


def plan(count: int, pool_size: int, seed: int) -> list[Item]:
    """``count`` items drawn from the mix in :data:`KINDS`."""
    rng = random.Random(seed)
    kinds, weights = list(KINDS), list(KINDS.values())
    items = []
    for i in range(count):
        kind = rng.choices(kinds, weights)[0]
        items.append(
            Item(
                index=i,
                kind=kind,
                prompt=rng.randrange(pool_size),
                max_tokens=rng.choice((4, 8, 16, MAX_NEW)),
                k=rng.randint(2, 4) if kind in ("group", "group_cancel") else 1,
                sampled=kind == "group" and rng.random() < 0.4,
                delay=rng.uniform(0.0, 0.03),
                variant=rng.randrange(5),
            )
        )
    return items


class Soak:
    """Runs a plan on one engine from several threads and one event loop, checking as it goes."""

    def __init__(self, engine: Any, pool: list[str], refs: References) -> None:
        self.engine = engine
        self.pool = pool
        self.refs = refs
        self.lock = threading.Lock()
        self.report = SoakReport()
        self.cancelled_ok = 0  # futures we cancelled (cancel() returned True) or abandoned

    # ----- bookkeeping ---------------------------------------------------------------
    def outcome(self, name: str, submitted: int = 0) -> None:
        with self.lock:
            self.report.outcomes[name] += 1
            self.report.submitted += submitted

    def violation(self, item: Item, what: str) -> None:
        with self.lock:
            self.report.violations.append(f"item {item.index} ({item.kind}): {what}")

    def params(self, item: Item, **overrides: Any) -> Any:
        from langchain_seed.engine import SamplingParams

        return SamplingParams(**{"max_tokens": item.max_tokens, **overrides})

    def check_greedy(self, item: Item, result: Any) -> None:
        want = self.refs.tokens(item.prompt, item.max_tokens)
        if result.token_ids != want:
            self.violation(item, f"greedy output {result.token_ids} != reference {want}")

    def check_sampled(self, item: Item, result: Any, stop: str) -> None:
        if len(result.token_ids) > item.max_tokens:
            self.violation(item, f"{len(result.token_ids)} tokens > max_tokens {item.max_tokens}")
        if stop in result.text:
            self.violation(item, f"stop string {stop!r} in text {result.text!r}")

    # ----- one item on a thread --------------------------------------------------------
    def run_sync(self, item: Item) -> None:
        engine, prompt = self.engine, self.pool[item.prompt]
        try:
            if item.kind == "plain":
                future = engine.submit(prompt, self.params(item))
                self.outcome("plain", 1)
                self.check_greedy(item, future.result(timeout=120))
            elif item.kind == "group":
                self.run_group_sync(item, prompt)
            elif item.kind == "group_cancel":
                self.run_group_cancel(item, prompt)
            elif item.kind in ("stream", "stream_abandoned"):
                self.run_stream_sync(item, prompt)
            elif item.kind == "sampled":
                stop = "a"
                params = self.params(
                    item, temperature=0.9, top_p=0.9, seed=item.index, stop=(stop,)
                )
                future = engine.submit(prompt, params)
                self.outcome("sampled", 1)
                self.check_sampled(item, future.result(timeout=120), stop)
            elif item.kind == "cancel":
                future = engine.submit(prompt, self.params(item, max_tokens=LONG, ignore_eos=True))
                time.sleep(item.delay)
                self.finish_cancel(item, future, future.cancel())
            elif item.kind == "timeout":
                params = self.params(item, max_tokens=LONG, ignore_eos=True, request_timeout=0.02)
                future = engine.submit(prompt, params)
                self.outcome("submitted_timeout", 1)
                self.expect_timeout(item, future)
            else:
                self.run_invalid(item)
        except Exception as exc:  # anything unexpected is a violation, never a crash
            self.violation(item, f"unexpected {type(exc).__name__}: {exc}")

    def run_group_sync(self, item: Item, prompt: str) -> None:
        group = f"soak-{item.index}"
        if item.sampled:
            stop = "e"
            plist = [
                self.params(item, temperature=0.8, seed=item.index * 10 + j, stop=(stop,))
                for j in range(item.k)
            ]
            futures = self.engine.submit_many([prompt] * item.k, plist, group=group)
            self.outcome("group_sampled", item.k)
            for future in futures:
                self.check_sampled(item, future.result(timeout=120), stop)
            return
        futures = self.engine.submit_many([prompt] * item.k, self.params(item), group=group)
        self.outcome("group_greedy", item.k)
        for future in futures:
            self.check_greedy(item, future.result(timeout=120))

    def run_group_cancel(self, item: Item, prompt: str) -> None:
        """Cancel some members of a greedy group; the others still equal the reference."""
        group = f"soak-{item.index}"
        futures = self.engine.submit_many([prompt] * item.k, self.params(item), group=group)
        self.outcome("group_cancel", item.k)
        time.sleep(item.delay)
        doomed = set(random.Random(item.index).sample(range(item.k), item.k - 1))
        for j, future in enumerate(futures):
            if j in doomed and future.cancel():
                with self.lock:
                    self.cancelled_ok += 1
                self.outcome("cancelled")
            else:
                self.check_greedy(item, future.result(timeout=120))

    def run_stream_sync(self, item: Item, prompt: str) -> None:
        if item.kind == "stream_abandoned":
            stream = self.engine.stream(prompt, self.params(item, max_tokens=LONG, ignore_eos=True))
            next(stream)  # read one piece, then walk away: closing the generator cancels
            stream.close()
            with self.lock:
                self.cancelled_ok += 1
            self.outcome("stream_abandoned", 1)
            return
        pieces = list(self.engine.stream(prompt, self.params(item)))
        self.outcome("stream", 1)
        want = self.refs.text(item.prompt, item.max_tokens)
        if "".join(pieces) != want:
            self.violation(item, f"streamed text {''.join(pieces)!r} != reference {want!r}")

    def finish_cancel(self, item: Item, future: Any, cancelled: bool) -> None:
        self.outcome("submitted_cancel", 1)
        if cancelled:
            with self.lock:
                self.cancelled_ok += 1
            self.outcome("cancelled")
            try:
                future.result(timeout=0)
                self.violation(item, "a cancelled future returned a result")
            except CancelledError:
                pass
        else:  # it finished first: then it must be whole
            result = future.result(timeout=120)
            self.outcome("cancel_too_late")
            if len(result.token_ids) != LONG:
                self.violation(item, f"uncancelled long request has {len(result.token_ids)} tokens")

    def expect_timeout(self, item: Item, future: Any) -> None:
        try:
            result = future.result(timeout=120)
        except TimeoutError as exc:
            if "request_timeout" not in str(exc):
                self.violation(item, f"timeout error does not name request_timeout: {exc}")
            self.outcome("timed_out")
            return
        if len(result.token_ids) != LONG:
            self.violation(
                item, f"request that beat its timeout has {len(result.token_ids)} tokens"
            )
        self.outcome("timeout_too_late")

    def run_invalid(self, item: Item) -> None:
        """Each variant must raise ``ValueError`` at submission and submit nothing."""
        from langchain_seed.engine import SamplingParams

        def attempt() -> None:
            if item.variant == 0:
                self.engine.submit("", self.params(item))
            elif item.variant == 1:  # longer than the context allows with this max_tokens
                self.engine.submit([5] * self.engine.max_context, self.params(item))
            elif item.variant == 2:
                self.engine.submit("x", SamplingParams(temperature=-1.0))
            elif item.variant == 3:
                self.engine.submit_many(["a", "b"], [self.params(item)])  # params count mismatch
            else:
                self.engine.submit("x", SamplingParams(top_p=0.0))

        try:
            attempt()
        except ValueError:
            self.outcome("invalid_rejected")
            return
        self.violation(item, f"invalid variant {item.variant} was accepted")

    # ----- items on the event loop ----------------------------------------------------
    async def run_async(self, item: Item) -> None:
        engine, prompt = self.engine, self.pool[item.prompt]
        try:
            if item.kind == "plain":
                self.outcome("plain", 1)
                [result] = await engine.agenerate([prompt], self.params(item))
                self.check_greedy(item, result)
            elif item.kind == "group" and not item.sampled:
                self.outcome("group_greedy", item.k)
                group = f"soak-{item.index}"
                results = await engine.agenerate([prompt] * item.k, self.params(item), group=group)
                for result in results:
                    self.check_greedy(item, result)
            elif item.kind == "stream":
                self.outcome("stream", 1)
                pieces = [p async for p in engine.astream(prompt, self.params(item))]
                want = self.refs.text(item.prompt, item.max_tokens)
                if "".join(pieces) != want:
                    self.violation(item, f"astream text {''.join(pieces)!r} != reference {want!r}")
            elif item.kind == "cancel":
                params = self.params(item, max_tokens=LONG, ignore_eos=True)
                task = asyncio.ensure_future(engine.agenerate([prompt], params))
                await asyncio.sleep(item.delay + 0.005)
                cancelled = task.cancel()
                self.outcome("submitted_cancel", 1)
                try:
                    [result] = await task
                    self.outcome("cancel_too_late")
                    if len(result.token_ids) != LONG:
                        self.violation(item, "uncancelled long request is short")
                except asyncio.CancelledError:
                    if not cancelled:
                        self.violation(item, "task cancelled although cancel() returned False")
                    with self.lock:
                        self.cancelled_ok += 1
                    self.outcome("cancelled")
            else:  # the other kinds run on a worker thread of the loop's executor
                await asyncio.to_thread(self.run_sync, item)
        except Exception as exc:
            self.violation(item, f"unexpected {type(exc).__name__}: {exc}")

    async def run_loop(self, items: list[Item]) -> None:
        for start in range(0, len(items), 4):  # four at a time share the loop
            await asyncio.gather(*(self.run_async(item) for item in items[start : start + 4]))

    # ----- the whole plan -------------------------------------------------------------
    def run(self, items: list[Item], threads: int) -> None:
        """Spread ``items`` over ``threads`` threads and one event loop; wait for all."""
        lanes: list[list[Item]] = [[] for _ in range(threads + 1)]
        for item in items:
            lanes[item.index % (threads + 1)].append(item)
        workers = [
            threading.Thread(target=lambda lane=lane: [self.run_sync(i) for i in lane])
            for lane in lanes[:threads]
        ]
        workers.append(threading.Thread(target=lambda: asyncio.run(self.run_loop(lanes[-1]))))
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        self.report.items += len(items)


def wait_idle(engine: Any, timeout: float = 30.0) -> bool:
    """Wait until the engine has nothing running or waiting (cancellations are reaped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (
            not engine.scheduler.running
            and not engine.scheduler.waiting
            and not engine.service.inbox
        ):
            time.sleep(0.05)  # let the engine thread finish its idle bookkeeping
            return True
        time.sleep(0.01)
    return False


def check_freed(engine: Any, soak: Soak) -> None:
    """Every request is accounted for and holds nothing: slots, prefix spans, KV buffers."""
    report = soak.report
    if not wait_idle(engine):
        report.violations.append(
            f"engine not idle: {len(engine.scheduler.running)} running, "
            f"{len(engine.scheduler.waiting)} waiting"
        )
        return
    held = [n for n in engine.prefix_cache._nodes() if n.refs != 0]
    if held:
        report.violations.append(f"{len(held)} prefix-cache spans still referenced")
    if engine.runner.cache.allocated:
        report.violations.append("KV buffers still allocated while the engine is idle")
    stats = engine.stats()
    report.engine_stats = stats.to_dict()
    accounted = (
        stats.requests_finished
        + stats.requests_failed
        + stats.requests_cancelled
        + stats.requests_coalesced  # answered by an identical request of their group
    )
    if accounted != report.submitted:
        report.violations.append(
            f"engine accounted for {accounted} requests, {report.submitted} were submitted"
        )
    if stats.requests_failed != report.outcomes["timed_out"]:
        report.violations.append(
            f"{stats.requests_failed} requests failed, {report.outcomes['timed_out']} timed out"
        )
    # A cancel can race with the step that finishes the request (then it counts as finished).
    if soak.cancelled_ok and not 0 < stats.requests_cancelled <= soak.cancelled_ok:
        report.violations.append(
            f"engine counted {stats.requests_cancelled} cancellations for {soak.cancelled_ok}"
        )


def run_soak(
    model_path: str,
    requests: int = 1000,
    *,
    threads: int = 8,
    seed: int = 0,
    warmup: int = 100,
    check_rss: bool = True,
    max_batch_size: int = 8,
    policy: str = "batched",
    draft_model: str | None = None,
) -> SoakReport:
    """Run the soak on ``model_path`` and return its report (``report.ok``: all checks hold)."""
    from langchain_seed.engine import Engine, EngineConfig

    pool = prompt_pool()
    refs = References(model_path, pool)
    drafters = ("model", "ngram", "consensus") if draft_model else ("ngram",)
    config = EngineConfig(
        model=model_path,
        draft_model=draft_model,
        drafters=drafters,
        policy=policy,
        max_batch_size=max_batch_size,
    )
    with Engine(config) as engine:
        if warmup:
            Soak(engine, pool, refs).run(plan(warmup, len(pool), seed + 1), threads)
            wait_idle(engine)
        engine.reset_stats()
        gc.collect()
        rss_warm = rss_bytes() if check_rss else 0
        soak = Soak(engine, pool, refs)
        t0 = time.perf_counter()
        soak.run(plan(requests, len(pool), seed), threads)
        soak.report.seconds = time.perf_counter() - t0
        check_freed(engine, soak)
        report = soak.report
        if check_rss:
            gc.collect()
            report.rss_warm, report.rss_end = rss_warm, rss_bytes()
            if report.rss_end > 1.10 * report.rss_warm:
                report.violations.append(
                    f"RSS grew {report.rss_end / report.rss_warm - 1:.1%} after warm-up (limit 10%)"
                )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000, help="plan items (default 1000)")
    parser.add_argument("--threads", type=int, default=8, help="submitting threads (+1 loop)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--warmup", type=int, default=100, help="warm-up items before RSS")
    parser.add_argument("--model", default=None, help="model folder (default: tiny, built)")
    parser.add_argument("--policy", default="batched")
    parser.add_argument(
        "--draft",
        action="store_true",
        help="draft with the tiny draft model too (drafters model, ngram, consensus)",
    )
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads (1: tiny models on a busy CPU)",
    )
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory() as tmp:
        target, draft = build_tiny_pair(Path(tmp))
        model = args.model or str(target)
        draft_model = str(draft) if args.draft and not args.model else None
        report = run_soak(
            model,
            args.requests,
            threads=args.threads,
            seed=args.seed,
            warmup=args.warmup,
            max_batch_size=args.max_batch_size,
            policy=args.policy,
            draft_model=draft_model,
        )
    print(report.summary())
    print("PASS" if report.ok else "FAIL")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
