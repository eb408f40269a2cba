"""Joining through seed addresses: resolve each seed off the event loop, handshake, retry (I/O).

``--join`` takes ``HOST:PORT``, ``HOST`` or ``tcp://HOST:PORT``; DNS names are resolved with the
event loop's ``getaddrinfo`` (a worker thread), so a slow resolver never delays the acks that
keep this node from being suspected. Seeds that do not answer are retried with backoff until one
has; a seed that refuses our mesh key says so in one line.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

from llmnode.bus.admission import MeshKeyRefused
from llmnode.bus.bus import Bus
from llmnode.bus.identity import node_id_to_text
from llmnode.errors import MeshError, TransportError
from llmnode.log import get_logger
from llmnode.schemas.config import DEFAULT_PORT

log = get_logger(__name__)

Joined = Callable[[bytes, str], None]


def split_seed(seed: str) -> tuple[str, int]:
    """``host:port``, ``host`` or ``tcp://host:port`` → (host, port)."""
    text = seed.removeprefix("tcp://")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(DEFAULT_PORT))
    if not host:
        host, port = text, str(DEFAULT_PORT)
    try:
        return host, int(port)
    except ValueError as error:
        raise TransportError(f"cannot resolve seed {seed!r}: bad port {port!r}") from error


async def seed_address(seed: str) -> str:
    """The zmq address of ``seed``, resolved without blocking the event loop."""
    host, port = split_seed(seed)
    loop = asyncio.get_running_loop()
    try:
        found = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_STREAM)
        address = found[0][4][0]
    except (OSError, IndexError) as error:
        raise TransportError(f"cannot resolve seed {seed!r}: {error}") from error
    return f"tcp://{address}:{port}"


async def join_seeds(bus: Bus, seeds: list[str], joined: Joined) -> None:
    """Handshake with every seed until each answered; ``joined(peer, address)`` for each."""
    pending = list(seeds)
    delay = 0.2
    while pending:
        for seed in list(pending):
            try:
                address = await seed_address(seed)
                if address == bus.address:
                    pending.remove(seed)
                    continue
                peer = await bus.connect(address, timeout=2.0)
            except MeshKeyRefused as error:  # a clear line, not "unreachable"
                log.warning("seed_refused_mesh_key", seed=seed, reason=str(error))
                continue
            except MeshError as error:
                log.info("seed_unreachable", seed=seed, reason=str(error))
                continue
            pending.remove(seed)
            joined(peer, address)
            log.info("joined_via_seed", seed=seed, peer=node_id_to_text(peer)[:12])
        if pending:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
