"""LCEL with ChatSeed: ``prompt | ChatSeed | StrOutputParser``, invoked, streamed and batched.

Runs on the embedded SmolLM2-135M-Instruct (CPU, no network) in a minute or two:

    .venv/bin/python cookbook/lcel_pipeline.py
    .venv/bin/python cookbook/lcel_pipeline.py --max-tokens 32

What it shows:
1. a plain LCEL chain: prompt template -> chat model -> string parser;
2. streaming: the text arrives token by token as the engine decodes it;
3. ``chain.batch``: every question goes to the engine in one submission and is decoded in
   one continuous batch (compare the engine's peak batch size with the number of questions);
4. ``chat.generate(..., n=4)``: four samples of one question as one engine group;
5. metadata: token usage and speculative-decoding stats of each answer.
"""

from __future__ import annotations

import argparse
import time

from langchain_core.messages import HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_seed import ChatSeed

SYSTEM = "You are a concise assistant. Answer in one short sentence."
QUESTIONS = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "What do bees make?",
    "How many legs does a spider have?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()

    chat = ChatSeed(max_tokens=args.max_tokens)  # temperature 0: greedy, reproducible
    prompt = ChatPromptTemplate.from_messages([("system", SYSTEM), ("human", "{question}")])
    chain = prompt | chat | StrOutputParser()

    start = time.perf_counter()
    engine = chat.engine  # loads the embedded model once; later ChatSeed/SeedLLM share it
    print(f"model: {engine.model_name} (loaded in {time.perf_counter() - start:.1f}s)\n")

    print("1. invoke")
    start = time.perf_counter()
    print(f"   {chain.invoke({'question': QUESTIONS[0]})!r}")
    print(f"   ({time.perf_counter() - start:.1f}s)\n")

    print("2. stream")
    print("   ", end="")
    for piece in chain.stream({"question": "Name three primary colors."}):
        print(piece, end="", flush=True)
    print("\n")

    print(f"3. batch of {len(QUESTIONS)} questions (one engine submission)")
    engine.reset_stats()
    start = time.perf_counter()
    answers = chain.batch([{"question": q} for q in QUESTIONS])
    elapsed = time.perf_counter() - start
    for question, answer in zip(QUESTIONS, answers, strict=True):
        print(f"   {question}\n     -> {answer!r}")
    stats = engine.stats()
    print(
        f"   {elapsed:.1f}s, peak batch size {stats.peak_batch_size}, "
        f"{stats.spec.generated_tokens} tokens in {stats.steps} engine steps, "
        f"mean accepted length {stats.spec.mean_accepted_length:.2f}\n"
    )

    print("4. four samples of one question as one engine group (temperature 0.8)")
    messages = [SystemMessage(SYSTEM), HumanMessage("Suggest a name for a cat.")]
    result = chat.generate([messages], n=4, temperature=0.8, seed=0)
    for generation in result.generations[0]:
        print(f"   - {generation.message.content!r}")
    print()

    print("5. metadata of one answer")
    message = chat.invoke([HumanMessage(QUESTIONS[2])])
    meta = message.response_metadata
    spec = meta["spec_stats"]
    print(f"   content:       {message.content!r}")
    print(f"   usage:         {message.usage_metadata}")
    print(f"   finish_reason: {meta['finish_reason']}")
    print(
        f"   spec stats:    {spec['verifications']} verifications, {spec['drafted']} drafted, "
        f"{spec['accepted']} accepted, mean accepted length {spec['mean_accepted_length']}"
    )


if __name__ == "__main__":
    main()
