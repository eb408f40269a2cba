"""Fixtures for the bus integration tests: echo node processes and a request client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import select
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.transport import Transport
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.schemas.base import WireMessage
from llmnode.schemas.requests import Request

ECHO_NODE = Path(__file__).with_name("echo_node.py")


@dataclass
class EchoNode:
    process: subprocess.Popen[bytes]
    node_id: bytes
    address: str
    mesh_key_text: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def _limit_fds(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def launch_echo_node(
    mesh_key_text: str,
    log_path: Path,
    allow: list[bytes] | None = None,
    window: float = 60.0,
    fd_limit: int | None = None,
) -> EchoNode:
    # "--mesh-key=TEXT": urlsafe base64 may start with "-", which argparse takes for an option
    command = [sys.executable, str(ECHO_NODE), f"--mesh-key={mesh_key_text}", f"--window={window}"]
    if allow:
        command += ["--allow", ",".join(node_id.hex() for node_id in allow)]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=log_file,
            preexec_fn=None if fd_limit is None else _limit_fds(fd_limit),  # noqa: PLW1509
        )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    line = process.stdout.readline() if ready else b""
    try:
        info = json.loads(line)
    except ValueError as error:
        process.kill()
        process.wait()
        process.stdout.close()
        log = log_path.read_text()[-2000:]
        raise RuntimeError(f"echo node did not start: {line!r} {log}") from error
    return EchoNode(
        process, bytes.fromhex(info["node_id"]), info["address"], mesh_key_text, log_path
    )


def stop_echo_node(node: EchoNode) -> None:
    if node.process.poll() is None:
        node.process.terminate()
        try:
            node.process.wait(5)
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()
    if node.process.stdout is not None:
        node.process.stdout.close()


@pytest.fixture
def start_echo(tmp_path: Path) -> Iterator[Callable[..., EchoNode]]:
    """Start echo node processes; all are stopped at teardown."""
    started: list[EchoNode] = []

    def start(
        mesh_key_text: str,
        allow: list[bytes] | None = None,
        window: float = 60.0,
        fd_limit: int | None = None,
    ) -> EchoNode:
        log_path = tmp_path / f"echo{len(started)}.log"
        node = launch_echo_node(mesh_key_text, log_path, allow, window, fd_limit)
        started.append(node)
        return node

    yield start
    for node in started:
        stop_echo_node(node)


class RecordingTransport(ZmqTransport):
    """A real zmq transport that also keeps every raw frame it sent and received."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sent_frames: list[bytes] = []
        self.received_frames: list[bytes] = []

    def send(self, address: str, frame: bytes) -> bool:
        self.sent_frames.append(frame)
        return super().send(address, frame)

    async def recv(self) -> bytes:
        frame = await super().recv()
        self.received_frames.append(frame)
        return frame


@dataclass
class Client:
    """Requests over a Bus to one peer, replies matched by request id."""

    bus: Bus
    peer: bytes
    waiting: dict[bytes, asyncio.Future[WireMessage]] = field(default_factory=dict)
    arrivals: list[WireMessage] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            inbound = await self.bus.receive()
            message = inbound.message
            self.arrivals.append(message)
            future = self.waiting.pop(getattr(message, "id", b""), None)
            if future is not None and not future.done():
                future.set_result(message)

    def submit(self, service: str, payload: bytes = b"", method: str = "request") -> Any:
        request_id = os.urandom(16)
        future: asyncio.Future[WireMessage] = asyncio.get_running_loop().create_future()
        self.waiting[request_id] = future
        request = Request(
            id=request_id,
            service=service,
            method=method,
            payload=payload,
            deadline=time.time() + 30,
        )
        assert self.bus.send(self.peer, request), "send refused (queue full or unknown peer)"
        return future

    async def call(self, service: str, payload: bytes = b"", method: str = "request") -> Any:
        """One request; a reply missing for 10 s fails the test (it would mean a lost one)."""
        return await asyncio.wait_for(self.submit(service, payload, method), 10)

    async def counters(self) -> dict[str, dict[str, int]]:
        result = await self.call("stats")
        counters: dict[str, dict[str, int]] = json.loads(result.data)
        return counters

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    """Connect a Bus (its own identity unless given) to an echo node; closed at teardown."""
    made: list[Client] = []

    async def make(
        node: EchoNode,
        identity: Identity | None = None,
        transport: Transport | None = None,
        keyring: MeshKeyRing | None = None,
    ) -> Client:
        bus = Bus(
            identity or Identity.generate(),
            keyring or MeshKeyRing.from_text(node.mesh_key_text),
            transport or ZmqTransport(),
        )
        await bus.start()
        peer = await bus.connect(node.address, timeout=10)
        assert peer == node.node_id
        client = Client(bus, peer)
        client.start()
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
        await client.bus.close()


@pytest.fixture
def recording_transport() -> type[RecordingTransport]:
    """The RecordingTransport class (test modules cannot import conftest directly)."""
    return RecordingTransport
