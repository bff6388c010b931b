"""Text: from text to token ids and back, and the grammars that constrain what is generated.

- :mod:`.tokenizer`: the tokenizer face both backends offer (prompts, chat templates and
  the tool-call format they write, token bytes), behind one lock;
- :mod:`.detokenizer`: incremental detokenization, stop strings, streamed pieces;
- :mod:`.grammar`: grammar-constrained decoding (xgrammar): compiled grammars, per-row
  matchers and token bitmasks.
"""
