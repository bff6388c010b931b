"""Tiny random-initialised models and tokenizers for tests (seconds, no download).

``make_tiny_pair`` builds a Llama target and a draft that share one vocabulary and saves
both, with their tokenizer, to folders so every loading path is exercised.
``make_tiny_model`` builds and saves one model of another architecture family (GPT-2:
learned absolute positions and a 64-token context; Qwen2: biased q/k/v) on the byte
vocabulary. The byte-level tokenizer encodes any text (one token per byte); the
word-level one has a vocabulary small enough for distribution tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SPECIALS = ["<s>", "</s>", "<pad>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def byte_tokenizer():
    """A byte-level BPE tokenizer with no merges: 256 byte tokens + <s>, </s>, <pad>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {ch: i for i, ch in enumerate(bytes_to_unicode().values())}
    for tok in SPECIALS:
        vocab[tok] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tok.add_special_tokens({"additional_special_tokens": []})
    tok.chat_template = CHAT_TEMPLATE
    return tok


def word_tokenizer(size: int = 16):
    """A word-level tokenizer over ``w0 .. w{size-4}`` plus specials (tiny vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS)}
    vocab["<unk>"] = len(vocab)
    for i in range(size - len(vocab)):
        vocab[f"w{i}"] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int, *, seed: int, layers: int = 2, hidden: int = 64, init: float = 0.2):
    """A random Llama whose logits are spread out enough that greedy argmax has no near-ties."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=init,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2
    return model


def tiny_gpt2(
    vocab_size: int,
    *,
    seed: int,
    layers: int = 2,
    hidden: int = 64,
    positions: int = 64,
    init: float = 0.2,
):
    """A random GPT-2: learned absolute positions (``n_positions``), fused biased QKV."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=positions,
        n_embd=hidden,
        n_layer=layers,
        n_head=4,
        initializer_range=init,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
    )
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2
    return model


def tiny_qwen2(vocab_size: int, *, seed: int, layers: int = 2, hidden: int = 64, init: float = 0.2):
    """A random Qwen2: Llama-like with biases on q/k/v (set non-zero so they matter)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=init,
        use_sliding_window=False,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # transformers initialises biases to zero: make them count
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(0.0, init)
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2
    return model


def noisy_copy(model, *, seed: int, noise: float):
    """A draft that agrees with ``model`` often but not always: its weights plus noise."""
    import copy

    import torch

    draft = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * noise * p.std())
    return draft


@dataclass
class TinyPair:
    """Paths and objects of a tiny target/draft pair sharing one tokenizer."""

    target_path: Path
    draft_path: Path
    target: object
    draft: object
    tokenizer: object


def make_tiny_pair(
    root: Path, *, vocab: str = "byte", seed: int = 0, noise: float = 0.03
) -> TinyPair:
    """Build, save and return a tiny target and a draft (a noisy copy) with one tokenizer."""
    tok = byte_tokenizer() if vocab == "byte" else word_tokenizer(int(vocab))
    target = tiny_llama(len(tok), seed=seed)
    draft = noisy_copy(target, seed=seed + 1, noise=noise)
    paths = []
    for name, model in (("target", target), ("draft", draft)):
        path = root / f"{vocab}-{seed}-{name}"
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths.append(path)
    return TinyPair(paths[0], paths[1], target, draft, tok)


def tiny_mistral_sliding(vocab_size: int, *, seed: int, window: int = 8, init: float = 0.2):
    """A random Mistral whose every layer attends to the last ``window`` tokens only."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(seed)
    config = MistralConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        sliding_window=window,
        initializer_range=init,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=2,
        tie_word_embeddings=False,
    )
    model = MistralForCausalLM(config).eval()
    model.generation_config.eos_token_id = 1
    model.generation_config.pad_token_id = 2
    return model


def tiny_qwen2_sliding(vocab_size: int, *, seed: int, window: int = 8):
    """A random Qwen2 mixing full and sliding-window layers (``config.layer_types``)."""
    model = tiny_qwen2(vocab_size, seed=seed, layers=3)
    config = model.config
    config.use_sliding_window = True
    config.sliding_window = window
    config.layer_types = ["full_attention", "sliding_attention", "sliding_attention"]
    for layer, kind in zip(model.model.layers, config.layer_types):
        layer.self_attn.sliding_window = window if kind == "sliding_attention" else None
        layer.attention_type = kind
    model.model.has_sliding_layers = True
    return model


FAMILIES = {
    "gpt2": tiny_gpt2,
    "llama": tiny_llama,
    "qwen2": tiny_qwen2,
    "mistral_sliding": tiny_mistral_sliding,
    "qwen2_sliding": tiny_qwen2_sliding,
}


@dataclass
class TinyModel:
    """Path and objects of one tiny model saved with the byte tokenizer."""

    path: Path
    model: object
    tokenizer: object
    draft_path: Path | None = None
    """A noisy copy of the model (a draft that agrees often), when asked for."""


def make_tiny_model(root: Path, family: str, *, seed: int = 0, draft: bool = False) -> TinyModel:
    """Build a tiny ``family`` model (a key of ``FAMILIES``) on the byte vocabulary, save it."""
    tok = byte_tokenizer()
    model = FAMILIES[family](len(tok), seed=seed)
    path = root / f"{family}-{seed}"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    draft_path = None
    if draft:
        draft_path = root / f"{family}-{seed}-draft"
        noisy_copy(model, seed=seed + 1, noise=0.03).save_pretrained(draft_path)
        tok.save_pretrained(draft_path)
    return TinyModel(path, model, tok, draft_path)
