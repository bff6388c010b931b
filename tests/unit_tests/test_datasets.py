"""The one datasets module: folder resolution, loaders, answers."""

from __future__ import annotations

import json

import pytest

from langchain_seed import datasets


@pytest.fixture
def folder(tmp_path, monkeypatch):
    rows = [{"question": f"q{i}", "answer": f"work\n#### {i},000"} for i in range(5)]
    (tmp_path / datasets.GSM8K_FILE).write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / datasets.GAME24_FILE).write_text("Rank,Puzzles\n1,1 1 4 6\n2,1 1 11 11\n")
    (tmp_path / datasets.CREATIVE_WRITING_FILE).write_text("a. b. c. d.\n\ne. f. g. h.\n")
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path))
    return tmp_path


def test_folder_is_explicit_then_environment_then_shared(tmp_path, monkeypatch):
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path / "env"))
    assert datasets.data_dir(tmp_path / "x") == tmp_path / "x"
    assert datasets.data_dir() == tmp_path / "env"
    monkeypatch.delenv("SEED_DATA_DIR")
    assert datasets.data_dir().parts[-2:] == ("shared", "data")


def test_loaders_read_windows(folder):
    assert [r["question"] for r in datasets.gsm8k_rows(2, offset=1)] == ["q1", "q2"]
    assert len(datasets.gsm8k_rows()) == 5
    assert datasets.game24_puzzles() == ["1 1 4 6", "1 1 11 11"]
    assert datasets.creative_writing_inputs(1, offset=1) == ["e. f. g. h."]
    assert datasets.gsm8k_problem(3)["question"] == "q3"
    assert datasets.game24_puzzle(1) == "1 1 11 11"
    assert datasets.gsm8k_gold(datasets.gsm8k_problem(4)["answer"]) == "4000"


def test_bad_index_and_window_are_clear_errors(folder):
    with pytest.raises(IndexError, match=r"index 9 is out of range for game24.csv \(0..1\)"):
        datasets.game24_puzzle(9)
    with pytest.raises(ValueError, match="count and offset must be >= 0"):
        datasets.gsm8k_rows(2, offset=-1)


def test_missing_folder_or_file_says_how_to_fix_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="SEED_DATA_DIR.*gsm8k_test_0_999.jsonl"):
        datasets.gsm8k_rows(1)
    monkeypatch.setenv("SEED_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="game24.csv is missing"):
        datasets.game24_puzzles()


@pytest.mark.parametrize(
    ("text", "want"), [(" 72 ", "72"), ("1,000.50", "1000.5"), ("$5", "5"), ("abc", None)]
)
def test_gsm8k_gold_is_the_canonical_final_number(text, want):
    assert datasets.gsm8k_gold(f"steps #### {text}") == want
