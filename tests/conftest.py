from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from tiny_models import TinyPair, make_tiny_pair  # noqa: E402

from langchain_seed.datasets import data_dir  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    path = data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent (set SEED_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def tiny_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """Tiny byte-vocabulary target + noisy-copy draft, saved to a temp dir."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny"), vocab="byte", seed=0)


@pytest.fixture(scope="session")
def grammar_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """The tiny byte pair with EOS = ``</s>`` only, for grammars: ``tiny_pair``'s model EOS
    is the byte ``"``, which a JSON grammar needs as text. Its context is 4,096 tokens (RoPE:
    the outputs do not change), room for a tool prompt at one token per byte."""
    pair = make_tiny_pair(tmp_path_factory.mktemp("tiny-grammar"), vocab="byte", seed=0)
    eos = pair.tokenizer.eos_token_id
    for model, path in ((pair.target, pair.target_path), (pair.draft, pair.draft_path)):
        model.generation_config.eos_token_id = eos
        model.config.max_position_embeddings = 4096
        model.save_pretrained(path)
    return pair


@pytest.fixture(scope="session")
def tiny_small_vocab_pair(tmp_path_factory: pytest.TempPathFactory) -> TinyPair:
    """Tiny 16-token-vocabulary pair for distribution tests."""
    return make_tiny_pair(tmp_path_factory.mktemp("tiny16"), vocab="16", seed=1, noise=0.2)


def _unrelated_draft(pair: TinyPair, root: Path, seed: int) -> Path:
    from tiny_models import tiny_llama

    model = tiny_llama(len(pair.tokenizer), seed=seed, init=0.6)
    model.save_pretrained(root)
    pair.tokenizer.save_pretrained(root)
    return root


@pytest.fixture(scope="session")
def unrelated_draft(tiny_small_vocab_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory):
    """A draft for the 16-token pair with unrelated weights (q far from p): a rule that
    ignores p lands on the draft's distribution."""
    return _unrelated_draft(tiny_small_vocab_pair, tmp_path_factory.mktemp("unrelated"), 77)


@pytest.fixture(scope="session")
def far_draft(tiny_small_vocab_pair: TinyPair, tmp_path_factory: pytest.TempPathFactory):
    """Another unrelated draft, one that puts much mass on tokens a grammar refuses: a rule
    that mishandles refused draft tokens then shows (TV 0.16 at the first position against
    ~0.03 of sampling noise in test_grammar.py, where the draft above gives only 0.04)."""
    return _unrelated_draft(tiny_small_vocab_pair, tmp_path_factory.mktemp("far"), 78)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is many times faster.

    Use with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(scope="module")
def model_path(tiny_pair: TinyPair) -> str:
    """Folder of the tiny byte-vocabulary target model."""
    return str(tiny_pair.target_path)
