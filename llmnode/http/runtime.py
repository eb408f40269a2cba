"""The HTTP face's loops for a node: the server and the API-key watcher (I/O).

The composition root calls :func:`http_loops` and runs what it returns in the node's TaskGroup.
``address`` "" means the default loopback address, best effort (a second node on the same host
finds the port taken and runs without HTTP, with a warning); "off" disables HTTP; anything else
is explicit and must bind, or the node stops with one line.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmnode.errors import ConfigError
from llmnode.http import api_keys
from llmnode.http.app import DEFAULT_HTTP, serve
from llmnode.http.node_gateway import NodeGateway
from llmnode.log import get_logger

if TYPE_CHECKING:
    from llmnode.nodes.node import Node

log = get_logger(__name__)
Loop = Callable[[], Coroutine[Any, Any, None]]


def http_loops(node: Node, address: str) -> list[Loop]:
    """The loops to run in ``node``'s TaskGroup for ``--http address``."""
    data_dir = Path(node.config.data_dir)

    def publish(hashes: list[str]) -> None:
        if hashes != node.api_keys:
            node.api_keys = hashes
            node.state_changed()

    async def watch_keys() -> None:
        await api_keys.watch(data_dir, publish)

    if address == "off":
        return [watch_keys]  # keys made here still work on the other nodes
    gateway = NodeGateway(node)

    async def run_server() -> None:
        await node.ready.wait()
        try:
            await serve(gateway, address or DEFAULT_HTTP)
        except ConfigError as error:
            if address:
                raise
            log.warning("http_unavailable", reason=str(error))

    return [watch_keys, run_server]
