"""Tree-of-Thoughts search logic with scripted models: selection, pruning, budgets, batching."""

from __future__ import annotations

import json

import pytest
from tot_fakes import PathTask, ScriptedChat, path_llm, table_responder

from langchain_seed.tree_of_thoughts import TASK_NAMES, TreeOfThoughts, tree_to_mermaid

CHILDREN = {"/": "a\nb\nc\nd", "/a": "x\ny", "/b": "x\ny", "/c": "x\ny", "/d": "x\ny"}
VALUES = {"/a": 1, "/b": 5, "/c": 3, "/d": 4, "/b/x": 2, "/b/y": 7, "/d/x": 6, "/d/y": 1}
VALUES.update({"/a/x": 9, "/a/y": 9, "/c/x": 9, "/c/y": 9})


def by_state(result: dict) -> dict:
    return {n["state"]: n for n in result["tree"]}


def test_bfs_keeps_top_b_by_value_and_expands_only_the_beam() -> None:
    llm = path_llm(CHILDREN, VALUES)
    tot = TreeOfThoughts(llm=llm, task=PathTask(), breadth=2, steps=2)
    result = tot.invoke({"input": "go"})
    nodes = by_state(result)
    assert [s for s in ("/a", "/b", "/c", "/d") if nodes[s]["status"] == "kept"] == ["/b", "/d"]
    assert nodes["/a"]["status"] == nodes["/c"]["status"] == "pruned"
    # level 1 expands only the beam: the high values under /a and /c are never generated
    assert "/a/x" not in nodes and "/c/x" not in nodes
    assert [p for p in llm.prompts if p.startswith("GEN")] == ["GEN /", "GEN /b", "GEN /d"]
    assert {s for s, n in nodes.items() if n["status"] == "kept" and n["depth"] == 2} == {
        "/b/y",
        "/d/x",
    }
    assert result["answer"] == "/b/y"
    assert [step["thought"] for step in result["best_path"]] == ["", "/b", "/y"]
    assert result["stopped"] == "steps"


def test_bfs_sends_each_phase_of_a_level_as_one_batch() -> None:
    llm = path_llm(CHILDREN, VALUES)
    tot = TreeOfThoughts(
        llm=llm, task=PathTask(), breadth=2, steps=2, n_evaluate_sample=3, pipeline=False
    )
    result = tot.invoke({"input": "go"})
    # level 0: 1 generation prompt, 4 evaluation prompts x 3 samples;
    # level 1: 2 generation prompts (both beams together), 4 evaluation prompts x 3
    assert llm.batches == [1, 12, 2, 12]
    assert result["stats"]["model_submissions"] == 4
    assert result["stats"]["calls"] == 1 + 4 + 2 + 4
    assert result["stats"]["completions"] == 1 + 12 + 2 + 12
    assert [(p["level"], p["phase"]) for p in result["stats"]["phases"]] == [
        (0, "generate"),
        (0, "evaluate"),
        (1, "generate"),
        (1, "evaluate"),
    ]


def test_dfs_backtracks_when_children_fall_below_the_threshold() -> None:
    children = {"/": "a\nb", "/a": "p\nq", "/b": "r\ns*"}
    values = {"/a": 8, "/b": 6, "/a/p": 2, "/a/q": 1, "/b/r": 3, "/b/s*": 9}
    llm = path_llm(children, values)
    tot = TreeOfThoughts(llm=llm, task=PathTask(), search="dfs", value_threshold=5, steps=3)
    result = tot.invoke({"input": "go"})
    nodes = by_state(result)
    assert [p for p in llm.prompts if p.startswith("GEN")] == ["GEN /", "GEN /a", "GEN /b"]
    assert nodes["/a"]["status"] == "kept"
    assert nodes["/a/p"]["status"] == nodes["/a/q"]["status"] == "pruned"
    assert nodes["/a/p"]["note"] == "below threshold"
    assert nodes["/b/r"]["status"] == "pruned"
    assert result["answer"] == "/b/s*"
    assert result["stopped"] == "solved"


def test_dfs_explores_best_child_first() -> None:
    children = {"/": "a\nb", "/b": "z*"}
    values = {"/a": 6, "/b": 7, "/b/z*": 8}
    llm = path_llm(children, values)
    tot = TreeOfThoughts(llm=llm, task=PathTask(), search="dfs", value_threshold=5)
    result = tot.invoke({"input": "go"})
    assert [p for p in llm.prompts if p.startswith("GEN")] == ["GEN /", "GEN /b"]
    assert by_state(result)["/a"]["status"] == "pruned"  # never reached
    assert result["answer"] == "/b/z*"


def test_max_nodes_ends_the_search_cleanly() -> None:
    llm = path_llm(CHILDREN, VALUES)
    tot = TreeOfThoughts(llm=llm, task=PathTask(), breadth=2, steps=3, max_nodes=5)
    result = tot.invoke({"input": "go"})
    assert len(result["tree"]) == 1 + 5
    assert result["stopped"] == "max_nodes"
    assert all(n["value"] is not None for n in result["tree"][1:])  # created nodes are scored
    assert result["answer"] is not None
    assert result["stats"]["nodes"] == 6


def test_dfs_respects_max_nodes() -> None:
    children = {"/": "a\nb", "/a": "p\nq", "/b": "r"}
    values = {"/a": 8, "/b": 6, "/a/p": 2, "/a/q": 1, "/b/r": 9}
    tot = TreeOfThoughts(
        llm=path_llm(children, values),
        task=PathTask(),
        search="dfs",
        value_threshold=5,
        max_nodes=3,
    )
    result = tot.invoke({"input": "go"})
    assert len(result["tree"]) == 4
    assert result["stopped"] == "max_nodes"


def test_identical_evaluation_prompts_are_computed_once_across_the_search() -> None:
    # /a and /b share one value prompt, /b/x shares it too (a later level): one model call.
    task = PathTask(value_key={"/a": "same", "/b": "same", "/b/x": "same"})
    children = {"/": "a\nb", "/a": "x", "/b": "x"}
    values = {"same": 4, "/a/x": 1}
    llm = path_llm(children, values)
    result = TreeOfThoughts(llm=llm, task=task, breadth=2, steps=2).invoke({"input": "go"})
    assert llm.prompts.count("VAL same") == 1
    assert by_state(result)["/b/x"]["value"] == 4
    assert result["stats"]["value_cache_hits"] == 2
    assert result["stats"]["evaluation_prompts"] == 2  # "VAL same" and "VAL /a/x"


def test_repeated_candidate_state_is_scored_zero_like_the_paper() -> None:
    llm = path_llm({"/": "a\na\nb"}, {"/a": 5, "/b": 1})
    result = TreeOfThoughts(llm=llm, task=PathTask(), breadth=2, steps=1).invoke({"input": "go"})
    values = [(n["state"], n["value"], n["note"]) for n in result["tree"][1:]]
    assert values == [("/a", 5.0, ""), ("/a", 0.0, "duplicate"), ("/b", 1.0, "")]
    assert llm.prompts.count("VAL /a") == 1


def test_malformed_generation_and_evaluation_are_not_fatal() -> None:
    # "/" proposes junk only for one branch; values of /b are unparsable
    children = {"/": "a\nb\n!!! ???", "/a": "@@@", "/b": "c"}
    llm = path_llm(children, {"/a": 3})  # VAL /b -> "???" (default answer)
    result = TreeOfThoughts(llm=llm, task=PathTask(), breadth=2, steps=3).invoke({"input": "go"})
    nodes = by_state(result)
    assert nodes["/b"]["value"] == 0.0 and nodes["/b"]["note"] == "unparsable evaluation"
    assert "/a/@@@" not in nodes  # no parsable thought: no children
    assert result["stats"]["malformed_generations"] == 2  # GEN /a and GEN /b/c
    assert result["stats"]["malformed_evaluations"] >= 2  # /b and /b/c
    assert result["answer"] is not None


def test_task_parser_exception_does_not_end_the_search() -> None:
    class Boom(PathTask):
        def parse_value(self, x, state, outputs):  # type: ignore[no-untyped-def]
            raise RuntimeError("bad parser")

    llm = path_llm({"/": "a\nb"}, {})
    result = TreeOfThoughts(llm=llm, task=Boom(), steps=1).invoke({"input": "go"})
    assert [n["value"] for n in result["tree"][1:]] == [0.0, 0.0]


def test_no_children_at_the_root_gives_no_answer() -> None:
    llm = path_llm({"/": "???"}, {})
    result = TreeOfThoughts(llm=llm, task=PathTask()).invoke({"input": "go"})
    assert result["answer"] is None
    assert result["stopped"] == "no_children"
    assert result["best_path"] == [{"id": 0, "depth": 0, "thought": "", "value": None}]


def test_tree_is_json_serializable_with_every_field() -> None:
    result = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=2).invoke(
        {"input": "go"}
    )
    again = json.loads(json.dumps(result))
    assert again["tree"] == result["tree"]
    node = result["tree"][1]
    assert set(node) == {
        "id",
        "parent",
        "depth",
        "thought",
        "state",
        "value",
        "status",
        "final",
        "note",
    }
    assert {n["status"] for n in result["tree"]} == {"root", "kept", "pruned"}
    assert all(n["parent"] is None or n["parent"] < n["id"] for n in result["tree"])


def test_mermaid_draws_every_node_and_the_best_path() -> None:
    result = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=2).invoke(
        {"input": "go"}
    )
    chart = tree_to_mermaid(result)
    assert chart.splitlines()[3] == "flowchart TD"
    for node in result["tree"]:
        assert f"    n{node['id']}[" in chart
    best = [f"n{step['id']}" for step in result["best_path"]]
    assert f"    {best[0]} ==> {best[1]}" in chart and f"    {best[1]} ==> {best[2]}" in chart
    assert "n0 --> n1" in chart  # /a, pruned: a thin edge
    assert f"class {','.join(sorted(best))} best" in chart


def test_mermaid_escapes_quotes_and_brackets() -> None:
    tree = [
        {"id": 0, "parent": None, "thought": "", "value": None, "status": "root"},
        {"id": 1, "parent": 0, "thought": 'say "hi" <b>', "value": 1.5, "status": "kept"},
    ]
    chart = tree_to_mermaid({"tree": tree})
    assert 'n1["say #quot;hi#quot; #lt;b#gt;<br/>v=1.5"]' in chart
    assert tree_to_mermaid(tree) == chart  # the bare node list works too


def test_unknown_task_name_lists_the_builtin_tasks() -> None:
    with pytest.raises(ValueError, match="unknown Tree-of-Thoughts task 'chess'") as info:
        TreeOfThoughts.from_task("chess", llm=path_llm({}, {}))
    for name in TASK_NAMES:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="game24"):
        TreeOfThoughts(llm=path_llm({}, {}), task="chess")


def test_sampled_selection_is_seeded_and_draws_only_candidates() -> None:
    def run(seed: int) -> list[str]:
        tot = TreeOfThoughts(
            llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=1, selection="sample", seed=seed
        )
        return [n["state"] for n in tot.invoke({"input": "go"})["tree"] if n["status"] == "kept"]

    assert run(1) == run(1)
    assert set(run(1)) <= {"/a", "/b", "/c", "/d"} and 1 <= len(run(1)) <= 2


def test_task_defaults_fill_unset_fields_and_fields_override() -> None:
    tot = TreeOfThoughts.from_task("game24", llm=path_llm({}, {}))
    cfg = tot.search_config()
    assert (cfg.breadth, cfg.steps, cfg.n_evaluate_sample) == (5, 4, 3)
    cfg = TreeOfThoughts.from_task(
        "game24", llm=path_llm({}, {}), breadth=2, max_tokens=9
    ).search_config()
    assert cfg.breadth == 2 and cfg.generate_max_tokens == cfg.evaluate_max_tokens == 9


async def test_async_run_equals_sync_and_emits_one_event_per_level() -> None:
    sync = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=2).invoke(
        {"input": "go"}
    )
    tot = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=2)
    events = []
    final = None
    async for event in tot.astream_events({"input": "go"}, version="v2"):
        if event["event"] == "on_custom_event":
            events.append(event)
        if event["event"] == "on_chain_end" and event["name"] == "TreeOfThoughts":
            final = event["data"]["output"]
    assert [e["name"] for e in events] == ["tot_level", "tot_level"]
    assert [e["data"]["level"] for e in events] == [0, 1]
    assert events[0]["data"]["kept"] == [2, 4]  # /b and /d
    assert final is not None and final["tree"] == sync["tree"]
    assert (await tot.ainvoke({"input": "go"}))["tree"] == sync["tree"]


def test_sync_custom_events_reach_callbacks() -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    seen = []

    class Handler(BaseCallbackHandler):
        def on_custom_event(self, name, data, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((name, data["level"]))

    tot = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=2)
    tot.invoke({"input": "go"}, config={"callbacks": [Handler()]})
    assert seen == [("tot_level", 0), ("tot_level", 1)]


def test_chat_model_fallback_uses_message_text_and_one_batch_per_phase() -> None:
    table = {f"GEN {k}": v for k, v in CHILDREN.items()}
    table.update({f"VAL {k}": str(v) for k, v in VALUES.items()})
    chat = ScriptedChat(respond=table_responder(table, "???"), batches=[])
    tot = TreeOfThoughts(llm=chat, task=PathTask(), steps=2, pipeline=False)
    result = tot.invoke({"input": "go"})
    assert result["answer"] == "/b/y"
    assert chat.batches == [1, 4, 2, 4]


def test_stop_strings_are_passed_and_applied_to_outputs() -> None:
    class Stopped(PathTask):
        generate_stop = ("\nEND",)  # a plain class attribute overrides the default

    llm = path_llm({"/": "a\nEND\nb"}, {"/a": 1, "/b": 2})
    result = TreeOfThoughts(llm=llm, task=Stopped(), steps=1).invoke({"input": "go"})
    assert [n["state"] for n in result["tree"][1:]] == ["/a"]
    assert llm.stops[0] == ["\nEND"]


def test_input_forms_and_errors() -> None:
    tot = TreeOfThoughts(llm=path_llm(CHILDREN, VALUES), task=PathTask(), steps=1)
    assert tot.invoke("go")["input"] == "go"  # type: ignore[arg-type]
    assert tot.invoke({"question": "go"})["input"] == "go"
    with pytest.raises(ValueError, match="'input'"):
        tot.invoke({"input": ""})
