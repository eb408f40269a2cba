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


def test_a_hit_always_leaves_at_least_two_tokens_to_prefill() -> None:
    """A one-token prefill would run the decode kernels (other numbers under int8)."""
    cache = PrefixCache(max_bytes=1 << 20, block=4)
    stored = list(range(30))
    cache.store(stored, reader(stored))
    assert len(cache.lookup(stored[:8])) == 1  # the block ending at 4 (8 would leave none)
    assert len(cache.lookup(stored[:9])) == 1  # the block ending at 8 would leave one
    assert len(cache.lookup(stored[:10])) == 2
    for length in range(1, 31):
        served = len(cache.lookup(stored[:length])) * cache.block
        assert served == 0 or length - served >= 2


def test_equal_blocks_after_different_prefixes_are_different_entries() -> None:
    cache = PrefixCache(max_bytes=1 << 20, block=2)
    one, two = [1, 2, 5, 6, 0], [3, 4, 5, 6, 0]
    cache.store(one, reader(one))
    assert cache.lookup(two) == []


def test_memory_stays_under_the_bound_evicting_least_recently_used() -> None:
    cache = PrefixCache(max_bytes=3 * 2 * 4 * 4, block=4)  # three blocks of 2 arrays x 4 floats
    prompts = [[n] * 6 for n in range(6)]
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
