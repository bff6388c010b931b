"""LangChain standard test suites for ChatSeed on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_seed import ChatSeed


class _ChatSeedFlags:
    """What ChatSeed supports: text in, text out, usage metadata; no tools or JSON mode."""

    @property
    def chat_model_class(self) -> type[ChatSeed]:
        return ChatSeed

    @property
    def has_tool_calling(self) -> bool:
        return False

    @property
    def has_tool_choice(self) -> bool:
        return False

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one engine serves one model; a per-call `model` is rejected


class TestChatSeedStandardUnit(_ChatSeedFlags, ChatModelUnitTests):
    pass


class TestChatSeedStandardIntegration(_ChatSeedFlags, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        # Small outputs keep the suite to a few minutes on a 2-core CPU.
        return {"max_tokens": 8}
