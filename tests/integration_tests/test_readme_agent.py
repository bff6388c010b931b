"""The README's agent example runs as written and prints what the README says it prints."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("langchain.agents")
pytest.importorskip("xgrammar")


README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_readme_create_agent_example_prints_what_the_readme_shows():
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    [code] = [b for b in blocks if "create_agent(" in b]
    after = README[README.index(code) + len(code) :]
    shown = re.search(r"this prints.*?\n```\n(.*?)```", after, flags=re.S).group(1)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == shown
