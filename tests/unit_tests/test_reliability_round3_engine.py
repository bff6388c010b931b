"""Issue 26 ("Reliability, round 3"), the engine's side, on the tiny models.

One section per defect of the issue: the GGUF cache keyed by content (1) and safe across
processes (2); ``stats()`` / ``reset_stats()`` from a callback (3); a draft model with a
shorter context, and drafter failures (5); vanishing temperatures and non-finite sampling
rows (6); ``draft_model`` without the ``"model"`` drafter (7); model weights released when
the last engine closes (8); ``Engine(config, **kwargs)`` (11); and the validation gaps.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import weakref
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_models import make_tiny_model

from langchain_seed import SeedLLM
from langchain_seed.engine import Engine, EngineConfig, SamplingParams
from langchain_seed.engine.execution import loading, models

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def model_path(tiny_pair) -> str:
    return str(tiny_pair.target_path)


@pytest.fixture(scope="module")
def engine(model_path):
    with Engine(EngineConfig(model=model_path, max_batch_size=4)) as eng:
        yield eng


@pytest.fixture(scope="module")
def short_context_draft(tmp_path_factory) -> str:
    """A GPT-2 draft on the byte vocabulary whose context is 64 positions (learned)."""
    return str(make_tiny_model(tmp_path_factory.mktemp("gpt2-draft"), "gpt2").path)


def greedy_ref(pair, prompt: str, max_new: int) -> list[int]:
    """transformers' own greedy generate on the tiny target."""
    ids = pair.tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = pair.target.generate(ids, max_new_tokens=max_new, do_sample=False, pad_token_id=2)
    return out[0, ids.shape[1] :].tolist()


def wait_running(engine: Engine, count: int = 1, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while len(engine.scheduler.running) < count:
        assert time.monotonic() < deadline, "request was never admitted"
        time.sleep(0.005)


def run_script(tmp_path: Path, source: str, *args: str, timeout: float = 120.0) -> str:
    """Run ``source`` in a fresh interpreter; its stdout, or a failure with its stderr."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    try:
        done = subprocess.run(
            [sys.executable, str(script), *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"the script did not finish within {timeout:.0f} s (a deadlock)")
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout


# ----- 1. the converted-GGUF cache is keyed by content ----------------------------------
FAKE_GGUF_READER = """
import time
from pathlib import Path

import transformers

_REAL_MODEL, _REAL_TOKENIZER = transformers.AutoModelForCausalLM, transformers.AutoTokenizer


def install(sources, delay=0.0):
    '''transformers reads a fake GGUF file as the tiny folder its first byte names.'''

    def source(folder, gguf_file):
        time.sleep(delay)  # widens the window two converting processes overlap in
        return sources[(Path(folder) / gguf_file).read_bytes()[:1].decode()]

    class Model:
        from_config = staticmethod(_REAL_MODEL.from_config)

        @staticmethod
        def from_pretrained(name, *args, gguf_file=None, **kwargs):
            if gguf_file is not None:
                name = source(name, gguf_file)
            return _REAL_MODEL.from_pretrained(name, *args, **kwargs)

    class Tokenizer:
        @staticmethod
        def from_pretrained(name, *args, gguf_file=None, **kwargs):
            if gguf_file is not None:
                name = source(name, gguf_file)
            return _REAL_TOKENIZER.from_pretrained(name, *args, **kwargs)

    transformers.AutoModelForCausalLM = Model
    transformers.AutoTokenizer = Tokenizer
"""


@pytest.fixture
def fake_gguf(tmp_path, monkeypatch, tiny_pair):
    """GGUF files read as the tiny target (first byte ``A``) or the tiny draft (``B``)."""
    import transformers

    monkeypatch.setenv("SEED_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict[str, object] = {}
    exec(FAKE_GGUF_READER, namespace)  # the same reader the cross-process test runs
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", transformers.AutoModelForCausalLM)
    monkeypatch.setattr(transformers, "AutoTokenizer", transformers.AutoTokenizer)
    install = namespace["install"]
    install({"A": str(tiny_pair.target_path), "B": str(tiny_pair.draft_path)})  # type: ignore[operator]


def converted_embedding(folder: str) -> torch.Tensor:
    return load_file(str(Path(folder) / "model.safetensors"))["model.embed_tokens.weight"]


def test_two_gguf_files_of_one_name_and_size_never_share_a_conversion(
    fake_gguf, tmp_path, tiny_pair
):
    first, second = tmp_path / "one" / "model.gguf", tmp_path / "two" / "model.gguf"
    for path, content in ((first, b"A"), (second, b"B")):
        path.parent.mkdir()
        path.write_bytes(content * 64)
    a = loading.model_source(str(first)).location
    b = loading.model_source(str(second)).location
    assert a != b
    assert torch.equal(converted_embedding(a), tiny_pair.target.model.embed_tokens.weight)
    assert torch.equal(converted_embedding(b), tiny_pair.draft.model.embed_tokens.weight)


def test_a_gguf_file_rewritten_in_place_with_the_same_size_is_converted_again(
    fake_gguf, tmp_path, tiny_pair
):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"A" * 64)
    before = loading.model_source(str(path)).location
    stat = path.stat()
    path.write_bytes(b"B" * 64)  # new weights, same size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with the old mtime
    after = loading.model_source(str(path)).location
    assert after != before
    assert torch.equal(converted_embedding(after), tiny_pair.draft.model.embed_tokens.weight)
    assert loading.model_source(str(path)).location == after  # found again, not reconverted


# ----- 2. GGUF conversion across processes -----------------------------------------------
CONVERT_SCRIPT = (
    FAKE_GGUF_READER
    + """
import os
import sys

tiny, gguf, barrier, count, me = sys.argv[1:]
install({"A": tiny}, delay=0.5)
from langchain_seed.engine.execution import loading

Path(barrier, me).touch()
while len(os.listdir(barrier)) < int(count):  # start converting together
    time.sleep(0.01)
print(loading.converted_gguf(Path(gguf)))
"""
)


def test_processes_converting_one_gguf_at_once_all_get_one_complete_folder(tmp_path, tiny_pair):
    gguf = tmp_path / "model.gguf"
    gguf.write_bytes(b"A" * 64)
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    script = tmp_path / "convert.py"
    script.write_text(CONVERT_SCRIPT)
    env = {**os.environ, "SEED_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1"}
    count = 3
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(tiny_pair.target_path),
                str(gguf),
                str(barrier),
                str(count),
                str(i),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )  # fmt: skip
        for i in range(count)
    ]
    outputs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=180)
        finally:
            proc.kill()
        outputs.append((proc.returncode, out.strip(), err[-1500:]))
    assert all(code == 0 for code, _, _ in outputs), outputs
    folders = {out for _, out, _ in outputs}
    assert len(folders) == 1, folders
    folder = folders.pop()
    assert torch.equal(converted_embedding(folder), tiny_pair.target.model.embed_tokens.weight)
    leftovers = [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, leftovers


# ----- 3. stats() and reset_stats() from a callback ----------------------------------------
CALLBACK_STATS_SCRIPT = """
import sys

from langchain_seed.engine import Engine, EngineConfig, SamplingParams

path = sys.argv[1]
engine = Engine(EngineConfig(model=path, max_batch_size=2))
other = Engine(EngineConfig(model=path, max_batch_size=2, gamma=2))
busy = other.submit("stream forever", SamplingParams(max_tokens=300, ignore_eos=True))
seen = []


def on_delta(piece):
    seen.append(engine.stats().steps)  # this engine, inside its own step
    engine.reset_stats()
    seen.append(other.stats().steps)  # another engine, busy on its own thread


result = engine.submit("hello there", SamplingParams(max_tokens=8), on_delta=on_delta)
result.result(timeout=30)
busy.cancel()
print("OK", len(seen), engine.stats().requests_finished)
"""


def test_stats_and_reset_stats_from_an_on_delta_callback_do_not_deadlock(model_path, tmp_path):
    out = run_script(tmp_path, CALLBACK_STATS_SCRIPT, model_path, timeout=90)
    ok, seen, finished = out.split()
    assert ok == "OK" and int(seen) >= 2
    assert int(finished) == 1  # counted after the last reset_stats()


# ----- 5. a draft model with a shorter context; drafter failures -----------------------------
@pytest.mark.parametrize("policy", ["batched", "fcfs_rounds"])
def test_draft_model_with_a_shorter_context_never_drafts_past_it(
    tiny_pair, short_context_draft, policy
):
    """64-position draft, 1,024-position target: prompts that cross and start past 64."""
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=short_context_draft,
        drafters=("model",),
        policy=policy,
        gamma=4,
        adaptive_gamma=False,
        max_batch_size=4,
    )
    prompts = ["short prompt", "a prompt of forty bytes, more or less ..", "x" * 80]
    with Engine(config) as engine:
        results = engine.generate(prompts, SamplingParams(max_tokens=40))
        stats = engine.stats()
    for prompt, result in zip(prompts, results):
        assert result.token_ids == greedy_ref(tiny_pair, prompt, 40), prompt
    assert stats.requests_failed == 0
    assert stats.spec.drafted_by_drafter.get("model", 0) > 0  # it drafted where it could


class BrokenDrafter:
    """A drafter whose every proposal raises."""

    name = "broken"

    def __init__(self) -> None:
        self.calls = 0

    def propose(self, sequences, max_lens):
        self.calls += 1
        raise RuntimeError("drafter bug")

    def release(self, sequence) -> None:
        pass


def test_a_failing_drafter_stops_drafting_for_its_rows_and_fails_no_request(tiny_pair):
    broken = BrokenDrafter()
    config = EngineConfig(model=str(tiny_pair.target_path), drafters=("ngram",), max_batch_size=4)
    prompts = ["one two one two one", "three four", "five six five"]
    with Engine(config, extra_drafters=[broken]) as engine:
        results = engine.generate(prompts, SamplingParams(max_tokens=12))
        stats = engine.stats()
    for prompt, result in zip(prompts, results):
        assert result.token_ids == greedy_ref(tiny_pair, prompt, 12)
    assert stats.requests_failed == 0
    assert broken.calls == 1 and stats.drafter_failures == {"broken": 1}  # off for those rows


# ----- 6. vanishing temperatures; a row whose sampling is not finite -----------------------
@pytest.mark.parametrize("temperature", [1e-6, 1e-38, 1e-45])
def test_vanishing_temperature_decodes_greedily(engine, tiny_pair, temperature):
    params = SamplingParams(temperature=temperature, max_tokens=10)
    assert params.greedy
    [result] = engine.generate(["hello there"], params)
    assert result.token_ids == greedy_ref(tiny_pair, "hello there", 10)


@pytest.mark.parametrize("policy", ["fcfs_rounds", "batched"])
def test_vanishing_temperature_next_to_sampled_rows_with_a_draft_model_fails_none(
    tiny_pair, policy
):
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        policy=policy,
        gamma=3,
        adaptive_gamma=False,
        max_batch_size=4,
    )
    params = [
        SamplingParams(temperature=1e-38, max_tokens=10),
        SamplingParams(temperature=0.8, max_tokens=10),
        SamplingParams(temperature=0.8, seed=7, max_tokens=10),
        SamplingParams(max_tokens=10),
    ]
    with Engine(config) as engine:
        results = engine.generate(["hello there"] * 4, params)
    ref = greedy_ref(tiny_pair, "hello there", 10)
    assert results[0].token_ids == ref and results[3].token_ids == ref
    assert all(len(r.token_ids) > 0 for r in results)


def test_a_row_whose_sampling_distribution_is_not_finite_fails_alone(tiny_pair, monkeypatch):
    """Rows sampled with ``top_k=5`` get NaN probabilities (in the drafter and the verifier)."""
    from langchain_seed.engine.speculation import verification as verification_module
    from langchain_seed.engine.speculation.drafters import model as model_drafter_module

    real_scores = verification_module.process_scores
    real_logits = model_drafter_module.process_logits

    def poisoned_scores(logits, params):
        scores = real_scores(logits, params)
        return torch.full_like(scores, float("nan")) if params.top_k == 5 else scores

    def poisoned_logits(logits, params):
        probs = real_logits(logits, params)
        return torch.full_like(probs, float("nan")) if params.top_k == 5 else probs

    monkeypatch.setattr(verification_module, "process_scores", poisoned_scores)
    monkeypatch.setattr(model_drafter_module, "process_logits", poisoned_logits)
    config = EngineConfig(
        model=str(tiny_pair.target_path),
        draft_model=str(tiny_pair.draft_path),
        gamma=3,
        adaptive_gamma=False,
        max_batch_size=4,
    )
    params = [
        SamplingParams(temperature=0.8, top_k=5, max_tokens=10),
        SamplingParams(temperature=0.8, max_tokens=10),
        SamplingParams(temperature=0.8, seed=3, max_tokens=10),
        SamplingParams(max_tokens=10),
    ]
    with Engine(config) as engine:
        futures = engine.submit_many(["hello there"] * 4, params)
        with pytest.raises(FloatingPointError, match="non-finite"):
            futures[0].result(timeout=60)
        others = [f.result(timeout=60) for f in futures[1:]]
        assert engine.stats().requests_failed == 1
    assert others[2].token_ids == greedy_ref(tiny_pair, "hello there", 10)
    assert all(len(r.token_ids) == 10 for r in others)


# ----- 7. draft_model without the "model" drafter --------------------------------------------
def test_draft_model_with_drafters_left_out_drafts(tiny_pair):
    config = EngineConfig(model=str(tiny_pair.target_path), draft_model=str(tiny_pair.draft_path))
    assert "model" in config.drafters
    llm = SeedLLM(model=str(tiny_pair.target_path), draft_model=str(tiny_pair.draft_path))
    assert "model" in llm.engine_config().drafters
    with Engine(config) as engine:
        assert engine.model_drafter is not None
        [result] = engine.generate(["hello there"], SamplingParams(max_tokens=12))
        assert engine.stats().draft_forwards > 0
    assert result.token_ids == greedy_ref(tiny_pair, "hello there", 12)


def test_draft_model_with_drafters_that_leave_it_out_is_refused_naming_both(tiny_pair):
    draft = str(tiny_pair.draft_path)
    with pytest.raises(ValueError, match=r"draft_model.*drafters.*'model'"):
        EngineConfig(draft_model=draft, drafters=("ngram",))
    with pytest.raises(ValueError, match=r"draft_model.*drafters.*'model'"):
        SeedLLM(model=str(tiny_pair.target_path), draft_model=draft, drafters=("consensus",))


def test_draft_model_with_drafters_left_out_has_its_vocabulary_checked(
    tiny_pair, tiny_small_vocab_pair
):
    with pytest.raises(ValueError, match="vocabulary"):
        Engine(
            EngineConfig(
                model=str(tiny_pair.target_path),
                draft_model=str(tiny_small_vocab_pair.draft_path),
            )
        )


# ----- 8. model weights are released when the last engine closes ----------------------------
def private_copy(tiny_pair, tmp_path: Path) -> str:
    """The tiny target in a folder of its own: no other test's engine holds its weights."""
    path = tmp_path / "private-target"
    shutil.copytree(tiny_pair.target_path, path)
    return str(path)


def model_loaded(path: str) -> bool:
    return any(key[0] == path for key in models._MODELS)


def test_closing_the_last_engine_of_a_model_frees_its_weights(tiny_pair, tmp_path):
    path = private_copy(tiny_pair, tmp_path)
    shared = Engine.shared(EngineConfig(model=path, max_batch_size=2))
    private = Engine(EngineConfig(model=path, max_batch_size=3))
    assert shared.target.model is private.target.model  # one copy of the weights
    weights = weakref.ref(shared.target.model)
    shared.generate(["hello"], SamplingParams(max_tokens=4))
    Engine.close_shared()
    gc.collect()
    assert weights() is not None and model_loaded(path)  # the private engine still uses it
    private.close()
    gc.collect()
    # Released although the closed engine objects are still referenced here.
    assert weights() is None and not model_loaded(path)
    assert shared.closed and private.closed
    with Engine(EngineConfig(model=path)) as again:  # loaded afresh on the next use
        assert again.generate(["hello"], SamplingParams(max_tokens=4))[0].token_ids


def test_an_engine_that_fails_to_build_holds_no_model(tiny_pair, tiny_small_vocab_pair, tmp_path):
    path = private_copy(tiny_pair, tmp_path)
    with pytest.raises(ValueError, match="vocabulary"):
        Engine(
            EngineConfig(
                model=path,
                draft_model=str(tiny_small_vocab_pair.draft_path),
                drafters=("model",),
            )
        )
    gc.collect()
    assert not model_loaded(path)


# ----- 11. Engine(config, **kwargs) and Engine.shared(config, **kwargs) ----------------------
def test_engine_keyword_arguments_override_the_config(model_path):
    base = EngineConfig(model=model_path, max_batch_size=4)
    with Engine(base, max_batch_size=2, gamma=1) as engine:
        assert engine.config.max_batch_size == 2 and engine.config.gamma == 1
    assert base.max_batch_size == 4  # the caller's config is left alone
    shared = Engine.shared(base, gamma=2)
    try:
        assert shared.config.gamma == 2 and shared is not Engine.shared(base)
    finally:
        Engine.close_shared()


@pytest.mark.parametrize("build", [Engine, Engine.shared])
def test_unknown_engine_keyword_is_refused_naming_it_and_the_fields(model_path, build):
    with pytest.raises(ValueError, match=r"gama.*max_batch_size"):
        build(EngineConfig(model=model_path), gama=2)
    with pytest.raises(ValueError, match=r"gama"):
        build(gama=2)


# ----- validation gaps ------------------------------------------------------------------------
def test_stop_none_means_no_stop_strings():
    assert SamplingParams(stop=None).stop == ()
    assert SamplingParams(stop_token_ids=None).stop_token_ids == ()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"stop_token_ids": ["x"]}, "stop_token_ids"),
        ({"stop_token_ids": [1.5]}, "stop_token_ids"),
        ({"stop_token_ids": [True]}, "stop_token_ids"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"stop": 5}, "stop"),
        ({"stop": [None]}, "stop"),
        ({"top_k": True}, "top_k"),
        ({"max_tokens": True}, "max_tokens"),
        ({"seed": True}, "seed"),
        ({"max_tokens": 4.0}, "max_tokens"),
    ],
)
def test_invalid_sampling_values_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SamplingParams(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"max_batch_size": True}, "max_batch_size"),
        ({"max_queue": 2.5}, "max_queue"),
        ({"max_queue": True}, "max_queue"),
        ({"gamma": True}, "gamma"),
        ({"max_cache_tokens": 4096.0}, "max_cache_tokens"),
        ({"prefix_cache_tokens": False}, "prefix_cache_tokens"),
    ],
)
def test_invalid_engine_config_values_are_refused_naming_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        EngineConfig(**kwargs)


def test_malformed_prefix_cache_environment_variable_is_refused_naming_it(monkeypatch):
    monkeypatch.setenv("SEED_PREFIX_CACHE_TOKENS", "16k")
    with pytest.raises(ValueError, match=r"SEED_PREFIX_CACHE_TOKENS.*integer"):
        EngineConfig()
    monkeypatch.setenv("SEED_PREFIX_CACHE_TOKENS", "2048")
    assert EngineConfig().prefix_cache_tokens == 2048


def test_params_that_are_not_sampling_params_are_refused_at_submit(engine):
    with pytest.raises(TypeError, match=r"params must be a SamplingParams"):
        engine.submit_many(["hello"], params={"max_tokens": 4})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"params must be a SamplingParams"):
        engine.submit_many(["hello"], params=[{"max_tokens": 4}])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("prompt", "error", "match"),
    [
        ("caf\udce9", ValueError, "surrogate"),
        (b"hello", TypeError, "str or a list of int"),
        ([104.0, 105.7], ValueError, "integers"),
        ([104, True], ValueError, "integers"),
        (["h", "i"], ValueError, "integers"),
    ],
)
def test_malformed_prompts_are_refused_at_submit(engine, prompt, error, match):
    with pytest.raises(error, match=match):
        engine.submit(prompt)  # type: ignore[arg-type]


def test_lone_surrogate_in_text_to_encode_is_refused(engine):
    with pytest.raises(ValueError, match="surrogate"):
        engine.encode("\udfff")


def test_lone_surrogate_in_a_chat_message_is_refused_naming_the_message(engine):
    with pytest.raises(ValueError, match=r"messages\[1\].*surrogate"):
        engine.render_chat(
            [{"role": "user", "content": "hi"}, {"role": "user", "content": "\ud800"}]
        )


def test_max_tokens_past_the_context_names_max_tokens_and_the_context(engine):
    with pytest.raises(ValueError, match=r"max_tokens=1000000000000.*context is 1024") as info:
        engine.submit("hello", SamplingParams(max_tokens=10**12))
    assert "-99" not in str(info.value)  # no negative prompt budget


def test_sample_seeds_near_the_top_of_the_range_wrap_instead_of_failing(engine):
    from langchain_seed.engine.config import sample_seed

    top = 2**64 - 1
    assert [sample_seed(top, j) for j in range(3)] == [top, 0, 1]
    llm = SeedLLM(engine=engine, temperature=0.8, max_tokens=4)
    result = llm.generate(["hello"], n=3, seed=top)
    assert len(result.generations[0]) == 3


def test_request_timeout_is_honoured_while_a_blocking_submit_waits_for_room(model_path):
    config = EngineConfig(model=model_path, max_batch_size=1, max_queue=1, queue_full="block")
    with Engine(config) as engine:
        got: dict[str, object] = {}

        def submit_late() -> None:
            got["future"] = engine.submit("late", SamplingParams(max_tokens=5, request_timeout=0.3))

        with engine.service.step_lock:  # no step runs: the queue stays full until released
            queued = engine.submit("queued", SamplingParams(max_tokens=5))
            deadline = time.monotonic() + 10
            while not engine.scheduler.waiting and time.monotonic() < deadline:
                time.sleep(0.005)  # in the engine's queue, not in transit
            started = time.monotonic()
            blocked = threading.Thread(target=submit_late)
            blocked.start()
            blocked.join(3.0)
            elapsed = time.monotonic() - started
            returned = not blocked.is_alive()
        blocked.join(30)
        assert returned, "the blocked submit ignored request_timeout"
        assert elapsed < 2.0
        with pytest.raises(TimeoutError, match=r"request_timeout=0.3s while its submission"):
            got["future"].result(timeout=10)  # type: ignore[attr-defined]
        assert queued.result(timeout=30).finish_reason in ("length", "stop")


def test_self_consistency_rounds_near_the_top_of_the_seed_range_wrap_too(engine):
    from langchain_seed import SelfConsistency

    llm = SeedLLM(engine=engine, temperature=0.8, max_tokens=4)
    sc = SelfConsistency(llm=llm, n=4, early_stop=True, round_size=2, seed=2**64 - 1)
    out = sc.invoke("hello")  # round 2 draws samples 2 and 3: seeds 1 and 2, not 2**64 + 1
    assert out["stats"]["samples"] >= 2
