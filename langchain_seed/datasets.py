"""Reference data sets: the data folder, the GSM8K / Game of 24 / Creative Writing loaders, answers.

One module for every reader of ``../shared/data`` (tasks, the CLI, the benchmarks, the
cookbook). The folder is ``$SEED_DATA_DIR`` when set, else ``../shared/data`` next to the
project root (or next to the working directory). Files are read once per process and path,
so timed benchmark runs do not pay for reading them.

Example:
    .. code-block:: python

        from langchain_seed.datasets import gsm8k_gold, gsm8k_rows

        for row in gsm8k_rows(3):
            print(row["question"][:40], gsm8k_gold(row["answer"]))
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]
GSM8K_FILE = "gsm8k_test_0_999.jsonl"
GAME24_FILE = "game24.csv"
CREATIVE_WRITING_FILE = "creative_writing.txt"


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The data folder: ``explicit``, else ``$SEED_DATA_DIR``, else ``../shared/data``.

    ``../shared/data`` is looked for next to the project root, then next to the working
    directory; the first that exists wins (the project root's when neither does).
    """
    if explicit:
        return Path(explicit)
    env = os.environ.get("SEED_DATA_DIR")
    if env:
        return Path(env)
    candidates = [PROJECT_ROOT.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def data_file(name: str, folder: str | os.PathLike[str] | None = None) -> Path:
    """The path of one data file.

    Args:
        name: file name inside the data folder.
        folder: the data folder (default: :func:`data_dir`).

    Raises:
        FileNotFoundError: the folder or the file is missing (the message says how to fix it).
    """
    root = data_dir(folder)
    if not root.is_dir():
        raise FileNotFoundError(
            f"data folder {root} does not exist; set SEED_DATA_DIR to the folder holding "
            f"{name} (see ../shared/data/README.md)"
        )
    path = root / name
    if not path.is_file():
        raise FileNotFoundError(
            f"{name} is missing from the data folder {root}; set SEED_DATA_DIR to the folder "
            "holding it"
        )
    return path


@functools.lru_cache(maxsize=16)
def _jsonl(path: Path) -> tuple[dict[str, str], ...]:
    with path.open(encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


@functools.lru_cache(maxsize=16)
def _puzzles(path: Path) -> tuple[str, ...]:
    with path.open(newline="", encoding="utf-8") as f:
        return tuple(row["Puzzles"].strip() for row in csv.DictReader(f))


@functools.lru_cache(maxsize=16)
def _lines(path: Path) -> tuple[str, ...]:
    with path.open(encoding="utf-8") as f:
        return tuple(line.strip() for line in f if line.strip())


def _window(rows: tuple[object, ...], count: int | None, offset: int) -> slice:
    if offset < 0 or (count is not None and count < 0):
        raise ValueError(f"count and offset must be >= 0, got count={count}, offset={offset}")
    return slice(offset, None if count is None else offset + count)


def gsm8k_rows(
    count: int | None = None, offset: int = 0, folder: str | os.PathLike[str] | None = None
) -> list[dict[str, str]]:
    """``count`` GSM8K test problems after ``offset``: ``question`` and ``answer`` (``#### n``)."""
    rows = _jsonl(data_file(GSM8K_FILE, folder))
    return [dict(r) for r in rows[_window(rows, count, offset)]]


def game24_puzzles(
    count: int | None = None, offset: int = 0, folder: str | os.PathLike[str] | None = None
) -> list[str]:
    """``count`` Game of 24 puzzles (column ``Puzzles`` of ``game24.csv``) after ``offset``."""
    rows = _puzzles(data_file(GAME24_FILE, folder))
    return list(rows[_window(rows, count, offset)])


def creative_writing_inputs(
    count: int | None = None, offset: int = 0, folder: str | os.PathLike[str] | None = None
) -> list[str]:
    """``count`` Creative Writing inputs (four sentences on one line each) after ``offset``."""
    rows = _lines(data_file(CREATIVE_WRITING_FILE, folder))
    return list(rows[_window(rows, count, offset)])


def _pick(rows: list[object], index: int, name: str) -> object:
    if not 0 <= index < len(rows):
        raise IndexError(f"index {index} is out of range for {name} (0..{len(rows) - 1})")
    return rows[index]


def gsm8k_problem(index: int) -> dict[str, str]:
    """The ``index``-th GSM8K problem: ``question`` and ``answer``."""
    return dict(_pick(list(gsm8k_rows()), index, GSM8K_FILE))  # type: ignore[call-overload]


def game24_puzzle(index: int) -> str:
    """The ``index``-th Game of 24 puzzle."""
    return str(_pick(list(game24_puzzles()), index, GAME24_FILE))


def creative_writing_input(index: int) -> str:
    """The ``index``-th Creative Writing input."""
    return str(_pick(list(creative_writing_inputs()), index, CREATIVE_WRITING_FILE))


def normalize_number(text: str) -> str | None:
    """Canonical form of a number written in text, or ``None`` if it is not one.

    Drops ``$``, thousands separators, spaces, a trailing period or ``%`` and a ``+`` sign;
    ``"1,000"`` -> ``"1000"``, ``"3.0"`` -> ``"3"``, ``"2.50"`` -> ``"2.5"``, ``"-0"`` -> ``"0"``.

    Args:
        text: the number as written.

    Returns:
        The canonical decimal string, or ``None`` when ``text`` is not a plain number
        (fractions and words are not).
    """
    cleaned = text.strip().rstrip(".%").replace("$", "").replace(",", "").replace(" ", "")
    cleaned = cleaned.lstrip("+")
    if not re.fullmatch(r"-?\d+(?:\.\d+)?", cleaned):
        return None
    if "." in cleaned:
        cleaned = cleaned.rstrip("0").rstrip(".")
    if cleaned in ("-0", ""):
        cleaned = "0"
    negative = cleaned.startswith("-")
    digits = cleaned.lstrip("-")
    whole, _, frac = digits.partition(".")
    whole = whole.lstrip("0") or "0"
    value = whole + ("." + frac if frac else "")
    return "-" + value if negative and value != "0" else value


def gsm8k_gold(answer: str) -> str | None:
    """The final number of a GSM8K worked solution (after ``####``), canonical."""
    return normalize_number(answer.split("####")[-1])
