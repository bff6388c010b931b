"""Text: from token ids to text and back, and the grammars that constrain what is generated.

- :mod:`.detokenizer`: incremental detokenization, stop strings, token bytes;
- :mod:`.grammar`: grammar-constrained decoding (xgrammar): compiled grammars, per-row
  matchers and token bitmasks.
"""
