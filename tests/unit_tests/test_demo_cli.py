"""``langchain-seed demo`` end to end on a tiny random model: three runs and a summary."""

from __future__ import annotations

from langchain_seed.cli import main


def test_demo_runs_chain_tot_and_sc_and_summarises(tiny_pair, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps table cells on a narrow console
    assert main(["demo", "--quick", "-n", "2", "--model", str(tiny_pair.target_path)]) == 0
    out = capsys.readouterr().out
    assert "loaded in" in out
    assert out.count("Q: ") == 3 and out.count("A: ") == 3  # the chain's three answers
    summary = out[out.index("speed and acceptance") :]
    for row in ("LCEL batch", "ToT game24", "SC (n=2)"):
        assert row in summary
    assert "tokens/s" in summary
