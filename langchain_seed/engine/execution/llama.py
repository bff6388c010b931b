"""The engine's own forward for the Llama family (llama, mistral, qwen2, qwen3) on a CPU.

One packed forward per call: the ``T`` tokens of every row (a decode token, drafts to
verify, a prefill chunk) run as one sequence with per-token positions and pool rows, so
no row pays for another's padding. Per layer (``h`` the normed residual stream ``x``)::

    qkv = h @ Wqkv                       # fused q, k, v projection       [T, (H + 2 KVH) D]
    q = rope_store(qkv)                  # RoPE on q, k; k, v into the KV pool at (row, pos)
    o = attention(q, pool)               # each row over its own cached keys    [T, H, D]
    h = add_rms_norm(x, o @ Wo)          # x += o Wo; h = RMSNorm(x)
    h = add_rms_norm(x, silu_mul(h @ Wgu) @ Wdown)   # fused gate/up projection

with the kernels of :mod:`~langchain_seed.engine.execution.kernels`: weights prepacked
once at load, attention straight over the budgeted pool from per-row lengths (no mask
tensor, grouped-query heads read once), norms and activations rounded where the
reference (transformers) rounds. Nine operations a layer where the transformers forward
issues ~60.

Every operation computes a row on its own with one fixed order of arithmetic, so a row's
logits do not depend on its neighbours (their number, lengths, drafts) nor on how a
prompt was split into chunks: greedy decoding is batch invariant in every dtype, and a
verified draft position computes exactly what a one-token step would.

``own_path.own_forward`` builds this path for a loaded transformers model, or says why not
(the engine then keeps the transformers forward), and checks its logits against the
transformers forward before trusting it (``own_path.self_check``).
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from langchain_seed.engine.execution import kernels
from langchain_seed.engine.execution.linear import Linear, fused, tune

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")
"""``config.model_type`` values the own path runs."""
HEAD_DIMS = (16, 32, 64, 128)
"""Head sizes the attention kernel is compiled for (each one costs build time)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """A packed forward's inputs: ``T`` tokens of ``b`` rows, rows' tokens contiguous.

    Attributes:
        ids: ``[T]`` token ids.
        positions: ``[T]`` each token's position (its KV slot in its row).
        token_rows: ``[T]`` each token's pool row.
        rows: ``[b]`` pool row of each packed row.
        qstart: ``[b]`` index of each row's first token in ``ids``.
        qlen: ``[b]`` tokens of each row (0: a row that only waits).
        ctx: ``[b]`` tokens each row has cached before this forward.
    """

    ids: torch.Tensor
    positions: torch.Tensor
    token_rows: torch.Tensor
    rows: torch.Tensor
    qstart: torch.Tensor
    qlen: torch.Tensor
    ctx: torch.Tensor

    @classmethod
    def of(cls, start: int, tokens: Seq[Seq[int]], lengths: Seq[int]) -> Batch:
        """Rows ``start ..`` fed ``tokens[i]`` after ``lengths[i]`` cached tokens."""
        ids: list[int] = []
        positions: list[int] = []
        token_rows: list[int] = []
        qstart: list[int] = []
        for i, (feed, cached) in enumerate(zip(tokens, lengths)):
            qstart.append(len(ids))
            ids.extend(feed)
            positions.extend(range(cached, cached + len(feed)))
            token_rows.extend([start + i] * len(feed))
        b = len(tokens)
        table = torch.tensor(
            [*ids, *positions, *token_rows, *range(start, start + b), *qstart,
             *(len(t) for t in tokens), *lengths],
            dtype=torch.long,
        )  # fmt: skip
        n = len(ids)
        return cls(
            table[:n], table[n : 2 * n], table[2 * n : 3 * n], table[3 * n : 3 * n + b],
            table[3 * n + b : 3 * n + 2 * b], table[3 * n + 2 * b : 3 * n + 3 * b],
            table[3 * n + 3 * b :],
        )  # fmt: skip


@dataclass(slots=True)
class Layer:
    """One decoder layer's prepacked weights."""

    qkv: Linear
    o: Linear
    gate_up: Linear
    down: Linear
    input_norm: torch.Tensor  # [hidden]
    post_norm: torch.Tensor  # [hidden]
    q_norm: torch.Tensor | None  # [head_dim] (qwen3)
    k_norm: torch.Tensor | None  # [head_dim] (qwen3)
    window: int
    """Sliding window of this layer's attention (0: full)."""


def unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the own path cannot run ``model`` (``None``: it can)."""
    config: Any = model.config
    kind = getattr(config, "model_type", None)
    if kind not in FAMILIES:
        return f"model_type {kind!r} is not one of {FAMILIES}"
    if next(model.parameters()).device.type != "cpu":
        return "the own path runs on a CPU (other devices keep the transformers forward)"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"hidden_act {config.hidden_act!r} (the own path implements silu)"
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if isinstance(rope, dict) and "dynamic" in str(rope.get("rope_type", rope.get("type", ""))):
        return "dynamic RoPE scaling (its frequencies depend on the sequence length)"
    if getattr(config, "partial_rotary_factor", 1.0) not in (None, 1.0):
        return "partial rotary embeddings"
    head_dim = _head_dim(config)
    if head_dim not in HEAD_DIMS:
        return f"head_dim {head_dim} (the attention kernel is built for {HEAD_DIMS})"
    inner: Any = getattr(model, "model", None)
    if inner is None or not hasattr(inner, "layers") or not hasattr(inner, "rotary_emb"):
        return "no model.layers / model.rotary_emb (not the transformers Llama layout)"
    for name, param in model.named_parameters():
        if param.ndim == 2 and "embed" not in name and not kernels.packable(param):
            return f"weight {name} {tuple(param.shape)} {param.dtype} does not fit the kernels"
    return None


def _head_dim(config: Any) -> int:
    return int(
        getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    )


class LlamaForward:
    """The own forward of one Llama-family model (see the module docstring).

    Args:
        model: a loaded transformers model for which :func:`unsupported_reason` is ``None``.
        max_positions: positions the RoPE tables cover at first (:meth:`ensure_positions`
            extends them).
    """

    def __init__(self, model: torch.nn.Module, max_positions: int = 2048) -> None:
        config: Any = model.config
        inner: Any = model.model
        self.dtype = next(model.parameters()).dtype
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(config.num_key_value_heads)
        self.head_dim = _head_dim(config)
        self.eps = float(config.rms_norm_eps)
        self.scale = self.head_dim**-0.5
        head: Any = model.get_output_embeddings()  # type: ignore[operator]
        self.vocab_size = int(head.weight.shape[0])
        self.embed = inner.embed_tokens.weight.detach()  # [vocab, hidden]
        self.final_norm = inner.norm.weight.detach().contiguous()
        self.head = Linear(head.weight, getattr(head, "bias", None))
        windows = _windows(config)
        self.layers = [self._layer(layer, windows[i]) for i, layer in enumerate(inner.layers)]
        self._rotary = inner.rotary_emb
        self.max_positions = int(getattr(config, "max_position_embeddings", 0) or 2048)
        self.cos = self.sin = torch.empty(0)
        self.ensure_positions(max_positions)
        self._tuned = False

    def tune(self) -> None:
        """Measure library kernels per row count for each linear shape (once, on demand)."""
        for name in ("qkv", "o", "gate_up", "down"):
            tune([getattr(layer, name) for layer in self.layers])
        self._tuned = True

    def ensure_positions(self, positions: int) -> None:
        """Make the RoPE tables cover ``positions`` (at most the model's context)."""
        positions = min(positions, self.max_positions)
        if self.cos.shape[0] < positions:
            self.cos, self.sin = _rope_tables(self._rotary, positions, self.head_dim)

    def _layer(self, layer: Any, window: int) -> Layer:
        attn, mlp = layer.self_attn, layer.mlp
        q_norm = getattr(attn, "q_norm", None)
        k_norm = getattr(attn, "k_norm", None)
        return Layer(
            qkv=fused([attn.q_proj, attn.k_proj, attn.v_proj]),
            o=Linear(attn.o_proj.weight, attn.o_proj.bias),
            gate_up=fused([mlp.gate_proj, mlp.up_proj]),
            down=Linear(mlp.down_proj.weight, mlp.down_proj.bias),
            input_norm=layer.input_layernorm.weight.detach().contiguous(),
            post_norm=layer.post_attention_layernorm.weight.detach().contiguous(),
            q_norm=None if q_norm is None else q_norm.weight.detach().contiguous(),
            k_norm=None if k_norm is None else k_norm.weight.detach().contiguous(),
            window=window,
        )

    @torch.inference_mode()
    def forward(
        self,
        batch: Batch,
        pools: Seq[tuple[torch.Tensor, torch.Tensor]],
        logits_index: torch.Tensor | None,
        deterministic: bool = True,
    ) -> torch.Tensor | None:
        """Run ``batch``; return fp32 logits ``[n, vocab]`` of the tokens ``logits_index``.

        Args:
            batch: the packed tokens.
            pools: per layer the KV pools ``[rows, kv_heads, capacity, head_dim]`` (keys,
                values), written at each token's (row, position).
            logits_index: ``[n]`` packed indices of the tokens whose logits are wanted
                (``None``: none, a prefill; all ``T``: pass ``torch.arange(T)``).
            deterministic: every row computed by the batch-invariant kernels (``False``:
                linear layers may take library kernels that measured faster at this row
                count, :meth:`tune`).
        """
        if not deterministic and not self._tuned:
            self.tune()
        det = deterministic
        ops = torch.ops.seed
        tokens = batch.ids.shape[0]
        x = self.embed.index_select(0, batch.ids)  # [T, hidden]: the residual stream
        h = ops.add_rms_norm(x, None, self.layers[0].input_norm, self.eps)
        for i, layer in enumerate(self.layers):
            keys, values = pools[i]
            qkv = layer.qkv(h, deterministic=det)  # [T, (H + 2 KVH) D]
            q = ops.rope_store(
                qkv, self.cos, self.sin, batch.positions, batch.token_rows, keys, values,
                self.heads, self.kv_heads, layer.q_norm, layer.k_norm, self.eps,
            )  # fmt: skip  # [T, H, D]
            o = ops.attention(
                q, keys, values, batch.rows, batch.qstart, batch.qlen, batch.ctx,
                layer.window, self.scale,
            )  # fmt: skip  # [T, H, D]
            attended = layer.o(o.view(tokens, -1), deterministic=det)
            h = ops.add_rms_norm(x, attended, layer.post_norm, self.eps)
            up = layer.gate_up(h, deterministic=det)
            mlp = layer.down(ops.silu_mul(up), deterministic=det)
            norm = self.layers[i + 1].input_norm if i + 1 < len(self.layers) else self.final_norm
            h = ops.add_rms_norm(x, mlp, norm, self.eps)
        if logits_index is None:
            return None
        if logits_index.shape[0] != tokens:
            h = h.index_select(0, logits_index)
        return self.head(h, out_float=True)  # [n, vocab] fp32


def _windows(config: Any) -> list[int]:
    """Each layer's sliding window (0: full attention)."""
    layers = int(config.num_hidden_layers)
    window = getattr(config, "sliding_window", None) or 0
    if getattr(config, "use_sliding_window", True) is False:
        window = 0
    types = getattr(config, "layer_types", None)
    if types:
        return [int(window) if t == "sliding_attention" else 0 for t in types]
    return [int(window)] * layers


def _rope_tables(rotary: Any, positions: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` ``[positions, head_dim / 2]`` fp32, from the model's own RoPE module.

    The module computes them as the reference forward does (scaling types included); the
    kernel rounds them to the compute dtype where the reference does.
    """
    position_ids = torch.arange(positions)[None]  # [1, P]
    probe = torch.zeros(1, dtype=torch.float32)
    cos, sin = rotary(probe, position_ids)  # [1, P, D] fp32
    half = head_dim // 2
    cos, sin = cos[0].float(), sin[0].float()
    if not (
        torch.equal(cos[:, :half], cos[:, half:]) and torch.equal(sin[:, :half], sin[:, half:])
    ):
        raise ValueError("RoPE tables are not in the rotate-half layout")
    return cos[:, :half].contiguous(), sin[:, :half].contiguous()
