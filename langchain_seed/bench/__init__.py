"""The side-by-side benchmark harness behind ``langchain-seed bench`` (DESIGN section 9).

- :mod:`~langchain_seed.bench.harness`: interleaved trials, medians, ratios, mismatch
  detection, plain-data results (no torch).
- :mod:`~langchain_seed.bench.methods`: ``sequential``, ``hf_batched``, ``hf_assisted``,
  ``seed_fcfs``, ``batched_ar``, ``ours``.
- :mod:`~langchain_seed.bench.workloads`: ``batch``, ``sc``, ``tot-game24``, ``tot-gsm8k``,
  ``prefix``.
- :mod:`~langchain_seed.bench.report`: Markdown, JSON, PNG.
- :mod:`~langchain_seed.bench.runner`: one run of everything, with the scaling sweeps.
- :mod:`~langchain_seed.bench.script`: arguments and goal checks of ``benchmarks/*.py``.
- :mod:`~langchain_seed.bench.hf`: the transformers baselines and ``TransformersLLM``.
"""
