"""Speculation: drafts, how many of them to ask for, and the lossless rules that accept them.

- :mod:`.drafters`: the drafter protocol and the ``ngram``, ``consensus``, ``model`` and
  ``grammar`` drafters (cheap proposals; they never look at the target model);
- :mod:`.draft_policy`: which draft each sequence gets and how long (adaptive gamma);
- :mod:`.sampling`: the sampler's distribution and the acceptance rules (accepted,
  recovered and bonus tokens), as tensor functions.
"""
