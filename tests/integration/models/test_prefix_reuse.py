"""The prefix cache on the real SmolLM2: a repeated system prompt is prefilled once, answers are
token for token what they are without the cache, and its memory stays under its bound."""

from __future__ import annotations

import pytest

from llmnode.agents.models import GenerationRuntime, ModelStore
from llmnode.schemas.inference import ChatMessage, GenerateRequest, prefix_key

pytestmark = [pytest.mark.slow, pytest.mark.models]

CHAT = "smollm2-135m-instruct"
SYSTEM = "You are a careful librarian. " + " ".join(
    f"Rule {n}: cite the passage you used and keep answers short." for n in range(20)
)


def ask(question: str) -> GenerateRequest:
    return GenerateRequest(
        messages=[
            ChatMessage(role="system", content=SYSTEM),
            ChatMessage(role="user", content=question),
        ],
        max_tokens=24,
    )


async def test_a_repeated_system_prompt_is_reused_and_answers_do_not_change(
    default_store: ModelStore,
) -> None:
    cached = GenerationRuntime(default_store, CHAT, max_batch_size=2, prefix_cache_mb=64)
    plain = GenerationRuntime(default_store, CHAT, max_batch_size=2, prefix_cache_mb=0)
    try:
        assert cached.prefix_cache is not None and plain.prefix_cache is None
        await cached.generate(ask("Which river flows through Vienna?"))
        misses = cached.prefix_cache.misses
        for question in ("What is the capital of Portugal?", "Where is the Matterhorn?"):
            with_cache = await cached.generate(ask(question))
            without = await plain.generate(ask(question))
            assert with_cache.token_ids == without.token_ids
        prompt_tokens = with_cache.prompt_tokens
        served = cached.prefix_cache.hits
        assert served >= 2 * (prompt_tokens - 64)  # all but the question came from the cache
        assert cached.prefix_cache.misses - misses < 2 * 64
        # the node advertises the prompt's name in its load, for the scheduler to prefer it
        assert prefix_key(ask("any")) in cached.load().prefixes
        assert plain.load().prefixes == []
    finally:
        cached.close()
        plain.close()


async def test_the_cache_never_holds_more_than_its_bound(default_store: ModelStore) -> None:
    runtime = GenerationRuntime(default_store, CHAT, max_batch_size=2, prefix_cache_mb=4)
    try:
        cache = runtime.prefix_cache
        assert cache is not None
        for n in range(6):
            prompt = f"Story {n}: " + "the fox ran over the hill and back again. " * 20
            await runtime.generate(GenerateRequest(prompt=prompt, max_tokens=2))
            assert cache.bytes <= cache.max_bytes
        assert len(cache) > 0
        assert cache.bytes > cache.max_bytes // 2  # it was full and evicting, not empty
    finally:
        runtime.close()
