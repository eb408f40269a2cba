"""The broadcast queue: gossip items sent a bounded number of times, least sent first (no I/O).

Like memberlist's TransmitLimitedQueue: each item has a key (the node it is about, or the
origin of a record, queued as its :class:`RecordVersion` announcement); a newer item with the
same key replaces the older one. ``take`` fills a byte budget with the least-transmitted items
(newest first among equals) and drops items that reached the retransmit limit.
"""

from __future__ import annotations

from collections.abc import Hashable

from llmnode.schemas.membership import GossipItem, RecordVersion, item_size

Queued = GossipItem | RecordVersion


class _Broadcast:
    __slots__ = ("identity", "item", "size", "transmits")

    def __init__(self, item: Queued, identity: int) -> None:
        self.item = item
        self.size = item_size(item)
        self.transmits = 0
        self.identity = identity


class BroadcastQueue:
    def __init__(self, max_items: int) -> None:
        self._items: dict[Hashable, _Broadcast] = {}
        self._counter = 0
        self._max_items = max_items

    def __len__(self) -> int:
        return len(self._items)

    def enqueue(self, key: Hashable, item: Queued) -> None:
        """Queue ``item``, replacing any older item about the same ``key``."""
        self._counter += 1
        self._items[key] = _Broadcast(item, self._counter)
        if len(self._items) > self._max_items:
            oldest = min(self._items, key=lambda k: self._items[k].identity)
            del self._items[oldest]

    def take(self, budget: int, transmit_limit: int) -> list[Queued]:
        """Items that fit ``budget`` bytes, least transmitted first; counts the transmission."""
        if not self._items:
            return []
        chosen: list[Queued] = []
        ordered = sorted(
            self._items.items(), key=lambda pair: (pair[1].transmits, -pair[1].identity)
        )
        for key, broadcast in ordered:
            if broadcast.size > budget:
                continue
            budget -= broadcast.size
            chosen.append(broadcast.item)
            broadcast.transmits += 1
            if broadcast.transmits >= transmit_limit:
                del self._items[key]
            if budget < 40:  # smaller than any item
                break
        return chosen
