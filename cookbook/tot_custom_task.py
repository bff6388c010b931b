"""A custom Tree-of-Thoughts task in a few lines: reach a target number with +1, +3, *2.

The model proposes the next operation; the value needs no model call (``static_value``:
closer to the target is better). Any LangChain model works; here the embedded one.

    python cookbook/tot_custom_task.py 1 10
"""

from __future__ import annotations

import re
import sys

from langchain_seed import SeedLLM, ToTTask, TreeOfThoughts


class ReachTarget(ToTTask):
    name = "reach_target"
    steps = 4
    generate_mode = "sample"
    n_generate_sample = 3
    breadth = 2
    generate_max_tokens = 8
    generate_stop = ("\n",)

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        start, target = x.split()
        now = self.current(x, state)
        return f"Start at {start}, reach {target} using +1, +3 or *2.\nNow: {now}\nNext operation:"

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        ops = {m.replace(" ", "") for o in outputs for m in re.findall(r"[+*]\s*[123]", o)}
        return [f"{state}{op} " for op in sorted(ops) if op in ("+1", "+3", "*2")]

    def current(self, x: str, state: str) -> int:
        value = int(x.split()[0])
        for op in state.split():
            value = value * 2 if op == "*2" else value + int(op[1:])
        return value

    def static_value(self, x: str, state: str, step: int) -> float:
        return 1.0 / (1 + abs(int(x.split()[1]) - self.current(x, state)))

    def is_final(self, x: str, state: str) -> bool:
        return self.current(x, state) == int(x.split()[1])

    def answer(self, x: str, state: str) -> str:
        return f"{state.strip()} -> {self.current(x, state)}"

    def check(self, x: str, answer: str | None, gold: str | None = None) -> bool:
        return answer is not None and answer.endswith(f"-> {x.split()[1]}")


if __name__ == "__main__":
    start, target = (sys.argv[1:3] + ["1", "10"][len(sys.argv[1:3]) :])[:2]
    model = sys.argv[3] if len(sys.argv) > 3 else None  # optional model path
    tot = TreeOfThoughts(llm=SeedLLM(model=model), task=ReachTarget(), temperature=0.8)
    result = tot.invoke({"input": f"{start} {target}"})
    print("answer:", result["answer"], "solved:", result["solved"])
    print("nodes:", len(result["tree"]), "calls:", result["stats"]["calls"])
