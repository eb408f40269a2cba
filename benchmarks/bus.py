"""Benchmark of the secure bus against raw pyzmq, two processes on 127.0.0.1 (does I/O).

One run measures, with 200-byte payloads:

- raw: pyzmq ROUTER inbox + DEALER per peer (the bus's own layout and socket options),
  zmq.asyncio, two processes: request/reply RTT (p50, p99) and one-way throughput;
- crypto: seal + open of one frame in process (sign + encrypt + verify + decrypt), and open
  alone (verify + decrypt, the receiver's share);
- bus_open: the Bus without admission (plain ZeroMQ, as before CurveZMQ admission): RTT and
  throughput, the baseline of admission's cost (``admission_rtt_ratio``,
  ``admission_throughput_ratio``);
- bus: llmnode Bus over ZmqTransport with admission, same processes and pattern: RTT and
  throughput; then RTT again while an outsider attacks (one plain DEALER sending 64 x 1 MiB
  multipart messages in a loop, one wrong-key CURVE DEALER doing the same, and 1,500 idle TCP
  connections): ``attack_rtt_p99_us`` against the calm ``bus_rtt_p99_us`` (target <= 2x).

Targets: bus p50 RTT <= 1.5 x (raw RTT + 2 x crypto cost); bus throughput >=
0.6 x 1 / (verify + decrypt). Prints one JSON object as its last line.

Usage: ``python benchmarks/bus.py [--quick]``. The server side runs as a child process of
this script (``--serve raw|bus``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

import zmq
import zmq.asyncio

from llmnode.bus.admission import configure_client
from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.sealing import Sealer
from llmnode.bus.zmq_transport import ZmqTransport
from llmnode.log import configure
from llmnode.schemas.base import MAX_FRAME_BYTES
from llmnode.schemas.messages import encode
from llmnode.schemas.requests import OneWay, Request, Result

PAYLOAD = os.urandom(200)
HIGH_WATER_MARK = 1000


# -- raw pyzmq, the baseline -----------------------------------------------------------------


def raw_sockets(context: zmq.asyncio.Context) -> tuple[zmq.asyncio.Socket, str]:
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.LINGER, 0)
    router.setsockopt(zmq.ROUTER_HANDOVER, 1)
    router.setsockopt(zmq.RCVHWM, HIGH_WATER_MARK)
    router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    return router, f"tcp://127.0.0.1:{port}"


def raw_dealer(context: zmq.asyncio.Context, address: str) -> Any:
    dealer: Any = zmq.Context.shadow(context.underlying).socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.SNDTIMEO, 0)
    dealer.setsockopt(zmq.IMMEDIATE, 1)
    dealer.setsockopt(zmq.SNDHWM, HIGH_WATER_MARK)
    dealer.connect(address)
    return dealer


async def raw_send(dealer: Any, frame: bytes) -> None:
    while True:
        try:
            dealer.send(frame, zmq.NOBLOCK)
            return
        except zmq.Again:
            await asyncio.sleep(0.0002)


async def serve_raw() -> None:
    context = zmq.asyncio.Context()
    router, address = raw_sockets(context)
    print(json.dumps({"address": address}), flush=True)
    dealer: Any = None
    count = 0
    while True:
        _, frame = await router.recv_multipart()
        kind = frame[:1]
        if kind == b"O":
            count += 1
        elif kind == b"P" and dealer is not None:
            await raw_send(dealer, frame)
        elif kind == b"H":
            dealer = raw_dealer(context, frame[1:].decode())
            await asyncio.sleep(0.05)
            await raw_send(dealer, b"H")
        elif kind == b"D" and dealer is not None:
            await raw_send(dealer, b"D" + count.to_bytes(8, "big"))
            count = 0
        elif kind == b"X":
            return


async def client_raw(server: str, rtt_count: int, throughput_count: int) -> dict[str, Any]:
    context = zmq.asyncio.Context()
    router, address = raw_sockets(context)
    dealer = raw_dealer(context, server)
    for _ in range(500):  # IMMEDIATE: wait for the connection
        try:
            dealer.send(b"H" + address.encode(), zmq.NOBLOCK)
            break
        except zmq.Again:
            await asyncio.sleep(0.01)
    await router.recv_multipart()
    samples = []
    frame = b"P" + PAYLOAD
    for index in range(rtt_count + 200):
        start = time.perf_counter()
        await raw_send(dealer, frame)
        await router.recv_multipart()
        if index >= 200:
            samples.append(time.perf_counter() - start)
    one_way = b"O" + PAYLOAD
    start = time.perf_counter()
    for _ in range(throughput_count):
        await raw_send(dealer, one_way)
    await raw_send(dealer, b"D")
    _, reply = await router.recv_multipart()
    elapsed = time.perf_counter() - start
    received = int.from_bytes(reply[1:], "big")
    await raw_send(dealer, b"X")
    await asyncio.sleep(0.05)
    dealer.close()
    router.close()
    context.term()
    return summarize(samples, received, elapsed, throughput_count)


# -- the llmnode bus ---------------------------------------------------------------------------


class OpenTransport(ZmqTransport):
    """The transport without admission: the baseline that measures admission's cost."""

    def use_keyring(self, keyring: MeshKeyRing) -> None:
        return None


def make_transport(admission: bool) -> ZmqTransport:
    return ZmqTransport() if admission else OpenTransport()


def attack(address: str, stop: threading.Event) -> None:
    """An outsider: many-part messages (no CURVE, and CURVE with a wrong key), idle sockets."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    idle = []
    for _ in range(1500):
        sock = socket.socket()
        sock.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            sock.connect((host, int(port)))
        idle.append(sock)
    context = zmq.Context()
    dealers = []
    for mesh_key in (None, MeshKeyRing.generate_key()):
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.setsockopt(zmq.SNDTIMEO, 0)
        if mesh_key is not None:
            configure_client(dealer, mesh_key)
        dealer.connect(address)
        dealers.append(dealer)
    chunk = zmq.Frame(bytes(1024 * 1024))
    while not stop.is_set():
        for dealer in dealers:
            with contextlib.suppress(zmq.Again):
                dealer.send_multipart([chunk] * 64, copy=False)
        stop.wait(0.05)
    for dealer in dealers:
        dealer.close()
    context.term()
    for sock in idle:
        sock.close()


async def serve_bus(mesh_key: str, admission: bool) -> None:
    bus = Bus(Identity.generate(), MeshKeyRing.from_text(mesh_key), make_transport(admission))
    await bus.start()
    print(json.dumps({"address": bus.address}), flush=True)
    count = 0
    while True:
        inbound = await bus.receive()
        message = inbound.message
        if isinstance(message, OneWay):
            count += 1
            continue
        if not isinstance(message, Request):
            continue
        if message.service == "echo":
            reply = Result(id=message.id, data=message.payload)
        elif message.service == "done":
            reply = Result(id=message.id, data=count.to_bytes(8, "big"))
            count = 0
        else:
            await bus.close()
            return
        await bus_send(bus, inbound.sender, reply)


async def bus_send(bus: Bus, peer: bytes, message: Any) -> None:
    """Send, polling while the peer's queue is full (as raw_send does: the same policy)."""
    while not bus.send(peer, message):  # noqa: ASYNC110 - a full queue has no event to wait on
        await asyncio.sleep(0.0002)


async def rtt_samples(bus: Bus, peer: bytes, rtt_count: int) -> list[float]:
    samples = []
    for index in range(rtt_count + 200):
        request = Request(
            id=index.to_bytes(16, "big"),
            service="echo",
            method="request",
            payload=PAYLOAD,
            deadline=0.0,
        )
        start = time.perf_counter()
        await bus_send(bus, peer, request)
        await bus.receive()
        if index >= 200:
            samples.append(time.perf_counter() - start)
    return samples


async def client_bus(
    server: str, mesh_key: str, rtt_count: int, throughput_count: int, admission: bool
) -> dict[str, Any]:
    bus = Bus(Identity.generate(), MeshKeyRing.from_text(mesh_key), make_transport(admission))
    await bus.start()
    peer = await bus.connect(server, timeout=10)
    samples = await rtt_samples(bus, peer, rtt_count)
    attack_p99_us = 0.0
    if admission:
        stop = threading.Event()
        attacker = threading.Thread(target=attack, args=(server, stop))
        attacker.start()
        await asyncio.sleep(1.0)
        under_attack = await rtt_samples(bus, peer, rtt_count)
        stop.set()
        attacker.join()
        attack_p99_us = statistics.quantiles(under_attack, n=100)[98] * 1e6
    one_way = OneWay(service="sink", payload=PAYLOAD)
    start = time.perf_counter()
    for _ in range(throughput_count):
        await bus_send(bus, peer, one_way)
    done = Request(id=bytes(16), service="done", method="request", payload=b"", deadline=0.0)
    await bus_send(bus, peer, done)
    reply = (await bus.receive()).message
    elapsed = time.perf_counter() - start
    assert isinstance(reply, Result)
    received = int.from_bytes(reply.data, "big")
    exit_request = Request(id=bytes(16), service="exit", method="r", payload=b"", deadline=0.0)
    await bus_send(bus, peer, exit_request)
    await asyncio.sleep(0.05)
    await bus.close()
    return summarize(samples, received, elapsed, throughput_count) | {
        "attack_rtt_p99_us": attack_p99_us
    }


# -- crypto in process ---------------------------------------------------------------------------


def crypto_costs(count: int) -> tuple[float, float]:
    """(seal + open, open alone) of one frame carrying a 200-byte-payload message, in µs."""
    ring = MeshKeyRing.generate()
    sender = Sealer(Identity.generate(), ring, epoch=1)
    receiver = Sealer(Identity.generate(), ring, epoch=1)
    body = encode(
        Request(id=bytes(16), service="echo", method="request", payload=PAYLOAD, deadline=0.0)
    )
    now = time.time()
    receiver.open(sender.seal(receiver.node_id, body, now), now)  # warm the key cache
    start = time.perf_counter()
    frames = [sender.seal(receiver.node_id, body, now) for _ in range(count)]
    sealed = time.perf_counter()
    for frame in frames:
        receiver.open(frame, now)
    opened = time.perf_counter()
    seal_us = (sealed - start) / count * 1e6
    open_us = (opened - sealed) / count * 1e6
    return seal_us + open_us, open_us


# -- driver --------------------------------------------------------------------------------------


def summarize(samples: list[float], received: int, elapsed: float, sent: int) -> dict[str, Any]:
    ordered = sorted(samples)
    return {
        "rtt_p50_us": statistics.median(ordered) * 1e6,
        "rtt_p99_us": ordered[int(len(ordered) * 0.99) - 1] * 1e6,
        "throughput_msg_s": received / elapsed,
        "lost": sent - received,
    }


def start_server(mode: str, mesh_key: str) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", mode, f"--mesh-key={mesh_key}"],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    return process, json.loads(line)["address"]


def run(quick: bool) -> dict[str, Any]:
    rtt_count = 500 if quick else 3000
    throughput_count = 5000 if quick else 30000
    mesh_key = MeshKeyRing.key_to_text(MeshKeyRing.generate_key())
    results: dict[str, Any] = {}
    # crypto is measured before and after the network runs; the lower (less disturbed) of the
    # two is used, which makes both targets stricter, never looser
    costs = [crypto_costs(1000 if quick else 5000)]
    for mode in ("raw", "bus_open", "bus"):
        process, address = start_server(mode, mesh_key)
        try:
            if mode == "raw":
                measured = asyncio.run(client_raw(address, rtt_count, throughput_count))
            else:
                measured = asyncio.run(
                    client_bus(address, mesh_key, rtt_count, throughput_count, mode == "bus")
                )
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
        results[mode] = measured
    costs.append(crypto_costs(1000 if quick else 5000))
    crypto_us = min(cost[0] for cost in costs)
    open_us = min(cost[1] for cost in costs)
    raw, bus, bus_open = results["raw"], results["bus"], results["bus_open"]
    rtt_target = 1.5 * (raw["rtt_p50_us"] + 2 * crypto_us)
    throughput_target = 0.6 * 1e6 / open_us
    return {
        "payload_bytes": len(PAYLOAD),
        "raw_rtt_p50_us": round(raw["rtt_p50_us"], 1),
        "raw_rtt_p99_us": round(raw["rtt_p99_us"], 1),
        "raw_throughput_msg_s": round(raw["throughput_msg_s"]),
        "crypto_cost_us": round(crypto_us, 1),
        "open_cost_us": round(open_us, 1),
        "bus_rtt_p50_us": round(bus["rtt_p50_us"], 1),
        "bus_rtt_p99_us": round(bus["rtt_p99_us"], 1),
        "bus_throughput_msg_s": round(bus["throughput_msg_s"]),
        "rtt_ratio": round(bus["rtt_p50_us"] / (raw["rtt_p50_us"] + 2 * crypto_us), 3),
        "throughput_ratio": round(bus["throughput_msg_s"] * open_us / 1e6, 3),
        "rtt_target_us": round(rtt_target, 1),
        "throughput_target_msg_s": round(throughput_target),
        "rtt_ok": bus["rtt_p50_us"] <= rtt_target,
        "throughput_ok": bus["throughput_msg_s"] >= throughput_target,
        "raw_lost": raw["lost"],
        "bus_lost": bus["lost"],
        "bus_open_rtt_p50_us": round(bus_open["rtt_p50_us"], 1),
        "bus_open_throughput_msg_s": round(bus_open["throughput_msg_s"]),
        "admission_rtt_ratio": round(bus["rtt_p50_us"] / bus_open["rtt_p50_us"], 3),
        "admission_throughput_ratio": round(
            bus["throughput_msg_s"] / bus_open["throughput_msg_s"], 3
        ),
        "attack_rtt_p99_us": round(bus["attack_rtt_p99_us"], 1),
        "attack_p99_ratio": round(bus["attack_rtt_p99_us"] / bus["rtt_p99_us"], 3),
        "attack_ok": bus["attack_rtt_p99_us"] <= 2 * bus["rtt_p99_us"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", choices=["raw", "bus_open", "bus"])
    parser.add_argument("--mesh-key", default="")
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    configure("error", json=True)  # the attacked server's refusal lines are not the figures
    if arguments.serve == "raw":
        asyncio.run(serve_raw())
    elif arguments.serve is not None:
        asyncio.run(serve_bus(arguments.mesh_key, arguments.serve == "bus"))
    else:
        print(json.dumps(run(arguments.quick)))


if __name__ == "__main__":
    main()
