from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def embedded_model():
    """The embedded SmolLM2-135M-Instruct, loaded once per session."""
    from langchain_seed.engine.execution.loading import load_model

    return load_model()
