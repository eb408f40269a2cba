"""A bus node process for the integration tests: answers requests over a real Bus (does I/O).

Run ``python echo_node.py --mesh-key TEXT [--allow HEX,HEX] [--window S]``. It prints one JSON
line ``{"node_id": HEX, "address": ADDRESS}`` on stdout once it listens, then serves:

- ``Request(service="echo")``: ``Result`` with the same payload;
- ``Request(service="stats")``: ``Result`` whose data is JSON ``{"rejections", "stats"}``;
- ``Request(service="keyring", method="add"|"use"|"remove", payload=KEY)``: rotates its ring;
- ``Request(service="exit")``: answers, then exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.log import configure
from llmnode.schemas.base import WireMessage
from llmnode.schemas.requests import ErrorReply, Request, Result


async def reply(bus: Bus, peer: bytes, message: WireMessage) -> None:
    """Send, waiting out a full queue (the echo node must not drop replies)."""
    for _ in range(2000):
        if bus.send(peer, message):
            return
        await asyncio.sleep(0.001)
    print("reply_dropped", file=sys.stderr, flush=True)


def answer(bus: Bus, request: Request) -> tuple[WireMessage, bool]:
    if request.service == "echo":
        return Result(id=request.id, data=request.payload), False
    if request.service == "stats":
        data = json.dumps({"rejections": bus.rejections, "stats": bus.stats}).encode()
        return Result(id=request.id, data=data), False
    if request.service == "keyring":
        ring = bus.keyring
        {"add": ring.add, "use": ring.use, "remove": ring.remove}[request.method](request.payload)
        return Result(id=request.id, data=b""), False
    if request.service == "exit":
        return Result(id=request.id, data=b""), True
    return ErrorReply(id=request.id, code="unknown_agent", message=request.service), False


async def serve(arguments: argparse.Namespace) -> None:
    allowlist = (
        [bytes.fromhex(item) for item in arguments.allow.split(",")] if arguments.allow else None
    )
    bus = Bus(
        Identity.generate(),
        MeshKeyRing.from_text(arguments.mesh_key),
        ZmqTransport("tcp://127.0.0.1:0"),
        allowlist=allowlist,
        timestamp_window_s=arguments.window,
    )
    await bus.start()
    print(json.dumps({"node_id": bus.node_id.hex(), "address": bus.address}), flush=True)
    try:
        while True:
            inbound = await bus.receive()
            if not isinstance(inbound.message, Request):
                continue
            response, stop = answer(bus, inbound.message)
            await reply(bus, inbound.sender, response)
            if stop:
                await asyncio.sleep(0.05)
                return
    finally:
        await bus.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mesh-key", required=True)
    parser.add_argument("--allow", default="")
    parser.add_argument("--window", type=float, default=60.0)
    configure("warning", json=True)  # logs go to stderr; stdout carries the ready line
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
