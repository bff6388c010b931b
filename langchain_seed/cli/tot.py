"""``langchain-seed tot``: one Tree-of-Thoughts search, printed as a tree with speed stats.

Examples::

    langchain-seed tot --task game24 --puzzle "4 5 6 10"
    langchain-seed tot --task game24 --index 900 --breadth 2 --json tot.json --mermaid tot.md
    langchain-seed tot --task gsm8k --index 0 --search dfs --threshold 5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from langchain_seed.engine.config import DRAFTERS as DRAFTER_CHOICES


def register(subparsers: Any) -> None:
    """Add the ``tot`` subcommand."""
    from langchain_seed.tree_of_thoughts import TASK_NAMES

    parser = subparsers.add_parser(
        "tot",
        help="Tree-of-Thoughts search on a built-in task (game24, gsm8k, creative_writing)",
        description=(
            "Run one BFS/DFS Tree-of-Thoughts search; every level's generation calls go to the "
            "engine together, then every evaluation call. Prints the tree, the answer and stats."
        ),
    )
    parser.add_argument("--task", default="game24", choices=TASK_NAMES)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--puzzle", "--input", dest="input", help="the problem text")
    source.add_argument("--index", type=int, help="row of the task's data set in ../shared/data")
    parser.add_argument("--gold", default=None, help="gold answer for the checker (gsm8k)")
    parser.add_argument("--data-dir", default=None, help="data folder (default: $SEED_DATA_DIR)")
    search = parser.add_argument_group("search (default: the task's setting)")
    search.add_argument("--search", default="bfs", choices=("bfs", "dfs"))
    search.add_argument("--breadth", "-b", type=int, default=None, help="beam width")
    search.add_argument("--steps", type=int, default=None, help="tree depth")
    search.add_argument("--n-generate", type=int, default=None, help="samples per state")
    search.add_argument("--n-evaluate", type=int, default=None, help="evaluation samples")
    search.add_argument("--selection", default="greedy", choices=("greedy", "sample"))
    search.add_argument("--threshold", type=float, default=None, help="DFS pruning value")
    search.add_argument("--max-nodes", type=int, default=None, help="node budget")
    search.add_argument("--temperature", type=float, default=None)
    search.add_argument("--max-tokens", type=int, default=None, help="token budget per call")
    search.add_argument("--seed", type=int, default=None, help="seed of sampled selection")
    search.add_argument(
        "--value-style",
        default="paper",
        choices=("paper", "short"),
        help="game24 value prompt: the paper's, or one-line examples a tiny model follows",
    )
    search.add_argument(
        "--no-pipeline",
        action="store_true",
        help="evaluate after the level's last generation (one model call per phase)",
    )
    search.add_argument(
        "--constrain-evaluations",
        action="store_true",
        help="constrain evaluation answers to the task's labels (game24: sure/likely/impossible)",
    )
    model = parser.add_argument_group("model and engine")
    model.add_argument("--model", default=None, help="target model (default: embedded)")
    model.add_argument("--draft-model", default=None, help="draft model for 'model' drafting")
    model.add_argument(
        "--policy", default="batched", choices=("autoregressive", "fcfs_rounds", "batched")
    )
    model.add_argument(
        "--drafters",
        nargs="+",
        default=None,
        choices=DRAFTER_CHOICES,
        help="default: consensus ngram (plus model with --draft-model, grammar with a constraint)",
    )
    model.add_argument("--device", default="cpu")
    model.add_argument(
        "--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16")
    )
    model.add_argument(
        "--backend",
        default="embedded",
        choices=("embedded", "vllm"),
        help="vllm: run on vLLM's engine (needs vLLM; --policy/--drafters/--device unused)",
    )
    out = parser.add_argument_group("output")
    out.add_argument("--json", dest="json_path", default=None, help="write the result as JSON")
    out.add_argument("--mermaid", default=None, help="write a Mermaid chart (Markdown) here")
    out.add_argument("--no-tree", action="store_true", help="do not print the tree")
    out.add_argument(
        "--no-progress", action="store_true", help="no progress bar (the level lines stay)"
    )
    parser.set_defaults(func=run)


def build_llm(args: argparse.Namespace) -> Any:
    """The SeedLLM the options describe."""
    from langchain_seed import SeedLLM

    if args.backend == "vllm":
        return SeedLLM(backend="vllm", model=args.model, dtype=args.dtype)
    drafters = args.drafters or (
        (["model"] if args.draft_model else [])
        + ["consensus", "ngram"]
        + (["grammar"] if args.constrain_evaluations else [])
    )
    return SeedLLM(
        model=args.model,
        draft_model=args.draft_model,
        policy=args.policy,
        drafters=tuple(drafters),
        device=args.device,
        dtype=args.dtype,
    )


def _level_printer(console: Any, bar: Any) -> Any:
    """Callbacks: ``bar`` counts the level's finished completions; a line after each level.

    Every prompt of a model call is one LangChain run, so ``on_llm_end`` fires once per
    finished completion (all ``n`` samples of a prompt), generation and evaluation alike.
    """
    import threading

    from langchain_core.callbacks import BaseCallbackHandler

    from langchain_seed.tree_of_thoughts import LEVEL_EVENT

    class Levels(BaseCallbackHandler):
        def __init__(self) -> None:
            self.lock = threading.Lock()  # pipelined calls end on several threads

        def on_llm_end(self, response: Any, **kwargs: Any) -> None:
            with self.lock:
                bar.update(1)

        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            if name != LEVEL_EVENT:
                return
            best = data["best_value"]
            with self.lock:
                bar.clear()
                console.print(
                    f"[dim]level {data['level']}: {len(data['new_nodes'])} new, "
                    f"kept {data['kept']}, best value {best if best is None else f'{best:g}'}, "
                    f"{data['calls']} calls, {data['seconds']:.1f} s[/dim]"
                )
                bar.reset()
                bar.set_description(f"level {data['level'] + 1}")

    return Levels()


def render_tree(result: dict[str, Any]) -> Any:
    """A rich ``Tree`` of the search: kept green, pruned dim, best path bold."""
    from rich.markup import escape
    from rich.tree import Tree

    nodes = result["tree"]
    best = {step["id"] for step in result["best_path"]}
    root = Tree(f"[bold]{escape(result['input'].splitlines()[0][:80])}[/bold]")
    handles = {0: root}
    for node in nodes[1:]:
        thought = " / ".join(ln.strip() for ln in node["thought"].splitlines() if ln.strip())
        value = "" if node["value"] is None else f" [cyan]v={node['value']:g}[/cyan]"
        style = "green" if node["status"] == "kept" else "dim"
        if node["id"] in best:
            style = "bold green"
        label = f"[{style}]#{node['id']} {escape(thought[:100])}[/{style}]{value}"
        if node["note"] and node["note"] not in ("votes", "static"):
            label += f" [dim]({escape(node['note'])})[/dim]"
        handles[node["id"]] = handles[node["parent"]].add(label)
    return root


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The answer and speed stats as plain lines."""
    stats = result["stats"]
    seconds = stats["seconds"]
    lines = [
        f"answer: {result['answer']!r}  solved: {result['solved']}  stopped: {result['stopped']}",
        f"nodes: {stats['nodes']}  calls: {stats['calls']} ({stats['completions']} completions, "
        f"{stats['model_submissions']} model submissions)  value-cache hits: "
        f"{stats['value_cache_hits']}",
        f"time: {seconds['total']:.1f} s (generate {seconds['generate']:.1f} s, evaluate "
        f"{seconds['evaluate']:.1f} s, search {seconds['search']:.2f} s)"
        + (
            f"; {seconds['overlapped_evaluate']:.1f} s of evaluation ran inside generation"
            if seconds.get("overlapped_evaluate")
            else ""
        ),
    ]
    if stats.get("generated_tokens"):
        rate = stats["generated_tokens"] / max(seconds["generate"] + seconds["evaluate"], 1e-9)
        lines.append(
            f"tokens: {stats['prompt_tokens']} prompt, {stats['generated_tokens']} generated "
            f"({rate:.1f} generated tokens/s)"
        )
    spec = stats.get("spec") or {}
    if spec.get("verifications"):
        mean = 1 + spec.get("accepted", 0) / spec["verifications"]
        cached = spec.get("cached_prompt_tokens", 0)
        lines.append(
            f"speculation: {int(spec.get('drafted', 0))} drafted, {int(spec.get('accepted', 0))} "
            f"accepted, mean accepted length {mean:.2f}; prefix-cached prompt tokens {int(cached)}"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    """Run the search and print it."""
    from rich.console import Console
    from tqdm import tqdm

    from langchain_seed.tree_of_thoughts import TreeOfThoughts, get_task, tree_to_mermaid

    console = Console()
    if args.data_dir:
        os.environ["SEED_DATA_DIR"] = args.data_dir
    task = get_task(args.task)
    if hasattr(task, "value_style"):
        task.value_style = args.value_style
    if args.index is not None:
        try:
            example = task.load_example(args.index)
        except (FileNotFoundError, IndexError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    else:
        example = {"input": args.input}
    if args.gold is not None:
        example["gold"] = args.gold
    tot = TreeOfThoughts(
        llm=build_llm(args),
        task=task,
        search=args.search,
        breadth=args.breadth,
        steps=args.steps,
        n_generate_sample=args.n_generate,
        n_evaluate_sample=args.n_evaluate,
        selection=args.selection,
        value_threshold=args.threshold,
        max_nodes=args.max_nodes,
        temperature=args.temperature,
        max_tokens=args.max_tokens,
        seed=args.seed,
        constrain_evaluations=args.constrain_evaluations or None,
        pipeline=not args.no_pipeline,
    )
    console.print(f"[bold]{args.task}[/bold] {args.search}: {example['input'][:200]}")
    bar = tqdm(desc="level 0", unit="call", disable=args.no_progress, file=sys.stderr, leave=False)
    try:
        result = tot.invoke(example, config={"callbacks": [_level_printer(console, bar)]})
    finally:
        bar.close()
    if not args.no_tree:
        console.print(render_tree(result))
    for line in summary_lines(result):
        console.print(line, highlight=False, markup=False)
    if args.json_path:
        Path(args.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_path).write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"wrote {args.json_path}")
    if args.mermaid:
        Path(args.mermaid).parent.mkdir(parents=True, exist_ok=True)
        Path(args.mermaid).write_text("```mermaid\n" + tree_to_mermaid(result) + "```\n")
        console.print(f"wrote {args.mermaid}")
    return 0
