"""Engine settings the vLLM suite shares (one engine per session for the default ones)."""

from __future__ import annotations

from typing import Any

BACKEND_KWARGS: dict[str, Any] = {
    "enforce_eager": True,  # no torch.compile warm-up: a faster start, the same tokens
    "max_model_len": 2048,
    "kv_cache_memory_bytes": 1 << 30,
}
"""The engine every test shares (started once per session through ``VLLMEngine.shared``)."""

NGRAM = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 4,
         "prompt_lookup_min": 2}  # fmt: skip
