"""LangChain standard test suites for ChatSeed on the embedded SmolLM2-135M-Instruct."""

from __future__ import annotations

from typing import Literal

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_seed import ChatSeed


class _ChatSeedFlags:
    """What ChatSeed supports: text in and out, usage metadata, tool calling with every tool
    choice, structured output and JSON mode (all constrained by a grammar)."""

    @property
    def chat_model_class(self) -> type[ChatSeed]:
        return ChatSeed

    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_model_override(self) -> bool:
        return False  # one engine serves one model; a per-call `model` is rejected

    @property
    def supported_usage_metadata_details(self) -> dict:
        # Prompt tokens served from the prefix cache: input_token_details["cache_read"].
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    @property
    def supports_logprobs(self) -> bool:
        # No standard test reads this flag in langchain-tests 1.1; test_logprobs below does.
        return True


class TestChatSeedStandardUnit(_ChatSeedFlags, ChatModelUnitTests):
    pass


# What SmolLM2-135M-Instruct actually answers (greedy, max_tokens 64) where a standard test
# asks more of the model than of the adapter. Every call below is decoded under the grammar,
# and each answer is valid as far as it goes; the adapter's side (forced calls, one call per
# answer, schema-valid JSON, tool choice, rendering, streaming) is tested on a tiny model in
# tests/unit_tests/test_tool_calling.py and in the passing standard tests.
REPEATS_THE_CALL = pytest.mark.xfail(
    reason=(
        "SmolLM2-135M repeats the forced call until max_tokens: for 'What is the value of "
        "magic_function(3)? Use the tool.' it answers [magic_function({'input': 3}), "
        "magic_function({'input': 3}), ...] (finish_reason 'length'); the test wants one call"
    ),
    strict=False,
)
LOOPS_IN_THE_STRING = pytest.mark.xfail(
    reason=(
        "SmolLM2-135M loops inside the first string until max_tokens: 'Tell me a joke about "
        'cats.\' gives \'{"setup": "The cat was a cat, and the cat was a cat, and the cat '
        "was a cat, ...' (finish_reason 'length'), so no Joke parses"
    ),
    strict=False,
)


class TestChatSeedStandardIntegration(_ChatSeedFlags, ChatModelIntegrationTests):
    @property
    def chat_model_params(self) -> dict:
        # Room for one tool call or a short JSON answer, small enough to keep the suite to
        # a few minutes on a 2-core CPU.
        return {"max_tokens": 64}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        """A prompt's second run reads its prefix from the engine's prefix cache."""
        chat = ChatSeed(max_tokens=4)
        prompt = "Repeat these numbers: " + " ".join(str(i) for i in range(120))
        chat.invoke(prompt)
        if not stream:
            return chat.invoke(prompt)
        chunks = list(chat.stream(prompt))
        message = chunks[0]
        for chunk in chunks[1:]:
            message += chunk
        return message

    def test_logprobs(self, model: BaseChatModel) -> None:
        """``logprobs=True`` / ``top_logprobs`` as ChatOpenAI returns them, streamed too."""
        message = model.invoke("Hello", logprobs=True, top_logprobs=2)
        content = message.response_metadata["logprobs"]["content"]
        assert len(content) == message.usage_metadata["output_tokens"]
        assert all(len(entry["top_logprobs"]) == 2 for entry in content)
        assert all(entry["logprob"] <= 0 for entry in content)
        streamed = [
            c.response_metadata.get("logprobs") for c in model.stream("Hello", logprobs=True)
        ]
        assert sum(len(lp["content"]) for lp in streamed if lp) == len(content)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @REPEATS_THE_CALL
    def test_tool_calling(self, model: BaseChatModel) -> None:
        super().test_tool_calling(model)

    @REPEATS_THE_CALL
    async def test_tool_calling_async(self, model: BaseChatModel) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(
        reason=(
            "SmolLM2-135M repeats the forced call: 'What is the value of "
            "magic_function_no_args()? Use the tool.' gives [magic_function_no_args({}), "
            "magic_function_no_args({})]; the test wants one call"
        ),
        strict=False,
    )
    def test_tool_calling_with_no_arguments(self, model: BaseChatModel) -> None:
        super().test_tool_calling_with_no_arguments(model)

    # typeddict and json_schema pass (XPASS): their validators do not assert; pydantic fails.
    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @LOOPS_IN_THE_STRING
    def test_structured_output(
        self, model: BaseChatModel, schema_type: Literal["pydantic", "typeddict", "json_schema"]
    ) -> None:
        super().test_structured_output(model, schema_type)

    @pytest.mark.parametrize("schema_type", ["pydantic", "typeddict", "json_schema"])
    @LOOPS_IN_THE_STRING
    async def test_structured_output_async(
        self, model: BaseChatModel, schema_type: Literal["pydantic", "typeddict", "json_schema"]
    ) -> None:
        await super().test_structured_output_async(model, schema_type)

    @LOOPS_IN_THE_STRING
    def test_structured_output_pydantic_2_v1(self, model: BaseChatModel) -> None:
        super().test_structured_output_pydantic_2_v1(model)

    @pytest.mark.xfail(
        reason=(
            'SmolLM2-135M\'s joke does not end within 64 tokens: \'{"setup": "The cat was '
            "trying to make a cat-friendly home, but the cat was too smart for the "
            'cat-friendly home, ...", "punchline": "The cat decided to make a '
            "cat-friendly home, but the cat was too smart' (finish_reason 'length')"
        ),
        strict=False,
    )
    def test_json_mode(self, model: BaseChatModel) -> None:
        super().test_json_mode(model)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    @pytest.mark.xfail(
        reason=(
            "In 'auto' mode SmolLM2-135M answers in text rather than calling get_weather: "
            "'What is the weather in San Francisco, CA?' gives 'The weather in San "
            "Francisco, CA, is typically described as a mix of sunny and rainy. ...'"
        ),
        strict=False,
    )
    def test_agent_loop(self, model: BaseChatModel) -> None:
        super().test_agent_loop(model)
