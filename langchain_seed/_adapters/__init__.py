"""Plumbing shared by :class:`~langchain_seed.SeedLLM` and :class:`~langchain_seed.ChatSeed`.

Both classes translate LangChain calls into engine requests and engine results into LangChain
outputs; what they have in common lives here, one concept a module, so that each class stays
a thin adapter:

- :mod:`.fields`: :class:`~.fields.EngineFields`, the documented pydantic fields (model
  configuration, sampling defaults, the ``engine`` escape hatch), their validation, call-time
  overrides and the cache policy;
- :mod:`.model`: :class:`~.model.EngineModel`, batches and ``generate`` submitted at once;
- :mod:`.submission`: submitting a call, batch pre-submission, waiting on the futures;
- :mod:`.streaming`: one request read piece by piece;
- :mod:`.results`: engine results -> ``generation_info``, usage metadata, ``llm_output``;
- :mod:`.messages`: messages -> text and chat-template turns.
"""
