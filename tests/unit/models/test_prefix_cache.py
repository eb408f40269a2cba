"""The prefix cache's bookkeeping: chained block names, longest-prefix lookup, LRU in bytes."""

from __future__ import annotations

import numpy as np

from llmnode.agents.models.prefix_cache import PrefixCache


def reader(ids: list[int]):  # type: ignore[no-untyped-def]
    """Blocks of 2 layers whose values are the token ids (so a restored block can be checked)."""

    def read(start: int, stop: int) -> list[np.ndarray]:
        values = np.asarray(ids[start:stop], dtype=np.float32)[None, :, None]
        return [values.copy(), values.copy() * 2]

    return read


def test_a_prompt_sharing_a_prefix_finds_only_the_blocks_of_that_prefix() -> None:
    cache = PrefixCache(max_bytes=1 << 20, block=4)
    first = list(range(100, 114))  # 14 tokens: blocks end at 4, 8, 12 (13 usable)
    cache.store(first, reader(first))
    assert len(cache) == 3
    second = [*first[:9], 7, 7, 7, 7, 7]  # shares 9 tokens: two whole blocks
    found = cache.lookup(second)
    assert len(found) == 2
    assert found[1][0].ravel().tolist() == first[4:8]


def test_the_last_token_is_never_served_from_the_cache() -> None:
    cache = PrefixCache(max_bytes=1 << 20, block=4)
    prompt = list(range(8))
    cache.store(prompt, reader(prompt))
    assert len(cache.lookup(prompt)) == 1  # 8 tokens: only the block ending at 4 is usable


def test_equal_blocks_after_different_prefixes_are_different_entries() -> None:
    cache = PrefixCache(max_bytes=1 << 20, block=2)
    one, two = [1, 2, 5, 6, 0], [3, 4, 5, 6, 0]
    cache.store(one, reader(one))
    assert cache.lookup(two) == []


def test_memory_stays_under_the_bound_evicting_least_recently_used() -> None:
    cache = PrefixCache(max_bytes=3 * 2 * 4 * 4, block=4)  # three blocks of 2 arrays x 4 floats
    prompts = [[n] * 5 for n in range(6)]
    for prompt in prompts[:3]:
        cache.store(prompt, reader(prompt))
    assert cache.lookup(prompts[0])  # now the most recent
    for prompt in prompts[3:5]:
        cache.store(prompt, reader(prompt))
    assert cache.bytes <= cache.max_bytes and len(cache) == 3
    assert cache.lookup(prompts[0]) and not cache.lookup(prompts[1])
    assert not cache.lookup(prompts[2])


def test_a_block_bigger_than_the_bound_is_not_kept() -> None:
    cache = PrefixCache(max_bytes=8, block=4)
    prompt = list(range(9))
    cache.store(prompt, reader(prompt))
    assert len(cache) == 0 and cache.bytes == 0
