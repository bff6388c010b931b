"""Model execution: forwards over the batch's rows, and the KV memory they read and write.

- :mod:`.runner`: :class:`~.runner.ModelRunner` runs forwards and returns logits (nothing
  else: verification lives in :mod:`langchain_seed.engine.speculation.verification`);
- :mod:`.llama`, :mod:`.kernels` (``csrc/``): the engine's own forward for the Llama family
  on CPU kernels; the transformers forward is the fallback for other models;
- :mod:`.kv_cache`: the budgeted KV pool (:class:`~.kv_cache.SlotCache`);
- :mod:`.packing`: packed attention for the transformers forward (ragged rows, real
  tokens only);
- :mod:`.prefix_cache`: the radix tree of reusable KV spans;
- :mod:`.loading`: models and tokenizers (the embedded default, GGUF, the hub).
"""
