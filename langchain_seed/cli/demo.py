"""``langchain-seed demo``: the main job on the embedded model, end to end.

Loads the embedded SmolLM2-135M-Instruct (printing the load time: the first run converts
the GGUF once, later runs read the cached safetensors), then runs a real Tree-of-Thoughts
search on a Game of 24 puzzle and a self-consistency vote on a GSM8K question through the
same engine, and closes with a summary of speed and acceptance.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

DEFAULT_QUESTION = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
    "in May. How many clips did Natalia sell altogether in April and May?"
)


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="Tree-of-Thoughts + self-consistency on the embedded model, with a speed summary",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--puzzle", default="4 5 6 10", help="Game of 24 numbers")
    parser.add_argument("--question", default=DEFAULT_QUESTION, help="self-consistency question")
    parser.add_argument("--breadth", type=int, default=3, help="ToT beam width (paper: 5)")
    parser.add_argument("-n", "--samples", type=int, default=8, help="self-consistency samples")
    parser.add_argument("--quick", action="store_true", help="smaller search (2 levels, b=2)")
    parser.add_argument("--model", default=None, help="target model (default: embedded)")
    parser.set_defaults(func=run)


CHAT_QUESTIONS = (
    "What is the capital of France?",
    "Name a primary color.",
    "What is 7 + 5?",
)


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    import json
    import tempfile
    from pathlib import Path

    from rich.console import Console

    from langchain_seed.cli import main as cli_main
    from langchain_seed.engine.config import EngineConfig
    from langchain_seed.engine.engine import Engine
    from langchain_seed.engine.execution.models import shared_model

    console = Console()
    console.rule("[bold]langchain-seed demo")
    t0 = time.perf_counter()
    dtype = EngineConfig(model=args.model).dtype  # what dtype="auto" means on this machine
    loaded = shared_model(args.model, "cpu", dtype)
    console.print(
        f"model: [bold]{loaded.name}[/bold] ({loaded.source}, {dtype}) loaded in "
        f"{time.perf_counter() - t0:.2f} s"
    )
    model_args = ["--model", args.model] if args.model else []
    rows: list[tuple[str, dict[str, Any]]] = []

    console.rule("[bold]1. An LCEL chain: three questions, one engine batch")
    rows.append(("LCEL batch", _chat_batch(console, args.model)))
    # Each part uses its own engine configuration: its engines close when it ends, so
    # their KV buffers and prefix caches do not outlive it.
    Engine.close_shared()

    with tempfile.TemporaryDirectory() as tmp:
        console.rule("[bold]2. Tree-of-Thoughts: Game of 24")
        tot_json = Path(tmp) / "tot.json"
        tot_args = ["tot", "--task", "game24", "--puzzle", args.puzzle, *model_args]
        tot_args += ["--breadth", str(2 if args.quick else args.breadth), "--json", str(tot_json)]
        if args.quick:
            tot_args += ["--steps", "2"]
        status = cli_main(tot_args)
        Engine.close_shared()
        if tot_json.exists():
            rows.append(("ToT game24", _tot_row(json.loads(tot_json.read_text()))))

        console.rule("[bold]3. Self-consistency: one GSM8K question")
        sc_json = Path(tmp) / "sc.json"
        sc_args = ["sc", "--question", args.question, "-n", str(args.samples), *model_args]
        sc_args += ["--json", str(sc_json)]
        if args.quick:
            sc_args += ["--max-tokens", "96"]
        status = cli_main(sc_args) or status
        Engine.close_shared()
        if sc_json.exists():
            rows.append((f"SC (n={args.samples})", _sc_row(json.loads(sc_json.read_text()))))

    console.rule("[bold]summary")
    _print_summary(console, rows)
    return status


def _chat_batch(console: Any, model: str | None) -> dict[str, Any]:
    """Three questions through ``prompt | ChatSeed | parser`` as one batch; prints answers."""
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    from langchain_seed import ChatSeed

    chat = ChatSeed(model=model, temperature=0, max_tokens=48)
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])
    chain = prompt | chat | StrOutputParser()
    before = chat.engine.stats()
    start = time.perf_counter()
    answers = chain.batch([{"q": q} for q in CHAT_QUESTIONS])
    wall = time.perf_counter() - start
    after = chat.engine.stats()
    for question, answer in zip(CHAT_QUESTIONS, answers, strict=True):
        console.print(
            f"[bold]Q:[/bold] {question}\n[bold]A:[/bold] {answer.strip()}", highlight=False
        )
    verifications = after.spec.verifications - before.spec.verifications
    accepted = after.spec.accepted - before.spec.accepted
    return {
        "seconds": wall,
        "generated": after.spec.generated_tokens - before.spec.generated_tokens,
        "mean_accepted_length": 1 + accepted / verifications if verifications else None,
        "answer": f"{len(answers)} answers, above",
    }


def _tot_row(result: dict[str, Any]) -> dict[str, Any]:
    stats = result["stats"]
    spec = stats.get("spec") or {}
    verifications = spec.get("verifications", 0)
    return {
        "seconds": stats["seconds"]["total"],
        "generated": stats.get("generated_tokens", 0),
        "mean_accepted_length": (
            1 + spec.get("accepted", 0) / verifications if verifications else None
        ),
        "answer": f"{result['answer']} ({'solved' if result['solved'] else 'unsolved'})",
    }


def _sc_row(report: dict[str, Any]) -> dict[str, Any]:
    summary = report["summary"]
    question = report["questions"][0]
    return {
        "seconds": summary["wall_seconds"],
        "generated": summary["generated_tokens"],
        "mean_accepted_length": summary["mean_accepted_length"] or None,
        "answer": f"{question['answer']} ({question['confidence']:.0%} of votes)",
    }


def _print_summary(console: Any, rows: list[tuple[str, dict[str, Any]]]) -> None:
    from rich.table import Table

    table = Table(title="speed and acceptance")
    for column in ("run", "answer", "wall s", "tokens", "tokens/s", "accepted/step"):
        table.add_column(column)
    for name, row in rows:
        rate = row["generated"] / row["seconds"] if row["seconds"] else 0.0
        mean = row["mean_accepted_length"]
        table.add_row(
            name,
            str(row["answer"]),
            f"{row['seconds']:.1f}",
            str(row["generated"]),
            f"{rate:.1f}",
            "-" if mean is None else f"{mean:.2f}",
        )
    console.print(table)
    console.print(
        "tokens = generated tokens; accepted/step = tokens a sequence gains per target "
        "forward (1.00 = no speculation gain). Greedy outputs equal the engine's decoding "
        "without drafts token for token, whatever runs beside them (bfloat16 too, on the "
        "own execution path); float32 equals transformers' generate."
    )
