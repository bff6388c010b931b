"""Plumbing shared by :class:`~langchain_seed.SeedLLM` and :class:`~langchain_seed.ChatSeed`.

Both classes translate LangChain calls into engine requests and engine results into LangChain
outputs; what they have in common lives here, one concept a module, so that each class stays
a thin adapter:

- :mod:`.fields`: :class:`~.fields.EngineFields`, the documented pydantic fields (model
  configuration, sampling defaults, the ``engine`` escape hatch), their validation, the
  engine they resolve to and the LangChain cache policy;
- :mod:`.options`: :class:`~.options.CallOptions`, one call's options (its overrides of the
  fields, its grammar, its tools), parsed once per call;
- :mod:`.model`: :class:`~.model.EngineModel`, one call's way to the engine: options handed
  to its runs, a batch or a ``generate`` of several inputs submitted at once;
- :mod:`.submission`: submitting a call's prompts, handing each run its requests, waiting;
- :mod:`.streaming`: one request read piece by piece;
- :mod:`.results`: engine results -> ``generation_info``, usage metadata, ``llm_output``
  (and the typed speculation counters back from a generation);
- :mod:`.messages`: messages -> text and chat-template turns;
- :mod:`.tools`, :mod:`.tool_parsing`: tool schemas, tool-call grammars and parsing;
- :mod:`.structured`: ``with_structured_output``.
"""
