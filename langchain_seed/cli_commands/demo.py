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


def run(args: argparse.Namespace) -> int:
    """Run the demo; returns the exit status."""
    from rich.console import Console

    from langchain_seed.cli import main as cli_main
    from langchain_seed.engine.engine import shared_model

    console = Console()
    console.rule("[bold]langchain-seed demo")
    t0 = time.perf_counter()
    loaded = shared_model(args.model, "cpu", "float32")
    console.print(
        f"model: [bold]{loaded.name}[/bold] ({loaded.source}) loaded in "
        f"{time.perf_counter() - t0:.2f} s"
    )
    model_args = ["--model", args.model] if args.model else []

    console.rule("[bold]1. Tree-of-Thoughts: Game of 24")
    tot_args = ["tot", "--task", "game24", "--puzzle", args.puzzle, *model_args]
    tot_args += ["--breadth", str(2 if args.quick else args.breadth)]
    if args.quick:
        tot_args += ["--steps", "2"]
    t_tot = time.perf_counter()
    status = cli_main(tot_args)
    tot_seconds = time.perf_counter() - t_tot

    console.rule("[bold]2. Self-consistency: one GSM8K question")
    sc_args = ["sc", "--question", args.question, "-n", str(args.samples), *model_args]
    if args.quick:
        sc_args += ["--max-tokens", "96"]
    t_sc = time.perf_counter()
    status = cli_main(sc_args) or status
    sc_seconds = time.perf_counter() - t_sc

    console.rule("[bold]summary")
    console.print(
        f"Tree-of-Thoughts {tot_seconds:.1f} s, self-consistency {sc_seconds:.1f} s "
        "(speed and acceptance of each run are printed above)."
    )
    return status
