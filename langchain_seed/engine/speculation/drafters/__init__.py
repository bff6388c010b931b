"""Drafters: cheap proposals of the next tokens, verified losslessly by the target."""

from langchain_seed.engine.speculation.drafters.base import Draft, Drafter

__all__ = ["Draft", "Drafter"]
