"""One way for a call to travel: options parsed once, prompts rendered once, requests handed on.

A ``ChatSeed.invoke`` parses its options (``CallOptions.parse``) once and renders its prompt
(``render_chat``) once before ``Engine.submit_many``; a batch renders each input once and
hands each run the requests submitted for it; a Tree-of-Thoughts search hands the model
layer the very ``ModelCall`` objects it built, and their settings reach the engine.
"""

from __future__ import annotations

import sys

import pytest
from langchain_core.messages import HumanMessage
from tot_fakes import PathTask

from langchain_seed import ChatSeed, SeedLLM, TreeOfThoughts
from langchain_seed._adapters.options import CallOptions
from langchain_seed.engine import Engine
from langchain_seed.model_calls import ModelCall, drive, drivers
from langchain_seed.tree_of_thoughts import search as search_module
from langchain_seed.tree_of_thoughts.tasks.game24 import Game24Task


class Count:
    """Counts the calls of a function (and records its arguments), then calls it."""

    def __init__(self, fn):
        self.fn = fn
        self.calls: list[tuple] = []

    def __call__(self, *args, **kwargs):
        self.calls.append(args)
        return self.fn(*args, **kwargs)


@pytest.fixture
def spies(monkeypatch, model_path):
    """ChatSeed on the tiny model, with the parser, the renderer and submission counted."""
    chat = ChatSeed(model=model_path, max_tokens=4)
    engine = chat.engine
    parse = Count(CallOptions.parse.__func__)
    monkeypatch.setattr(CallOptions, "parse", classmethod(parse))
    render = Count(engine.render_chat)
    monkeypatch.setattr(engine, "render_chat", render)
    submitted: list[int] = []  # how many renders had happened at each submission
    submit_many = Engine.submit_many

    def counted_submit(self, prompts, *args, **kwargs):
        submitted.append(len(render.calls))
        return submit_many(self, prompts, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", counted_submit)
    return chat, parse, render, submitted


def test_invoke_parses_its_options_once_and_renders_its_prompt_once(spies):
    chat, parse, render, submitted = spies
    chat.invoke([HumanMessage("the cat")], stop=["zz"], temperature=0.0)
    assert len(parse.calls) == 1
    assert len(render.calls) == 1
    assert submitted == [1]  # rendered once, before the one submission


async def test_ainvoke_parses_its_options_once_and_renders_its_prompt_once(spies):
    chat, parse, render, submitted = spies
    await chat.ainvoke("the cat", max_tokens=3)
    assert (len(parse.calls), len(render.calls), submitted) == (1, 1, [1])


def test_batch_parses_once_renders_each_input_once_in_one_submission(spies):
    chat, parse, render, submitted = spies
    inputs = ["a cat", [HumanMessage("a dog")], "a cat"]  # the same text twice
    outputs = chat.batch(inputs)
    assert len(outputs) == 3 and outputs[0].content == outputs[2].content
    assert len(parse.calls) == 1
    assert len(render.calls) == 3
    assert submitted == [3]  # one submission after the three renders


def test_generate_of_several_inputs_hands_each_run_its_own_request(spies):
    chat, parse, render, submitted = spies
    messages = [[HumanMessage("one")], [HumanMessage("two")], [HumanMessage("three")]]
    result = chat.generate(messages, n=2, temperature=0.7, seed=5)
    assert [len(row) for row in result.generations] == [2, 2, 2]
    assert len(parse.calls) == 1
    assert len(render.calls) == 3  # no run renders again
    # each run got its own input's samples: the same as that input alone
    alone = chat.generate([messages[1]], n=2, temperature=0.7, seed=5)
    assert [g.text for g in result.generations[1]] == [g.text for g in alone.generations[0]]


def test_seed_llm_batch_renders_nothing_twice_and_submits_once(monkeypatch, model_path):
    llm = SeedLLM(model=model_path, max_tokens=4)
    parse = Count(CallOptions.parse.__func__)
    monkeypatch.setattr(CallOptions, "parse", classmethod(parse))
    sizes: list[int] = []
    submit_many = Engine.submit_many

    def counted_submit(self, prompts, *args, **kwargs):
        sizes.append(len(prompts))
        return submit_many(self, prompts, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", counted_submit)
    assert len(llm.batch(["a", "b", "c"])) == 3
    assert sizes == [3] and len(parse.calls) == 1


# ----- Tree of Thoughts: the search's requests reach the model as they are -----------------
class TwoChildren(PathTask):
    """Every state gets the children ``a`` and ``b`` whatever the model wrote: the tree grows,
    and value calls follow, even on a random model."""

    def parse_thoughts(self, x: str, state: str, outputs: list[str], step: int) -> list[str]:
        return [f"{state}/a", f"{state}/b"]


def tot(llm, **kwargs) -> TreeOfThoughts:
    return TreeOfThoughts(llm=llm, task=TwoChildren(steps=2), max_tokens=8, **kwargs)


@pytest.mark.parametrize("pipeline", [False, True])
def test_a_search_hands_the_model_layer_the_calls_it_built(monkeypatch, model_path, pipeline):
    built: list[ModelCall] = []  # every ModelCall the search module constructed
    real_init = ModelCall.__init__

    def recording_init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        if sys._getframe(1).f_globals["__name__"] == search_module.__name__:
            built.append(self)

    monkeypatch.setattr(ModelCall, "__init__", recording_init)
    yielded: list[ModelCall] = []
    run = search_module.Search.run

    def recording_run(self):
        gen = run(self)
        reply = None
        while True:
            try:
                message = gen.send(reply)
            except StopIteration as done:
                return done.value
            if isinstance(message, ModelCall):
                yielded.append(message)
            reply = yield message

    monkeypatch.setattr(search_module.Search, "run", recording_run)
    handed: list[ModelCall] = []
    call_model = drivers.call_model

    def recording_call(llm, call, config):
        handed.append(call)
        return call_model(llm, call, config)

    monkeypatch.setattr(drivers, "call_model", recording_call)
    params: list = []
    submit_many = Engine.submit_many

    def recording_submit(self, prompts, sampling=None, *args, **kwargs):
        params.append(sampling)
        return submit_many(self, prompts, sampling, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", recording_submit)
    llm = SeedLLM(model=model_path, max_tokens=8)
    result = tot(llm, pipeline=pipeline).invoke({"input": "x"})
    follow_ups = [c for c in built if not any(c is y for y in yielded)]
    assert yielded and all(any(c is b for b in built) for c in yielded)
    assert (len(follow_ups) > 0) == pipeline  # pipelined value calls, built by the search too
    for call in [*yielded, *follow_ups]:  # each reached the model layer as it was built
        assert any(call is h for h in handed)
    assert result["stats"]["model_submissions"] == len(yielded) + len(follow_ups)
    # what a call asked for is what the engine was asked
    asked = {(p.max_tokens, p.temperature, p.stop) for p in params if p is not None}
    assert asked == {(c.max_tokens, c.temperature, tuple(c.stop or ())) for c in built}


def test_the_search_yields_model_calls_not_phases():
    assert not hasattr(search_module, "Phase")
    task = Game24Task()
    cfg = search_module.SearchConfig(breadth=1, steps=1, temperature=0.0)
    run = search_module.Search(task, "4 5 6 10", cfg).run()
    first = next(run)
    assert isinstance(first, ModelCall)
    assert (first.phase, first.level, first.temperature) == ("generate", 0, 0.0)


def test_drive_sends_each_call_to_the_model_as_it_is(monkeypatch, model_path):
    call = ModelCall(["2 + 2 ="], n=2, max_tokens=3, temperature=0.0)

    def run():
        result = yield call
        return result

    seen = []
    real = drivers.call_model
    monkeypatch.setattr(
        drivers, "call_model", lambda llm, c, cfg: seen.append(c) or real(llm, c, cfg)
    )
    result = drive(run(), SeedLLM(model=model_path), {})
    assert seen == [call] and seen[0] is call
    assert len(result.samples[0]) == 2 and result.samples[0][0].spec is not None
