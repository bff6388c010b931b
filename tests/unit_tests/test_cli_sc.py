"""``langchain-seed sc`` end to end on the tiny model (no embedded model needed)."""

from __future__ import annotations

import json

import pytest

from langchain_seed.cli import main


def test_sc_question_writes_json_with_votes_and_engine_stats(tiny_pair, tmp_path, capsys):
    out = tmp_path / "sc.json"
    code = main(
        [
            "sc",
            "--question",
            "2 + 2 = ?",
            "-n",
            "3",
            "--max-tokens",
            "6",
            "--model",
            str(tiny_pair.target_path),
            "--seed",
            "1",
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["n"] == 3
    (question,) = report["questions"]
    assert question["gold"] is None and question["correct"] is None
    assert len(question["samples"]) == 3
    summary = report["summary"]
    assert summary["accuracy"] is None and summary["samples"] == 3
    assert 3 <= summary["generated_tokens"] <= 18
    assert report["engine"]["spec"]["generated_tokens"] == summary["generated_tokens"]
    assert "accuracy n/a" in capsys.readouterr().out


def test_sc_gsm8k_grades_against_gold_answers(tiny_pair, tmp_path, shared_data_dir):
    out = tmp_path / "gsm.json"
    code = main(
        [
            "sc",
            "--gsm8k",
            "2",
            "-n",
            "2",
            "--max-tokens",
            "4",
            "--model",
            str(tiny_pair.target_path),
            "--data-dir",
            str(shared_data_dir),
            "--no-progress",
            "--json",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    golds = [q["gold"] for q in report["questions"]]
    assert golds == ["18", "3"]  # the first two GSM8K test answers
    assert all(isinstance(q["correct"], bool) for q in report["questions"])
    assert report["summary"]["accuracy"] is not None


def test_sc_gsm8k_without_data_is_a_clear_error(tmp_path, capsys):
    code = main(["sc", "--gsm8k", "2", "--data-dir", str(tmp_path / "missing")])
    assert code == 2
    err = capsys.readouterr().err
    assert "gsm8k_test_0_999.jsonl" in err and "SEED_DATA_DIR" in err


def test_sc_needs_a_question_or_gsm8k():
    with pytest.raises(SystemExit):
        main(["sc", "-n", "2"])
