"""The KV of recently seen prompt prefixes, kept per model in bounded memory (pure, no I/O).

A prompt is cut into blocks of ``block`` tokens; block ``i`` is named by a hash chained over
every token up to its end, so equal names mean equal prefixes. A block holds the keys and values
of its tokens for every layer (copies, not views of the live batch). A new prompt is looked up
block by block from its start: the blocks found are written into its cache slot and only the
rest of the prompt is prefilled. The last two tokens of a prompt are never served from the cache
(the last one's logits are needed; see :data:`MIN_PREFILL` for the other). Blocks are evicted
least recently used first, so the memory held (counted in bytes of the arrays) never exceeds
``max_bytes``; a block whose parent was evicted is unreachable and goes the same way.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

DEFAULT_BLOCK = 32
# A hit always leaves at least this many tokens to prefill. ONNX Runtime's int8 kernels compute
# a one-row prefill with its decode kernels, whose numbers differ from the multi-row ones; with
# two rows or more a prefill computes each position the same whatever the split (measured on
# SmolLM2 int8, bit for bit), so an answer never depends on what the cache held.
MIN_PREFILL = 2
MAX_KEYS = 16  # prompt names advertised (8 bytes each, in the gossiped load)
Block = list[np.ndarray]  # one array per past input (layer x key/value): [heads, block, size]


class PrefixCache:
    def __init__(self, max_bytes: int, block: int = DEFAULT_BLOCK) -> None:
        self.max_bytes = max_bytes
        self.block = block
        self._blocks: OrderedDict[bytes, Block] = OrderedDict()
        self.bytes = 0
        self._keys: OrderedDict[bytes, bytes] = OrderedDict()  # prompt name -> first block
        self.hits = 0  # tokens served from the cache
        self.misses = 0  # prompt tokens prefilled

    def names(self, ids: list[int]) -> list[bytes]:
        """The chained names of the full blocks of ``ids`` before its last token."""
        names: list[bytes] = []
        digest = hashlib.blake2b(digest_size=16)
        usable = (len(ids) - 1) // self.block * self.block
        for start in range(0, usable, self.block):
            digest.update(np.asarray(ids[start : start + self.block], dtype=np.int64).tobytes())
            names.append(digest.copy().digest())
        return names

    def lookup(self, ids: list[int]) -> list[Block]:
        """The cached blocks that begin ``ids`` (marked recently used), in order."""
        found: list[Block] = []
        servable = max(0, len(ids) - MIN_PREFILL) // self.block
        for name in self.names(ids)[:servable]:
            block = self._blocks.get(name)
            if block is None:
                break
            self._blocks.move_to_end(name)
            found.append(block)
        self.hits += len(found) * self.block
        self.misses += len(ids) - len(found) * self.block
        return found

    def store(
        self, ids: list[int], read: Callable[[int, int], Block], key: bytes | None = None
    ) -> None:
        """Keep the blocks of ``ids`` not yet held; ``read(start, stop)`` copies their KV.
        ``key`` names the prompt's prefix for :meth:`keys` (its system prompt's name)."""
        names = self.names(ids)
        if key is not None and names:
            self._keys[key] = names[0]
            self._keys.move_to_end(key)
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        for index, name in enumerate(names):
            if name in self._blocks:
                self._blocks.move_to_end(name)
                continue
            block = read(index * self.block, (index + 1) * self.block)
            size = sum(array.nbytes for array in block)
            if size > self.max_bytes:
                return
            self._blocks[name] = block
            self.bytes += size
            while self.bytes > self.max_bytes:
                _, evicted = self._blocks.popitem(last=False)
                self.bytes -= sum(array.nbytes for array in evicted)

    def __len__(self) -> int:
        return len(self._blocks)

    def keys(self) -> list[bytes]:
        """The names of recent prompt prefixes whose first block is still held (what the node
        advertises: a few bytes each, at most ``MAX_KEYS``)."""
        return [key for key, first in self._keys.items() if first in self._blocks]
