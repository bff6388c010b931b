"""Serving: how callers reach an engine (submission, futures, streaming, threads).

- :mod:`.client`: :class:`~.client.EngineClient`, the interface both backends (embedded
  and vLLM) implement, with the blocking / async / streaming conveniences, and the
  process-wide registry of shared engines;
- :mod:`.service`: the embedded engine's queue, futures and engine thread;
- :mod:`.compute`: the one process-wide compute thread every engine's steps run on.
"""
