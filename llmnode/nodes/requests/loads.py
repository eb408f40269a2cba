"""Load on demand: ask a few sampled candidates for their load when ours is stale (no I/O but
the send it is given).

Load is not gossiped (the state record carries capabilities, re-signed only when they change):
a caller learns a node's load from the replies of the requests it sends there (``Accept`` and
``Result``), and, when that knowledge is older than ``stale_s`` for the candidates it is about
to choose among, from a :class:`LoadQuery` to at most ``probes`` of them, sampled at random
(Sparrow's batch sampling: d·m probes for m requests, here m = 1 and d = 2), waiting at most
``wait_s`` for the answers. Whatever has not answered by then is chosen on what is known.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Sequence

from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.requests.scheduler import Candidate
from llmnode.schemas.base import WireMessage
from llmnode.schemas.requests import LoadQuery, LoadReport

PROBES = 2


def stale_sample(
    candidates: Sequence[Candidate], now: float, stale_s: float, probes: int, rng: random.Random
) -> list[Candidate]:
    """Up to ``probes`` remote candidates, at random, whose load is older than ``stale_s``."""
    stale = [c for c in candidates if not c.is_local and now - c.gossip_time > stale_s]
    if len(stale) <= probes:
        return stale
    return rng.sample(stale, probes)


class LoadSampler:
    def __init__(
        self,
        view: MeshView,
        send: Callable[[bytes, WireMessage], bool],
        clock: Callable[[], float],
        *,
        stale_s: float,
        wait_s: float,
        probes: int = PROBES,
        rng: random.Random | None = None,
    ) -> None:
        self._view = view
        self._send = send
        self._clock = clock
        self.stale_s = stale_s
        self.wait_s = wait_s
        self.probes = probes
        self._rng = rng or random.Random()
        self._waiting: dict[bytes, tuple[bytes, asyncio.Future[None]]] = {}
        self.sent = 0
        self.answered = 0

    async def refresh(self, candidates: Sequence[Candidate]) -> bool:
        """Query a stale sample of ``candidates``; True when at least one answered in time."""
        sample = stale_sample(candidates, self._clock(), self.stale_s, self.probes, self._rng)
        if not sample:
            return False
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[None]] = []
        ids: list[bytes] = []
        for candidate in sample:
            query = LoadQuery(id=os.urandom(16), service=candidate.service)
            future: asyncio.Future[None] = loop.create_future()
            self._waiting[query.id] = (candidate.node, future)
            if self._send(candidate.node, query):
                self.sent += 1
                futures.append(future)
                ids.append(query.id)
            else:
                del self._waiting[query.id]
        try:
            if futures:
                await asyncio.wait(futures, timeout=self.wait_s)
        finally:
            for query_id in ids:
                self._waiting.pop(query_id, None)
        return any(future.done() for future in futures)

    def on_report(self, sender: bytes, report: LoadReport) -> None:
        """An answer: note the load in the view and wake the caller waiting for it."""
        # a node's own load, whoever asked (placement asks too)
        self._view.observe_reply(sender, report.service, report, self._clock())
        waiting = self._waiting.get(report.id)
        if waiting is None or waiting[0] != sender:
            return
        self.answered += 1
        if not waiting[1].done():
            waiting[1].set_result(None)
