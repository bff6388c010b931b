"""Game of 24 with Tree-of-Thoughts on the embedded model, level by level.

Every level's proposals go to the engine as one submission (the siblings of a node form one
group), then every value prompt; identical value prompts run once. The ToT paper's setup
is b = 5, 4 steps, 3 value samples; the defaults here are smaller so a CPU run takes a
few minutes.

    python cookbook/tot_game24.py "4 5 6 10"
    python cookbook/tot_game24.py "4 5 6 10" --breadth 5 --n-evaluate 3 --mermaid tree.md
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from langchain_seed import SeedLLM, TreeOfThoughts, tree_to_mermaid


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("puzzle", nargs="?", default="4 5 6 10")
    parser.add_argument("--breadth", type=int, default=2)
    parser.add_argument("--n-evaluate", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--model", default=None, help="default: embedded SmolLM2-135M-Instruct")
    parser.add_argument("--mermaid", default=None, help="write the tree as a Mermaid chart")
    args = parser.parse_args()

    llm = SeedLLM(model=args.model, drafters=("consensus", "ngram"))
    tot = TreeOfThoughts.from_task(
        "game24",
        llm=llm,
        breadth=args.breadth,
        n_evaluate_sample=args.n_evaluate,
        max_tokens=args.max_tokens,
        temperature=0.0,  # greedy: the tree is reproducible and equal across engine policies
    )

    result = None
    async for event in tot.astream_events({"input": args.puzzle}, version="v2"):
        if event["event"] == "on_custom_event" and event["name"] == "tot_level":
            data = event["data"]
            print(f"level {data['level']}: {len(data['new_nodes'])} thoughts, kept {data['kept']}")
            for node in data["new_nodes"]:
                print(f"    #{node['id']} {node['thought'].strip()!r} value={node['value']}")
        elif event["event"] == "on_chain_end" and event["name"] == "TreeOfThoughts":
            result = event["data"]["output"]

    assert result is not None
    stats = result["stats"]
    print("best path:", " | ".join(s["thought"].strip() for s in result["best_path"][1:]))
    print(f"answer: {result['answer']!r}  solved: {result['solved']}")
    print(
        f"{stats['calls']} calls in {stats['model_submissions']} engine submissions, "
        f"{stats['prompt_tokens']} prompt / {stats['generated_tokens']} generated tokens, "
        f"{stats['seconds']['total']:.1f} s, value-cache hits {stats['value_cache_hits']}"
    )
    if args.mermaid:
        Path(args.mermaid).write_text("```mermaid\n" + tree_to_mermaid(result) + "```\n")
        print("wrote", args.mermaid)


if __name__ == "__main__":
    asyncio.run(main())
