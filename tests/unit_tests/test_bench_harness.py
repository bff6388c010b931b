"""The benchmark harness logic with fake methods and a fake clock: fast, no model."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pytest

from langchain_seed.bench.harness import run_workload
from langchain_seed.bench.report import markdown, write_json, write_plot
from langchain_seed.bench.results import BenchReport, RunOutput, WorkloadResult
from langchain_seed.bench.summary import (
    expected_tokens_per_verification,
    find_mismatches,
    median,
    speedup,
    summarize,
    sweep_from_results,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeBackend:
    name: str
    seconds: float
    outputs: list[Any]
    log: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        self.log.append(f"close {self.name}")


@dataclass
class FakeMethod:
    name: str
    durations: list[float]
    """Seconds of each successive timed run."""
    outputs: list[Any]
    log: list[str]
    stats: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    fail_on_open: bool = False
    opened: list[FakeBackend] = field(default_factory=list)
    runs: int = 0

    def open(self) -> FakeBackend:
        if self.fail_on_open:
            raise RuntimeError("no model here")
        backend = FakeBackend(self.name, 0.0, self.outputs, self.log, self.stats, self.info)
        self.opened.append(backend)
        return backend


@dataclass
class FakeWorkload:
    clock: FakeClock
    methods_by_name: dict[str, FakeMethod]
    name: str = "fake"
    description: str = "a fake workload"
    compare_outputs: bool = True
    reference: str = "sequential"
    baselines: tuple[str, ...] = ("sequential", "batched_ar")
    methods: tuple[str, ...] = ()
    fail_run_of: str | None = None

    def warmup(self, backend: FakeBackend) -> None:
        backend.log.append(f"warmup {backend.name}")

    def run(self, backend: FakeBackend) -> RunOutput:
        method = self.methods_by_name[backend.name]
        backend.log.append(f"run {backend.name}")
        if backend.name == self.fail_run_of:
            raise ValueError("engine exploded")
        self.clock.now += method.durations[method.runs]
        method.runs += 1
        return RunOutput(
            outputs=list(backend.outputs),
            generated_tokens=100,
            stats=dict(backend.stats),
            info=dict(backend.info),
        )


def make(specs: dict[str, tuple[list[float], list[Any]]], **kw: Any):
    clock = FakeClock()
    log: list[str] = []
    methods = {
        name: FakeMethod(name, durations, outputs, log, **kw.pop(name, {}))
        for name, (durations, outputs) in specs.items()
    }
    workload = FakeWorkload(clock, methods, **kw)
    return clock, log, methods, workload


# --------------------------------------------------------------------------- maths


def test_median_odd_even_and_empty() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5
    with pytest.raises(ValueError):
        median([])


def test_speedup_is_baseline_time_over_method_time() -> None:
    assert speedup(10.0, 2.0) == 5.0
    assert speedup(2.0, 4.0) == 0.5
    with pytest.raises(ValueError):
        speedup(1.0, 0.0)


@pytest.mark.parametrize(
    ("a", "g", "expected"),
    [(0.0, 4, 1.0), (1.0, 4, 5.0), (0.8, 4, 3.3616), (0.5, 0, 1.0), (0.5, 1, 1.5)],
)
def test_expected_tokens_per_verification_matches_the_geometric_sum(
    a: float, g: int, expected: float
) -> None:
    assert expected_tokens_per_verification(a, g) == pytest.approx(expected, abs=1e-4)
    assert expected_tokens_per_verification(a, g) == pytest.approx(sum(a**k for k in range(g + 1)))


def test_expected_tokens_rejects_out_of_range_acceptance() -> None:
    with pytest.raises(ValueError, match="acceptance"):
        expected_tokens_per_verification(1.2, 3)


def test_find_mismatches_reports_changed_missing_and_extra_items() -> None:
    assert find_mismatches([1, 2, 3], [1, 2, 3]) == []
    assert find_mismatches([1, 2, 3], [1, 9, 3]) == [1]
    assert find_mismatches([1, 2, 3], [1, 2]) == [2]
    assert find_mismatches([1, 2], [1, 2, 7, 8]) == [2, 3]
    assert find_mismatches([[1, 2]], [[1, 3]]) == [0]


# --------------------------------------------------------------------------- run_workload


def test_medians_and_ratios_to_sequential_and_batched_ar() -> None:
    clock, _, methods, workload = make(
        {
            "sequential": ([10.0, 12.0, 11.0], ["a", "b"]),
            "batched_ar": ([4.0, 3.0, 5.0], ["a", "b"]),
            "ours": ([2.0, 1.0, 2.0], ["a", "b"]),
        }
    )
    result = run_workload(workload, list(methods.values()), repeats=3, clock=clock)
    seq, ar, ours = (result.summary(m) for m in ("sequential", "batched_ar", "ours"))
    assert seq and ar and ours
    assert seq.wall_seconds == 11.0
    assert ar.wall_seconds == 4.0
    assert ours.wall_seconds == 2.0
    assert sorted(ours.wall_all) == [1.0, 2.0, 2.0]
    assert ours.speedup["sequential"] == pytest.approx(5.5)
    assert ours.speedup["batched_ar"] == pytest.approx(2.0)
    assert ar.speedup["sequential"] == pytest.approx(2.75)
    assert seq.speedup["sequential"] == 1.0
    assert ours.tokens_per_second == pytest.approx(50.0)
    assert all(s.outputs_equal for s in (ar, ours))
    assert result.warnings == []


def test_trials_are_interleaved_with_rotated_order_after_one_warmup_each() -> None:
    clock, log, methods, workload = make(
        {
            "sequential": ([1.0] * 3, ["x"]),
            "hf_batched": ([1.0] * 3, ["x"]),
            "ours": ([1.0] * 3, ["x"]),
        }
    )
    run_workload(workload, list(methods.values()), repeats=3, clock=clock)
    runs = [entry.split()[1] for entry in log if entry.startswith("run")]
    warmups = [entry.split()[1] for entry in log if entry.startswith("warmup")]
    assert warmups == ["sequential", "hf_batched", "ours"]
    assert runs == [
        "sequential", "hf_batched", "ours",
        "hf_batched", "ours", "sequential",
        "ours", "sequential", "hf_batched",
    ]  # fmt: skip


def test_every_trial_gets_a_fresh_backend_that_is_closed() -> None:
    clock, _, methods, workload = make({"sequential": ([1.0, 1.0], ["x"])})
    run_workload(workload, list(methods.values()), repeats=2, clock=clock)
    opened = methods["sequential"].opened
    assert len(opened) == 3  # warm-up + 2 trials
    assert len({id(b) for b in opened}) == 3
    assert all(b.closed for b in opened)


def test_warmup_is_not_timed() -> None:
    clock, _, methods, workload = make({"sequential": ([5.0], ["x"])})

    def slow_warmup(backend: FakeBackend) -> None:
        clock.now += 1000.0

    workload.warmup = slow_warmup  # type: ignore[method-assign]
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    assert result.summary("sequential").wall_seconds == 5.0  # type: ignore[union-attr]


def test_output_mismatch_is_detected_and_reported_loudly() -> None:
    clock, _, methods, workload = make(
        {
            "sequential": ([2.0], ["a", "b", "c"]),
            "ours": ([1.0], ["a", "B", "c"]),
            "batched_ar": ([1.5], ["a", "b", "c"]),
        }
    )
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    ours = result.summary("ours")
    assert ours is not None
    assert ours.outputs_equal is False
    assert ours.mismatches == [1]
    assert result.summary("batched_ar").outputs_equal is True  # type: ignore[union-attr]
    assert any("MISMATCH" in w and "ours" in w for w in result.warnings)
    assert "**NO** (1)" in markdown(BenchReport(workloads=[result]))
    assert "MISMATCH" in markdown(BenchReport(workloads=[result]))


def test_mismatch_in_a_later_repeat_is_caught() -> None:
    clock, _, methods, workload = make(
        {"sequential": ([1.0, 1.0], ["a"]), "ours": ([1.0, 1.0], ["a"])}
    )
    original_run = workload.run

    def flaky(backend: FakeBackend) -> RunOutput:
        out = original_run(backend)
        if backend.name == "ours" and methods["ours"].runs == 2:
            out.outputs = ["z"]
        return out

    workload.run = flaky  # type: ignore[method-assign]
    result = run_workload(workload, list(methods.values()), repeats=2, clock=clock)
    assert result.summary("ours").outputs_equal is False  # type: ignore[union-attr]


def test_outputs_not_compared_when_workload_samples() -> None:
    clock, _, methods, workload = make(
        {"sequential": ([1.0], ["a"]), "ours": ([1.0], ["different"])}, compare_outputs=False
    )
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    assert result.summary("ours").outputs_equal is None  # type: ignore[union-attr]
    assert result.warnings == []


def test_failing_method_is_reported_and_the_others_still_run() -> None:
    clock, _, methods, workload = make(
        {
            "sequential": ([3.0, 3.0], ["a"]),
            "seed_fcfs": ([1.0, 1.0], ["a"]),
            "ours": ([1.0, 1.0], ["a"]),
        },
        fail_run_of="seed_fcfs",
    )
    methods["ours"].fail_on_open = True
    result = run_workload(workload, list(methods.values()), repeats=2, clock=clock)
    assert result.summary("sequential").trials == 2  # type: ignore[union-attr]
    for name, message in (("seed_fcfs", "engine exploded"), ("ours", "no model here")):
        summary = result.summary(name)
        assert summary is not None and summary.error is not None
        assert message in summary.error
        assert math.isnan(summary.wall_seconds)
    assert sum("FAILED" in w for w in result.warnings) == 2
    assert "FAILED" in markdown(BenchReport(workloads=[result]))


def test_run_workload_rejects_duplicate_names_and_zero_repeats() -> None:
    clock, _, methods, workload = make({"sequential": ([1.0], ["a"])})
    with pytest.raises(ValueError, match="unique"):
        run_workload(workload, [methods["sequential"]] * 2, clock=clock)
    with pytest.raises(ValueError, match="repeats"):
        run_workload(workload, [methods["sequential"]], repeats=0, clock=clock)


def test_stats_are_medians_and_bound_only_for_speculating_methods() -> None:
    clock, _, methods, workload = make(
        {"sequential": ([2.0, 2.0, 2.0], ["a"]), "ours": ([1.0, 1.0, 1.0], ["a"])},
        ours={
            "stats": {"acceptance_rate": 0.5, "mean_accepted_length": 1.4, "mean_draft_length": 1},
            "info": {"gamma": 4, "speculates": True},
        },
        sequential={"stats": {"acceptance_rate": None, "mean_accepted_length": 1.0}},
    )
    result = run_workload(workload, list(methods.values()), repeats=3, clock=clock)
    ours, seq = result.summary("ours"), result.summary("sequential")
    assert ours and seq
    assert ours.stats["mean_accepted_length"] == 1.4
    assert ours.bound == pytest.approx(1.9375)  # 1 + .5 + .25 + .125 + .0625
    assert ours.bound_mean_draft == pytest.approx(1.5)
    assert seq.bound is None
    assert seq.stats["acceptance_rate"] is None


def test_summarize_without_reference_warns_instead_of_passing_silently() -> None:
    summaries, warnings = summarize({}, {}, compare_outputs=True)
    assert summaries == []
    assert any("not compared" in w for w in warnings)


# --------------------------------------------------------------------------- sweeps and output


def _result(walls: dict[str, float], name: str = "w") -> WorkloadResult:
    clock, _, methods, workload = make({m: ([t], ["a"]) for m, t in walls.items()}, name=name)
    return run_workload(workload, list(methods.values()), repeats=1, warmup=False, clock=clock)


def test_sweep_collects_speedups_over_sequential_per_point() -> None:
    points = [
        (1.0, _result({"sequential": 2.0, "ours": 2.0, "seed_fcfs": 4.0})),
        (4.0, _result({"sequential": 8.0, "ours": 2.0, "seed_fcfs": 4.0})),
    ]
    sweep = sweep_from_results("concurrency", "calls", points, ["ours", "seed_fcfs"])
    assert sweep.xs == [1.0, 4.0]
    assert sweep.speedup["ours"] == [1.0, 4.0]
    assert sweep.speedup["seed_fcfs"] == [0.5, 2.0]
    assert sweep.wall_seconds["sequential"] == [2.0, 8.0]


def test_sweep_marks_missing_methods_as_none() -> None:
    sweep = sweep_from_results("gamma", "g", [(0.0, _result({"sequential": 2.0}))], ["ours"])
    assert sweep.speedup["ours"] == [None]


def test_report_markdown_json_and_plot_are_written(tmp_path: Any) -> None:
    batch = _result({"sequential": 10.0, "batched_ar": 4.0, "ours": 2.0}, name="batch")
    sc = _result({"sequential": 9.0, "ours": 3.0}, name="sc-n8")
    sweep = sweep_from_results(
        "concurrency",
        "concurrent calls",
        [(1.0, batch), (2.0, batch)],
        ["ours"],
    )
    report = BenchReport(workloads=[batch, sc], sweeps=[sweep], meta={"command": "x --quick"})
    text = markdown(report)
    assert "### batch" in text and "### sc-n8" in text and "### sweep: concurrency" in text
    ours_row = next(line for line in text.splitlines() if line.startswith("| ours | 2.00"))
    # spread, x sequential, x batched_ar, prompt tok, gen tok
    assert "| 2.00 | - | 5.00 | 2.00 | - | 100 |" in ours_row
    assert "`x --quick`" in text

    json_path = write_json(report, tmp_path / "out" / "bench.json")
    data = json.loads(json_path.read_text())
    ours = next(m for m in data["workloads"][0]["methods"] if m["method"] == "ours")
    assert ours["speedup"] == {"sequential": 5.0, "batched_ar": 2.0}
    assert data["sweeps"][0]["speedup"]["ours"] == [5.0, 5.0]

    png = write_plot(report, tmp_path / "out" / "bench.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000


def test_json_writes_failed_method_wall_as_null(tmp_path: Any) -> None:
    clock, _, methods, workload = make({"sequential": ([1.0], ["a"]), "ours": ([1.0], ["a"])})
    methods["ours"].fail_on_open = True
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    path = write_json(BenchReport(workloads=[result]), tmp_path / "b.json")
    text = path.read_text()
    data = json.loads(text)
    ours = next(m for m in data["workloads"][0]["methods"] if m["method"] == "ours")
    assert ours["error"] and "no model here" in ours["error"]
    assert ours["wall_seconds"] is None
    assert "NaN" not in text
    assert data["warnings"]


# --------------------------------------------------------------------------- workloads and CLI


def test_chat_prompt_template_wraps_the_variable_and_escapes_braces() -> None:
    from tiny_models import byte_tokenizer

    from langchain_seed.bench.workloads import chat_prompt_template, chat_text

    tok = byte_tokenizer()
    tok.chat_template = "{{ '{x}' }}" + tok.chat_template
    template = chat_prompt_template(tok, "{question}\nThink.")
    assert template.format(question="What is 1 + {1}?") == chat_text(
        tok, "What is 1 + {1}?\nThink."
    )
    assert template.count("{question}") == 1


def test_first_steps_are_exact_and_distinct() -> None:
    from langchain_seed.bench.workloads import first_steps

    steps = first_steps("4 5 6 10")
    assert "10 - 4 = 6 (left: 5 6 6)\n" in steps
    assert "10 / 5 = 2 (left: 2 4 6)\n" in steps
    assert not any(s.startswith("4 - 5") or s.startswith("4 / 5") for s in steps)
    assert len(steps) == len(set(steps))


def test_tree_signature_ignores_notes_but_not_thoughts_or_values() -> None:
    from langchain_seed.bench.workloads import tree_signature

    base = [{"id": 0, "parent": None, "thought": "", "value": None, "status": "root", "note": ""}]
    child = {"id": 1, "parent": 0, "thought": "4+5", "value": 1.0, "status": "kept", "note": "a"}
    same = tree_signature(base + [child])
    assert tree_signature(base + [{**child, "note": "cached"}]) == same
    assert tree_signature(base + [{**child, "value": 20.0}]) != same
    assert tree_signature(base + [{**child, "thought": "4*5"}]) != same


def test_cli_registers_bench_with_its_options() -> None:
    from langchain_seed.cli import build_parser

    args = build_parser().parse_args(
        ["bench", "--quick", "--workloads", "batch", "--methods", "sequential", "ours",
         "--json", "o.json", "--plot", "o.png", "--sweep", "--repeats", "2"]
    )  # fmt: skip
    assert args.quick and args.sweep and args.repeats == 2
    assert args.methods == ["sequential", "ours"] and args.json_path == "o.json"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--methods", "nonsense"])


def test_cli_fails_on_engine_mismatch_or_failure_but_not_on_a_baseline_mismatch() -> None:
    from langchain_seed.cli.bench import _failed

    clock, _, methods, workload = make(
        {"sequential": ([1.0], ["a"]), "hf_batched": ([1.0], ["b"]), "ours": ([1.0], ["a"])},
        ours={"info": {"kind": "engine"}},
        hf_batched={"info": {"kind": "transformers"}},
    )
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    assert result.warnings  # the baseline's mismatch is still reported
    assert not _failed(BenchReport(workloads=[result]))
    methods2 = make(
        {"sequential": ([1.0], ["a"]), "ours": ([1.0], ["z"])}, ours={"info": {"kind": "engine"}}
    )
    clock2, _, ms2, wl2 = methods2
    bad = run_workload(wl2, list(ms2.values()), repeats=1, clock=clock2)
    assert _failed(BenchReport(workloads=[bad]))


def test_repeated_prompts_are_recognised_as_samples_of_one_prompt() -> None:
    from langchain_seed.bench.hf import _sample_runs

    assert _sample_runs(["a", "a", "b", "b"]) == (["a", "b"], 2)
    assert _sample_runs(["a", "b"]) == (["a", "b"], 1)
    assert _sample_runs(["a", "a", "b"]) == (["a", "a", "b"], 1)
    assert _sample_runs(["a", "a", "a"]) == (["a"], 3)


def test_budgeted_task_gives_each_phase_its_own_token_budget() -> None:
    from langchain_seed.bench.workloads import budgeted_task

    @dataclass
    class Task:
        steps: int = 4
        generate_max_tokens: int = 96
        evaluate_max_tokens: int = 48

        def generate_prompt(self, x: str, state: str, step: int) -> str:
            return f"propose {x} {state} {self.steps}"

        def value_prompt(self, x: str, state: str, step: int) -> str:
            return f"value {x} {state}"

        def generate_limits(self, step: int) -> tuple[int, None]:
            return (self.generate_max_tokens + step, None)

    original = Task()
    task, budget = budgeted_task(original, None, steps=2)
    assert original.steps == 4 and task.steps == 2
    assert budget(task.generate_prompt("x", "s", 1)) == 97
    assert task.generate_prompt("x", "", 0).endswith(" 2")
    assert budget(task.value_prompt("x", "s", 1)) == 48
    assert budget("never seen") is None
    _, fixed = budgeted_task(Task(), 10)
    assert fixed("anything") == 10


def test_transformers_completion_cuts_at_stop_but_counts_the_stop_tokens() -> None:
    from tiny_models import byte_tokenizer

    from langchain_seed.bench.hf import HFBackend
    from langchain_seed.engine.config import SamplingParams

    tok = byte_tokenizer()
    backend = object.__new__(HFBackend)
    backend._tokenizer = tok
    backend._eos = {tok.eos_token_id}
    ids = tok("abc STOP def")["input_ids"] + [tok.eos_token_id, tok.eos_token_id]
    done = backend._completion(ids, SamplingParams(stop=("STOP",)), prompt_len=3)
    assert done.text == "abc " and done.finish_reason == "stop"
    assert done.token_ids == tok("abc ")["input_ids"]
    assert done.generated == len(tok("abc STOP")["input_ids"])
    plain = backend._completion(ids, SamplingParams(), prompt_len=3)
    assert plain.text == "abc STOP def" and plain.generated == len(ids) - 1


def test_goal_lines_say_met_missed_or_not_measured() -> None:
    from langchain_seed.bench.script import Goal

    clock, _, methods, workload = make(
        {"ours_nocache": ([4.0], ["a"]), "ours": ([1.0], ["a"])},
        name="prefix",
        reference="ours_nocache",
        baselines=("ours_nocache",),
        ours={"stats": {"prefix_hit_rate": 0.95, "prefill_seconds": 0.5}},
        ours_nocache={"stats": {"prefix_hit_rate": 0.0, "prefill_seconds": 2.0}},
    )
    result = run_workload(workload, list(methods.values()), repeats=1, clock=clock)
    report = BenchReport(workloads=[result])
    speed = Goal("prefix", "ours", "speedup", at_least=5.0, other="ours_nocache")
    assert speed.measure(report) == 4.0 and speed.line(report).endswith("MISSED")
    hit = Goal("prefix", "ours", "stat", at_least=0.9, stat="prefix_hit_rate")
    assert hit.line(report).endswith("MET")
    ratio = Goal("prefix", "ours", "stat_ratio", at_least=4.0, other="ours_nocache",
                 stat="prefill_seconds")  # fmt: skip
    assert ratio.measure(report) == 4.0 and ratio.line(report).endswith("MET")
    missing = Goal("sc-n16", "ours", "speedup", at_least=8.0, other="sequential")
    assert missing.line(report).endswith("not measured")
    share = Goal("prefix", "ours", "stat", at_most=0.1, stat="prefix_hit_rate")
    assert share.line(report).endswith("MISSED")


def test_prefix_workload_prompts_are_distinct_and_share_the_few_shot_header(
    shared_data_dir: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from langchain_seed.bench.workloads import PrefixWorkload

    monkeypatch.setenv("SEED_DATA_DIR", str(shared_data_dir))
    texts = PrefixWorkload().texts(40)
    assert len(texts) == 40 and len(set(texts)) == 40
    header = os.path.commonprefix(texts)
    assert len(header) > 0.8 * min(len(t) for t in texts)


def test_table_shows_the_spread_of_repeats() -> None:
    clock, _, methods, workload = make({"sequential": ([10.0, 12.0, 8.0], ["a"])})
    result = run_workload(workload, list(methods.values()), repeats=3, clock=clock)
    row = next(
        r for r in markdown(BenchReport(workloads=[result])).splitlines() if "| sequential" in r
    )
    assert row.startswith("| sequential | 10.00 | 40% |")
