"""The :class:`ToTTask` base class: what a Tree-of-Thoughts task supplies to the search.

Vocabulary used across the package:

* **input** ``x``: the problem text (a Game of 24 puzzle, a GSM8K question, ...).
* **state** ``y``: the text of the partial solution so far, the concatenation of the
  thoughts on the path from the root (the root's state is ``""``).
* **thought**: one step that extends a state into a child state.
* **generation**: ``"propose"`` (one call per state whose output lists several next
  thoughts) or ``"sample"`` (``n_generate_sample`` calls per state, one thought each).
* **evaluation**: ``"value"`` (``n_evaluate_sample`` calls score one state; the task maps
  their outputs to a number) or ``"vote"`` (``n_evaluate_sample`` calls of one prompt
  that shows every candidate; the votes are the values).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from langchain_seed.engine.config import Grammar

GenerateMode = Literal["propose", "sample"]
EvaluateMode = Literal["value", "vote"]


class ToTTask:
    r"""A Tree-of-Thoughts task: prompts, parsers, the final test and an optional checker.

    Subclass it and override the hooks your modes need (set the defaults below as class
    attributes, or make the subclass a ``@dataclass`` with annotated fields):
    ``generate_prompt`` + ``parse_thoughts`` always, ``value_prompt`` + ``parse_value`` for
    ``evaluate_mode="value"``, ``vote_prompt`` + ``parse_votes`` for ``"vote"``; then
    ``is_final`` / ``answer`` / ``check`` as the task needs.

    Example:
        .. code-block:: python

            class Countdown(ToTTask):
                name = "countdown"
                steps = 3
                generate_mode = "sample"
                n_generate_sample = 3

                def generate_prompt(self, x, state, step):
                    return f"Reach {x}. Steps so far:\\n{state}Next step:"

                def parse_thoughts(self, x, state, outputs, step):
                    return [state + o.strip() + "\\n" for o in outputs if o.strip()]

                def value_prompt(self, x, state, step):
                    return f"Goal {x}.\\n{state}Rate the progress 0-10:"

                def parse_value(self, x, state, outputs):
                    scores = [int(m[0]) for o in outputs if (m := re.findall(r"\\d+", o))]
                    return sum(scores) / len(scores) if scores else None

    Attributes are the task's defaults; ``TreeOfThoughts`` fields left as ``None`` take them.
    """

    name: str = "custom"
    """Name shown in results and events."""
    steps: int = 3
    """Depth of the tree: how many thoughts lead from the input to an answer."""
    generate_mode: GenerateMode = "sample"
    """``"propose"``: one call lists several thoughts; ``"sample"``: k calls, one each."""
    evaluate_mode: EvaluateMode = "value"
    """``"value"``: score each state; ``"vote"``: one prompt over all candidates."""
    breadth: int = 5
    """Beam width b (``n_select_sample`` in the ToT paper)."""
    n_generate_sample: int = 1
    """Thought samples per state in ``"sample"`` mode (propose mode makes one call)."""
    n_evaluate_sample: int = 3
    """Evaluation calls per state (``"value"``) or per level (``"vote"``)."""
    temperature: float = 0.7
    """Sampling temperature of every call."""
    generate_max_tokens: int = 128
    """Token budget of one generation call."""
    evaluate_max_tokens: int = 64
    """Token budget of one evaluation call."""
    generate_stop: Sequence[str] | None = None
    """Stop strings of generation calls (``None``: none)."""
    evaluate_stop: Sequence[str] | None = None
    """Stop strings of evaluation calls (``None``: none)."""
    value_threshold: float = 0.0
    """DFS prunes children whose value is below this."""
    constrain_evaluations: bool = False
    """Constrain evaluation answers to the task's format (:meth:`evaluation_grammar`) with
    an engine-backed model; other models are not constrained."""

    # -- generation -------------------------------------------------------------------

    def generate_prompt(self, x: str, state: str, step: int) -> str:
        """The prompt that generates thoughts extending ``state``.

        Args:
            x: the problem input.
            state: the partial solution so far (``""`` at the root).
            step: the depth of the children being generated, from 0.

        Returns:
            The prompt text.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement generate_prompt")

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        """Turn the generation outputs of one state into child states.

        Args:
            x: the problem input.
            state: the parent state.
            outputs: the model outputs of this state's generation call(s): one text in
                ``"propose"`` mode, ``n_generate_sample`` texts in ``"sample"`` mode.
            step: the depth of the children, from 0.

        Returns:
            The child states (each the parent state plus one thought); malformed outputs
            are dropped, so an empty list is a valid answer.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement parse_thoughts")

    def generate_limits(self, step: int) -> tuple[int, list[str] | None]:
        """``(max_tokens, stop)`` of the generation calls at depth ``step``.

        Args:
            step: the depth of the children being generated, from 0.

        Returns:
            The task defaults ``generate_max_tokens`` and ``generate_stop``; tasks whose
            levels differ (plans, then passages) override this.
        """
        return self.generate_max_tokens, list(self.generate_stop) if self.generate_stop else None

    # -- evaluation -------------------------------------------------------------------

    def static_value(self, x: str, state: str, step: int) -> float | None:
        """A value known without asking the model (``None``: ask the model).

        Args:
            x: the problem input.
            state: the state to score.
            step: its depth, from 0.

        Returns:
            The value, or ``None``.
        """
        return None

    def value_prompt(self, x: str, state: str, step: int) -> str:
        """The prompt that scores one state (``evaluate_mode="value"``).

        Args:
            x: the problem input.
            state: the state to score.
            step: its depth, from 0.

        Returns:
            The prompt text; identical prompts are computed once per search.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement value_prompt")

    def evaluation_grammar(self, step: int) -> Grammar | None:
        """The grammar evaluation answers follow when ``constrain_evaluations`` is on.

        Args:
            step: the depth of the states being evaluated.

        Returns:
            ``None`` here (no constraint); tasks with labelled answers override it.
        """
        return None

    def parse_value(self, x: str, state: str, outputs: list[str]) -> float | None:
        """Map the ``n_evaluate_sample`` outputs of a value prompt to a number.

        Args:
            x: the problem input.
            state: the state that was scored.
            outputs: the evaluation outputs.

        Returns:
            The value, or ``None`` when no output parses (the search then uses 0).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement parse_value")

    def update_state(self, x: str, state: str, outputs: list[str]) -> str:
        """The state after its evaluation (default: unchanged).

        Tasks whose evaluation also extends the state (GSM8K: the evaluation answers the
        sub-question) override this.

        Args:
            x: the problem input.
            state: the state that was scored.
            outputs: the evaluation outputs.

        Returns:
            The new state text.
        """
        return state

    def vote_prompt(self, x: str, states: list[str], step: int) -> str:
        """One prompt that shows every candidate state (``evaluate_mode="vote"``).

        Args:
            x: the problem input.
            states: the candidates, numbered from 1 in the prompt.
            step: their depth, from 0.

        Returns:
            The prompt text.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement vote_prompt")

    def parse_votes(self, outputs: list[str], n_candidates: int) -> list[float]:
        """Count the votes of the ``n_evaluate_sample`` vote outputs.

        Args:
            outputs: the vote outputs.
            n_candidates: how many candidates the prompt showed.

        Returns:
            One vote count per candidate; unparsable outputs vote for nobody.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement parse_votes")

    # -- answers ----------------------------------------------------------------------

    def is_final(self, x: str, state: str) -> bool:
        """Whether ``state`` is a complete solution (BFS stops expanding it).

        Args:
            x: the problem input.
            state: the state.

        Returns:
            True when the state holds an answer.
        """
        return False

    def answer(self, x: str, state: str) -> str | None:
        """The answer a state gives (``None`` if it gives none).

        Args:
            x: the problem input.
            state: the state.

        Returns:
            The answer text or ``None``.
        """
        return state.strip() or None

    def check(self, x: str, answer: str | None, gold: str | None = None) -> bool | None:
        """Whether ``answer`` solves ``x`` (``None``: the task cannot tell).

        Args:
            x: the problem input.
            answer: the answer found by the search.
            gold: the gold answer, when the input carried one.

        Returns:
            True or False when the task can check, else ``None``.
        """
        return None

    def load_example(self, index: int) -> dict[str, Any]:
        """The ``index``-th example of the task's data set (``input`` and maybe ``gold``).

        Args:
            index: row number, from 0.

        Returns:
            A dict with ``input`` and optionally ``gold``.

        Raises:
            NotImplementedError: the task has no data set.
        """
        raise NotImplementedError(f"task {self.name!r} has no data set")

    def generate_samples(self, n_generate_sample: int) -> int:
        """Calls per state in the generation phase (1 in ``"propose"`` mode).

        Args:
            n_generate_sample: the configured sample count.

        Returns:
            The number of completions to request per state.
        """
        return 1 if self.generate_mode == "propose" else n_generate_sample
