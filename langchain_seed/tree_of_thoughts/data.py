"""Reference data sets of the built-in tasks, read from ``$SEED_DATA_DIR`` or ``../shared/data``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """``$SEED_DATA_DIR``, else ``../shared/data`` next to the project root."""
    env = os.environ.get("SEED_DATA_DIR")
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data"


def data_file(name: str) -> Path:
    """The path of one data file.

    Args:
        name: file name inside the data folder.

    Returns:
        The path.

    Raises:
        FileNotFoundError: the folder or the file is missing (the message says how to fix it).
    """
    folder = data_dir()
    if not folder.is_dir():
        raise FileNotFoundError(
            f"data folder {folder} does not exist; set SEED_DATA_DIR to the folder holding "
            f"{name} (see ../shared/data/README.md)"
        )
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing from the data folder {folder}")
    return path


def _pick(rows: list, index: int, name: str):  # type: ignore[no-untyped-def]
    if not 0 <= index < len(rows):
        raise IndexError(f"index {index} is out of range for {name} (0..{len(rows) - 1})")
    return rows[index]


def game24_puzzle(index: int) -> str:
    """The ``index``-th Game of 24 puzzle (column ``Puzzles`` of ``game24.csv``)."""
    with data_file("game24.csv").open(newline="") as f:
        rows = [row["Puzzles"].strip() for row in csv.DictReader(f)]
    return str(_pick(rows, index, "game24.csv"))


def gsm8k_problem(index: int) -> dict[str, str]:
    """The ``index``-th GSM8K problem: ``question`` and ``answer`` (ending in ``#### n``)."""
    with data_file("gsm8k_test_0_999.jsonl").open() as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return dict(_pick(rows, index, "gsm8k_test_0_999.jsonl"))


def creative_writing_input(index: int) -> str:
    """The ``index``-th Creative Writing input: four sentences on one line."""
    with data_file("creative_writing.txt").open() as f:
        rows = [line.strip() for line in f if line.strip()]
    return str(_pick(rows, index, "creative_writing.txt"))
