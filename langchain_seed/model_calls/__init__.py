"""The model-call layer of the reasoning runnables (Tree of Thoughts, self-consistency).

A reasoning run is written once, as a generator: it yields a :class:`ModelCall` (every
prompt of one phase, ``n`` samples each) and is sent back the :class:`CallResult`; it
yields a :class:`Progress` event and is sent ``None``; its return value is the run's
output. :func:`drive` runs such a generator synchronously and :func:`adrive` on an event
loop, so each runnable has one body for ``invoke`` and ``ainvoke``.

- :mod:`.call`: the request shape (:class:`ModelCall`) and what comes back
  (:class:`CallResult` of :class:`Sample`, with typed counters: :class:`Totals`);
- :mod:`.drivers`: the drivers, and one call sent (pipelined follow-ups included);
- :mod:`.requests`: one call as requests to a model of each kind: one ``generate`` with
  ``n`` for an engine-backed model (the engine batches every prompt; the ``n`` samples of
  a prompt form one engine group), one ``generate`` per prompt for a model that takes
  ``n`` (an OpenAI-compatible client), one ``batch`` for any other model.
"""

from langchain_seed.model_calls.call import (
    SPEC_COUNTERS,
    CallResult,
    ModelCall,
    Progress,
    Run,
    Sample,
    Step,
    Totals,
)
from langchain_seed.model_calls.drivers import acall_model, adrive, call_model, drive
from langchain_seed.model_calls.requests import engine_backed, takes_n

__all__ = [
    "SPEC_COUNTERS",
    "CallResult",
    "ModelCall",
    "Progress",
    "Run",
    "Sample",
    "Step",
    "Totals",
    "acall_model",
    "adrive",
    "call_model",
    "drive",
    "engine_backed",
    "takes_n",
]
