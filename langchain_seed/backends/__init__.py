"""Engines besides the embedded one, behind the same ``EngineClient`` interface.

- :mod:`langchain_seed.backends.vllm`: :class:`~langchain_seed.backends.vllm.VLLMEngine`,
  vLLM's in-process async engine (one GPU, tensor / pipeline parallel, Ray clusters),
  chosen with ``SeedLLM(backend="vllm")`` / ``ChatSeed(backend="vllm")``.
"""

BACKENDS = ("embedded", "vllm")
"""Values of the ``backend`` field of ``SeedLLM`` and ``ChatSeed``."""
