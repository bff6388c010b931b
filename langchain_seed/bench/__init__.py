"""The side-by-side benchmark harness behind ``langchain-seed bench`` (``docs/benchmarks.md``).

- :mod:`~langchain_seed.bench.harness`: what a method and a workload are; interleaved trials.
- :mod:`~langchain_seed.bench.results`: plain-data results (trials, summaries, sweeps, report).
- :mod:`~langchain_seed.bench.summary`: medians, speedups, mismatch detection, the bound.
- :mod:`~langchain_seed.bench.memory`: peak resident memory of one trial.
- :mod:`~langchain_seed.bench.methods`: ``sequential``, ``hf_batched``, ``hf_assisted``,
  ``seed_fcfs``, ``batched_ar``, ``ours``.
- :mod:`~langchain_seed.bench.workloads`: ``batch``, ``sc``, ``tot-game24``, ``tot-gsm8k``,
  ``prefix``, one module each.
- :mod:`~langchain_seed.bench.report`: Markdown, JSON, PNG.
- :mod:`~langchain_seed.bench.suite`: one run of everything, with the scaling sweeps.
- :mod:`~langchain_seed.bench.script`: arguments and goal checks of ``benchmarks/*.py``.
- :mod:`~langchain_seed.bench.hf`: the transformers baselines and ``TransformersLLM``.
"""
