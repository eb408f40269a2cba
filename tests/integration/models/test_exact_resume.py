"""Resumption is exact on the real default chat model (8-bit ``MatMulNBits``): a stream resumed
from its delivered tokens continues the uninterrupted greedy run token for token, whoever its
batch mates are and whatever the prefix cache held when either run prefilled.

int8 kernels give a prompt prefilled in one pass other numbers than the same tokens decoded one
by one (logits differ by up to ~1 here), so the runtime prefills only the prompt and replays the
delivered tokens as decode steps, and the prefix cache never leaves a one-token prefill."""

from __future__ import annotations

import asyncio

import pytest

from llmnode.agents.models import GenerationRuntime, ModelStore
from llmnode.schemas.inference import ChatMessage, GenerateRequest

pytestmark = [pytest.mark.slow, pytest.mark.models]

CHAT = "smollm2-135m-instruct"
STORY = [ChatMessage(role="user", content="Tell me a long story about a fox and a crow.")]
OTHER = [ChatMessage(role="user", content="Write a haiku about the sea.")]
NEW_TOKENS = 40


def story(resume: list[int] | None = None) -> GenerateRequest:
    return GenerateRequest(messages=STORY, max_tokens=NEW_TOKENS, resume_token_ids=resume or [])


async def test_the_default_chat_model_is_8_bit(default_store: ModelStore) -> None:
    assert default_store.get(CHAT).precision == "int8"


async def test_a_resumed_stream_equals_the_uninterrupted_run_at_every_cut(
    default_store: ModelStore,
) -> None:
    first = GenerationRuntime(default_store, CHAT, max_batch_size=4)
    second = GenerationRuntime(default_store, CHAT, max_batch_size=4)  # "another node"
    try:
        expected = (await first.generate(story())).token_ids
        assert len(expected) == NEW_TOKENS
        for cut in (1, 5, 12, 25):
            delivered = expected[:cut]
            # resumed while another stream decodes beside it: batch mates change nothing
            resumed, _ = await asyncio.gather(
                second.generate(story(delivered)),
                second.generate(GenerateRequest(messages=OTHER, max_tokens=NEW_TOKENS)),
            )
            assert delivered + resumed.token_ids == expected, f"cut after {cut} tokens"
    finally:
        first.close()
        second.close()


async def test_a_prefix_cache_hit_never_changes_the_answer(default_store: ModelStore) -> None:
    """Whatever part of a prompt the cache held, the answer is the uncached one: among the
    prompts, one that a hit would leave a single token to prefill (block 32, 33 tokens)."""
    cached = GenerationRuntime(default_store, CHAT, max_batch_size=2, prefix_cache_mb=64)
    plain = GenerationRuntime(default_store, CHAT, max_batch_size=2, prefix_cache_mb=0)
    try:
        assert cached.prefix_cache is not None
        text = "Once upon a time a fox lived by the river and watched the crows fly home. " * 4
        ids = cached.tokenizer.encode(text)
        await cached.generate(
            GenerateRequest(prompt=cached.tokenizer.decode(ids[:90]), max_tokens=1)
        )
        for length in (33, 34, 40, 65, 66):
            prompt = cached.tokenizer.decode(ids[:length])
            assert len(cached.encode_prompt(GenerateRequest(prompt=prompt))) == length
            request = GenerateRequest(prompt=prompt, max_tokens=16)
            with_cache = await cached.generate(request)
            without = await plain.generate(request)
            assert with_cache.token_ids == without.token_ids, f"a prompt of {length} tokens"
    finally:
        cached.close()
        plain.close()
