"""``langchain-seed sc``: self-consistency on one question or the first N GSM8K problems.

Examples::

    langchain-seed sc --question "Tom has 3 apples and buys 5 more. How many?" -n 16
    langchain-seed sc --gsm8k 20 -n 16 --early-stop --json sc.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from langchain_seed.datasets import data_dir, gsm8k_gold, gsm8k_rows
from langchain_seed.engine.config import DRAFTERS as DRAFTER_CHOICES

SYSTEM = "You are a careful math tutor. Solve the problem step by step."
INSTRUCTION = '{question}\nThink step by step. End with "The answer is N." where N is a number.'


def load_gsm8k(count: int, folder: Path) -> list[dict[str, str | None]]:
    """The first ``count`` GSM8K test problems: ``question`` and normalised ``gold`` answer.

    Raises:
        FileNotFoundError: when the data file is absent (the message says where it looked).
    """
    return [
        {"question": row["question"], "gold": gsm8k_gold(str(row["answer"]))}
        for row in gsm8k_rows(count, folder=folder)
    ]


def register(subparsers: Any) -> None:
    """Add the ``sc`` subcommand."""
    parser = subparsers.add_parser(
        "sc",
        help="self-consistency: majority vote over N samples (one engine group per question)",
        description=(
            "Sample N answers per question in one engine group (shared prefill, consensus "
            "drafting across the samples), vote, and report accuracy, speed and acceptance."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--question", help="one question to answer")
    source.add_argument("--gsm8k", type=int, metavar="N", help="the first N GSM8K test problems")
    parser.add_argument("-n", "--samples", type=int, default=16, help="samples per question")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=192, help="new tokens per sample")
    parser.add_argument("--early-stop", action="store_true", help="stop once the vote is decided")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed")
    parser.add_argument(
        "--questions-per-call",
        type=int,
        default=2,
        help="questions whose samples share one engine submission",
    )
    parser.add_argument("--data-dir", default=None, help="folder with gsm8k_test_0_999.jsonl")
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.add_argument("--draft-model", default=None, help="draft model for 'model' drafting")
    parser.add_argument(
        "--policy", default="batched", choices=("autoregressive", "fcfs_rounds", "batched")
    )
    parser.add_argument(
        "--drafters",
        nargs="+",
        default=None,
        choices=DRAFTER_CHOICES,
        help="default: consensus ngram (plus model with --draft-model)",
    )
    parser.add_argument("--max-batch-size", type=int, default=32, help="engine max_batch_size")
    parser.add_argument(
        "--backend",
        default="embedded",
        choices=("embedded", "vllm"),
        help="vllm: run on vLLM's engine (needs vLLM; --policy/--drafters/--device unused)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16")
    )
    parser.add_argument("--json", dest="json_path", default=None, help="write results as JSON")
    parser.add_argument("--show-samples", action="store_true", help="print every sample")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _progress_handler(bar: Any) -> Any:
    """A callback handler that moves ``bar`` by the samples each round drew."""
    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_seed.self_consistency import PROGRESS_EVENT

    class Progress(BaseCallbackHandler):
        def __init__(self) -> None:
            self.seen: dict[Any, int] = {}

        def on_custom_event(self, name: str, data: Any, *, run_id: Any, **kwargs: Any) -> None:
            if name != PROGRESS_EVENT:
                return
            before = self.seen.get(run_id, 0)
            self.seen[run_id] = data["drawn"]
            bar.update(data["drawn"] - before)
            if data["done"] and data["drawn"] < data["n"]:  # early stop: shrink the total
                bar.total -= data["n"] - data["drawn"]
                bar.refresh()

    return Progress()


def run(args: argparse.Namespace) -> int:
    """Answer the questions, print a summary; returns 2 when the data is missing."""
    from langchain_core.prompts import ChatPromptTemplate
    from tqdm import tqdm

    from langchain_seed.chat_models import ChatSeed
    from langchain_seed.engine import Engine, EngineConfig
    from langchain_seed.self_consistency import SelfConsistency

    if args.samples < 1:
        print("error: -n must be >= 1", file=sys.stderr)
        return 2
    if args.question is not None:
        items: list[dict[str, str | None]] = [{"question": args.question, "gold": None}]
    else:
        try:
            items = load_gsm8k(args.gsm8k, data_dir(args.data_dir))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    drafters = tuple(
        args.drafters or (("model",) if args.draft_model else ()) + ("consensus", "ngram")
    )
    config = EngineConfig(
        model=args.model,
        draft_model=args.draft_model,
        policy=args.policy,
        drafters=drafters,
        max_batch_size=args.max_batch_size,
        device=args.device,
        dtype=args.dtype,
    )
    print(f"loading {args.model or 'the embedded model'} ...", file=sys.stderr)
    engine: Any
    if args.backend == "vllm":
        from langchain_seed.backends.vllm import VLLMEngine

        engine = VLLMEngine(args.model, dtype=args.dtype)
    else:
        engine = Engine(config)
    try:
        chat = ChatSeed(engine=engine)
        prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", INSTRUCTION)])
        sc = SelfConsistency(
            llm=chat,
            prompt=prompt,
            n=args.samples,
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            early_stop=args.early_stop,
            seed=args.seed,
        )
        engine.reset_stats()
        bar = tqdm(
            total=len(items) * args.samples,
            unit="sample",
            desc="self-consistency",
            disable=args.no_progress,
            file=sys.stderr,
        )
        handler = _progress_handler(bar)
        outputs: list[dict[str, Any]] = []
        start = time.perf_counter()
        step = max(1, args.questions_per_call)
        for i in range(0, len(items), step):
            chunk: list[dict[str, Any] | str] = [
                {"question": item["question"]} for item in items[i : i + step]
            ]
            outputs += sc.batch(chunk, config={"callbacks": [handler]})
        wall = time.perf_counter() - start
        bar.close()
        stats = engine.stats()
    finally:
        engine.close()
    report = _report(items, outputs, stats.to_dict(), wall, args)
    _print(report, args.show_samples)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json_path}")
    return 0


def _report(
    items: list[dict[str, str | None]],
    outputs: list[dict[str, Any]],
    engine_stats: dict[str, Any],
    wall: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    questions = []
    for item, out in zip(items, outputs, strict=True):
        gold = item["gold"]
        questions.append(
            {
                "question": item["question"],
                "gold": gold,
                "answer": out["answer"],
                "correct": (out["answer"] == gold) if gold is not None else None,
                "votes": out["votes"],
                "confidence": out["confidence"],
                "samples": out["samples"],
                "stats": {k: v for k, v in out["stats"].items() if k != "engine"},
            }
        )
    graded = [q["correct"] for q in questions if q["correct"] is not None]
    spec = engine_stats.get("spec", {})
    generated = int(spec.get("generated_tokens", 0))
    drafted, accepted = int(spec.get("drafted", 0)), int(spec.get("accepted", 0))
    verifications = int(spec.get("verifications", 0))
    summary = {
        "questions": len(questions),
        "samples": sum(q["stats"]["samples"] for q in questions),
        "accuracy": (sum(graded) / len(graded)) if graded else None,
        "wall_seconds": wall,
        "generated_tokens": generated,
        "tokens_per_second": generated / wall if wall > 0 else 0.0,
        "mean_accepted_length": 1.0 + accepted / verifications if verifications else 0.0,
        "acceptance_rate": accepted / drafted if drafted else 0.0,
        "accepted_by_drafter": spec.get("accepted_by_drafter", {}),
        "drafted_by_drafter": spec.get("drafted_by_drafter", {}),
        "target_forwards": engine_stats.get("target_forwards"),
        "draft_seconds": engine_stats.get("draft_seconds"),
        "verify_seconds": engine_stats.get("verify_seconds"),
    }
    settings = {
        "n": args.samples,
        "temperature": args.temperature,
        "max_tokens": args.max_tokens,
        "early_stop": args.early_stop,
        "model": args.model or "embedded",
        "policy": args.policy,
        "drafters": args.drafters,
    }
    return {
        "settings": settings,
        "summary": summary,
        "questions": questions,
        "engine": engine_stats,
    }


def _print(report: dict[str, Any], show_samples: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="self-consistency")
    for column in ("#", "answer", "gold", "ok", "confidence", "votes (top 3)", "samples"):
        table.add_column(column)
    for i, q in enumerate(report["questions"], 1):
        top = ", ".join(f"{a}: {c}" for a, c in list(q["votes"].items())[:3])
        ok = "" if q["correct"] is None else ("yes" if q["correct"] else "no")
        table.add_row(
            str(i),
            str(q["answer"]),
            str(q["gold"] or ""),
            ok,
            f"{q['confidence']:.2f}",
            top,
            str(q["stats"]["samples"]),
        )
        if show_samples:
            for sample in q["samples"]:
                console.print(f"[dim]--- {sample['answer']}[/dim]\n{sample['text']}")
    console.print(table)
    s = report["summary"]
    accuracy = "n/a" if s["accuracy"] is None else f"{100 * s['accuracy']:.1f}%"
    console.print(
        f"accuracy {accuracy} | {s['samples']} samples, {s['generated_tokens']} tokens in "
        f"{s['wall_seconds']:.1f} s ({s['tokens_per_second']:.1f} tokens/s) | mean accepted "
        f"length {s['mean_accepted_length']:.2f}, acceptance {100 * s['acceptance_rate']:.0f}% "
        f"| accepted by drafter {s['accepted_by_drafter']}"
    )
