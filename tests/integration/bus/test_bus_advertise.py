"""The address a node advertises is decided in one place, the zmq transport (real sockets)."""

from __future__ import annotations

import pytest

from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.cli.runner import build_transport
from llmnode.schemas.config import NodeConfig


@pytest.mark.parametrize("listen", ["tcp://0.0.0.0:0", "tcp://*:0"])
async def test_listening_on_every_interface_advertises_this_host_with_the_bound_port(
    listen: str,
) -> None:
    transport = build_transport(NodeConfig(listen=listen))
    assert isinstance(transport, ZmqTransport)
    await transport.start()
    try:
        host, port = transport.address.removeprefix("tcp://").rsplit(":", 1)
        assert host not in ("0.0.0.0", "*", "")
        assert int(port) > 0
    finally:
        await transport.close()


async def test_the_configured_advertise_address_wins() -> None:
    transport = build_transport(
        NodeConfig(listen="tcp://0.0.0.0:0", advertise="tcp://node-a.example:7000")
    )
    await transport.start()
    try:
        assert transport.address == "tcp://node-a.example:7000"
    finally:
        await transport.close()
