"""``langchain-seed tot`` end to end on a tiny random model (plumbing, files, errors)."""

from __future__ import annotations

import json

from langchain_seed.cli import main


def test_tot_cli_writes_json_and_mermaid(tiny_pair, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    out_json, out_md = tmp_path / "tot.json", tmp_path / "tot.md"
    argv = [
        "tot",
        "--task",
        "game24",
        "--puzzle",
        "4 5 6 10",
        "--model",
        str(tiny_pair.target_path),
    ]
    argv += ["--max-tokens", "4", "--breadth", "1", "--steps", "1", "--temperature", "0"]
    assert main([*argv, "--json", str(out_json), "--mermaid", str(out_md)]) == 0
    printed = capsys.readouterr().out
    assert "answer: None  solved: False" in printed and "calls: 1" in printed
    result = json.loads(out_json.read_text())
    assert result["input"] == "4 5 6 10" and result["stats"]["model_submissions"] == 1
    assert result["stats"]["generated_tokens"] > 0
    assert out_md.read_text().startswith("```mermaid\n---\ntitle: 4 5 6 10\n---\nflowchart TD\n")


def test_tot_cli_index_out_of_range_is_an_error(shared_data_dir, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["tot", "--task", "game24", "--index", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_tot_cli_rich_tree_marks_the_best_path() -> None:
    from rich.console import Console

    from langchain_seed.cli.tot import render_tree

    result = {
        "input": "x",
        "best_path": [{"id": 0}, {"id": 2}],
        "tree": [
            {"id": 0, "parent": None, "thought": "", "value": None, "status": "root", "note": ""},
            {
                "id": 1,
                "parent": 0,
                "thought": "a [b]",
                "value": 1.0,
                "status": "pruned",
                "note": "",
            },
            {"id": 2, "parent": 0, "thought": "c", "value": 20.0, "status": "kept", "note": ""},
        ],
    }
    console = Console(record=True, width=80)
    console.print(render_tree(result))
    text = console.export_text()
    assert "#1 a [b] v=1" in text and "#2 c v=20" in text
