"""The engine's own execution path: kernels, model code, the runner on it, its self-check."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from langchain_seed.engine.execution import kernels
from langchain_seed.engine.execution.llama import Batch, LlamaForward, unsupported_reason
from langchain_seed.engine.execution.own_path import own_forward, self_check
from langchain_seed.engine.execution.runner import ModelRunner
from tests.tiny_models import FAMILIES

VOCAB = 259

pytestmark = pytest.mark.skipif(kernels.load() is None, reason="no C++ compiler here")


def qwen3(vocab: int, seed: int) -> torch.nn.Module:
    """A tiny Qwen3 (q/k norms, head_dim 32 != hidden / heads)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=256, initializer_range=0.2,
    )  # fmt: skip
    return Qwen3ForCausalLM(config).eval()


OWN_FAMILIES = {
    "llama": FAMILIES["llama"],
    "qwen2": FAMILIES["qwen2"],
    "mistral_sliding": FAMILIES["mistral_sliding"],
    "qwen2_sliding": FAMILIES["qwen2_sliding"],
    "qwen3": qwen3,
}


def model_of(family: str, dtype: torch.dtype = torch.float32, seed: int = 3) -> torch.nn.Module:
    return OWN_FAMILIES[family](VOCAB, seed=seed).to(dtype).eval()


def pools(own: LlamaForward, rows: int, capacity: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    shape = (rows, own.kv_heads, capacity, own.head_dim)
    return [
        (torch.zeros(shape, dtype=own.dtype), torch.zeros(shape, dtype=own.dtype))
        for _ in own.layers
    ]


def run(own, kv, start, tokens, lengths):
    batch = Batch.of(start, tokens, lengths)
    return own.forward(batch, kv, torch.arange(batch.ids.shape[0]))


# ----- the kernels -----------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [16, 40, 259])
def test_linear_kernel_matches_f_linear_and_is_row_invariant(dtype, n):
    g = torch.Generator().manual_seed(n)
    w = (torch.randn(n, 64, generator=g) * 0.1).to(dtype)
    bias = torch.randn(n, generator=g)
    packed = kernels.pack_weight(w)
    x = torch.randn(13, 64, generator=g).to(dtype)
    out = torch.ops.seed.linear(x, packed, n, bias, True)  # [13, n] fp32
    reference = F.linear(x.double(), w.double(), bias.double())
    torch.testing.assert_close(out.double(), reference, rtol=1e-4, atol=1e-4)
    for rows in (1, 2, 5):  # a row's result alone equals its result among 13 rows, bit for bit
        alone = torch.ops.seed.linear(x[:rows].contiguous(), packed, n, bias, True)
        assert torch.equal(alone, out[:rows])


def reference_attention(q, keys, values, lengths, fed, window):
    """Per row SDPA over its own keys with a causal (and sliding) mask: [T, H, D]."""
    outs, offset = [], 0
    heads, kv_heads = q.shape[1], keys.shape[1]
    for row, (cached, n) in enumerate(zip(lengths, fed)):
        total = cached + n
        k = keys[row, :, :total].float().repeat_interleave(heads // kv_heads, 0)
        v = values[row, :, :total].float().repeat_interleave(heads // kv_heads, 0)
        qq = q[offset : offset + n].float().transpose(0, 1)  # [H, n, D]
        pos = torch.arange(cached, total)[:, None]
        key = torch.arange(total)[None, :]
        allowed = key <= pos
        if window:
            allowed &= key > pos - window
        mask = torch.zeros(n, total).masked_fill(~allowed, float("-inf"))
        out = F.scaled_dot_product_attention(qq, k, v, attn_mask=mask)
        outs.append(out.transpose(0, 1))
        offset += n
    return torch.cat(outs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(
    "head_dim,heads,kv_heads,window", [(16, 4, 2, 0), (64, 9, 3, 0), (32, 4, 4, 5), (128, 8, 2, 0)]
)
def test_attention_kernel_matches_masked_sdpa(dtype, head_dim, heads, kv_heads, window):
    g = torch.Generator().manual_seed(head_dim + heads)
    lengths, fed = [7, 0, 30, 3], [1, 12, 5, 2]
    keys = torch.randn(4, kv_heads, 48, head_dim, generator=g).to(dtype)
    values = torch.randn(4, kv_heads, 48, head_dim, generator=g).to(dtype)
    q = torch.randn(sum(fed), heads, head_dim, generator=g).to(dtype)
    batch = Batch.of(0, [[0] * n for n in fed], lengths)
    out = torch.ops.seed.attention(
        q, keys, values, batch.rows, batch.qstart, batch.qlen, batch.ctx, window, head_dim**-0.5
    )
    expected = reference_attention(q, keys, values, lengths, fed, window)
    tol = 1e-5 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(out.float(), expected, rtol=tol, atol=tol)


# ----- the model code --------------------------------------------------------------
@pytest.mark.parametrize("family", sorted(OWN_FAMILIES))
def test_own_forward_equals_transformers_in_float32_over_ragged_steps(family):
    model = model_of(family)
    assert unsupported_reason(model) is None
    own = LlamaForward(model, 256)
    kv = pools(own, 3, 64)
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g) for n in (21, 13, 30)]
    cuts = [12, 13, 4]  # prefill parts, then the rest in one ragged step
    first = run(own, kv, 0, [p[:c].tolist() for p, c in zip(prompts, cuts)], [0, 0, 0])
    second = run(own, kv, 0, [p[c:].tolist() for p, c in zip(prompts, cuts)], cuts)
    firsts, seconds = first.split(cuts), second.split([len(p) - c for p, c in zip(prompts, cuts)])
    with torch.inference_mode():
        for prompt, a, b in zip(prompts, firsts, seconds):
            reference = model(prompt[None]).logits[0]
            torch.testing.assert_close(torch.cat([a, b]), reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("family", ["llama", "mistral_sliding", "qwen3"])
def test_a_rows_logits_do_not_depend_on_its_neighbours_or_its_chunks(dtype, family):
    """Batch invariance, bit for bit: alone, beside ragged neighbours, drafts fed at once."""
    own = LlamaForward(model_of(family, dtype), 256)
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(3, VOCAB, (17,), generator=g).tolist()
    tail = [5, 9, 11, 13]
    # alone, one token a step
    kv = pools(own, 4, 64)
    run(own, kv, 0, [prompt], [0])
    alone = [run(own, kv, 0, [[t]], [17 + i]) for i, t in enumerate(tail)]
    alone = torch.cat(alone)
    # row 2 of a batch, its prompt in two chunks beside other rows, its tail as one draft
    kv = pools(own, 4, 64)
    others = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (30, 3, 8)]
    run(own, kv, 0, [others[0], others[1], prompt[:6], others[2]], [0, 0, 0, 0])
    run(own, kv, 0, [[7], [8, 9], prompt[6:], []], [30, 3, 6, 8])
    out = run(own, kv, 0, [[1, 2, 3], [4], tail, [6, 6]], [31, 5, 17, 8])
    mine = out[4 : 4 + len(tail)]
    assert torch.equal(mine, alone)


def test_the_self_check_refuses_a_broken_forward():
    model = model_of("llama")
    own = LlamaForward(model, 256)
    assert self_check(own, model) is None
    own.cos, own.sin = own.sin.clone(), own.cos.clone()  # a wrong RoPE
    reason = self_check(own, model)
    assert reason is not None and "differs from the transformers forward" in reason


def test_unsupported_models_keep_the_transformers_forward_with_the_reason():
    gpt2 = FAMILIES["gpt2"](VOCAB, seed=0).eval()
    assert "gpt2" in (unsupported_reason(gpt2) or "")
    runner = ModelRunner(gpt2, 2, "cpu", 256)
    assert runner.own is None and "gpt2" in runner.execution
    with pytest.raises(ValueError, match="execution='own' is not possible: .*gpt2"):
        ModelRunner(gpt2, 2, "cpu", 256, execution="own")


def test_the_runner_runs_the_own_path_and_pads_ragged_logits():
    model = model_of("llama")
    own_runner = ModelRunner(model, 3, "cpu", 256)
    ref_runner = ModelRunner(model, 3, "cpu", 256, execution="transformers")
    assert own_runner.execution == "own" and own_runner.own is not None
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (9, 4, 14)]
    feed = [[3, 4, 5], [6], [7, 8]]
    outs = []
    for runner in (own_runner, ref_runner):
        runner.cache.layout(32, live_rows=0)
        runner.prefill(0, prompts)
        outs.append(runner.forward(0, feed))
    assert outs[0].shape == outs[1].shape == (3, 3, VOCAB)
    for i, tokens in enumerate(feed):
        n = len(tokens)
        torch.testing.assert_close(outs[0][i, :n], outs[1][i, :n], rtol=1e-4, atol=1e-4)
    assert own_runner.computed_tokens([3, 1, 2]) == 6  # packed: no padding computed


def test_own_forward_is_built_once_per_model():
    model = model_of("qwen2")
    first, how = own_forward(model, 128)
    second, _ = own_forward(model, 256)
    assert how == "own" and first is second and first.cos.shape[0] >= 256


def test_kernels_can_be_refused_and_the_engine_keeps_the_transformers_forward(tmp_path):
    script = (
        "from langchain_seed.engine.execution import kernels\n"
        "from langchain_seed.engine.execution.own_path import own_forward\n"
        "from tests.tiny_models import FAMILIES\n"
        "model = FAMILIES['llama'](259, seed=0)\n"
        "own, why = own_forward(model, 64)\n"
        "assert own is None and 'SEED_KERNELS=0' in why, why\n"
        "print('ok')\n"
    )
    env = {**os.environ, "SEED_KERNELS": "0"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
