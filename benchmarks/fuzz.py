"""Coverage-guided fuzzing (atheris, libFuzzer) of everything that parses bytes from outside.

Targets, each run in its own child process with llmnode instrumented:

- ``frame``: :meth:`Sealer.open` then the message codec on arbitrary frames (seeded with a
  valid frame, so mutations reach past the cheap checks): only :class:`Rejected` may escape;
- ``control_wire``: the control socket's :class:`FrameReader` fed the input in pieces, then the
  codec on every frame: only :class:`Rejected` may escape;
- ``beacon``: :func:`decode_beacon`: returns a result or None, never raises;
- ``body``: msgspec validation of a message body (the codec alone, every message type): only
  :class:`Rejected` may escape. (There is no HTTP API yet; this is the body validation.)

Any other exception is a crash; libFuzzer stops the target and keeps the input
(``crash-*`` in ``--artifacts``). Prints one JSON object as its last line: per target
``executions``, ``crashes``, ``coverage`` (libFuzzer's ``cov:`` edges) and ``seconds``; the
baseline is ``executions`` of an uninstrumented loop over the same inputs for 2 s
(``baseline_exec_s``), so the fuzzer's cost is visible.

Usage: ``python benchmarks/fuzz.py [--runs N] [--targets frame,beacon] [--artifacts DIR]``
(default 1,000,000 runs per target).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("frame", "control_wire", "beacon", "body")
NOW = 1_800_000_000.0


def build(target: str) -> tuple[Callable[[bytes], None], list[bytes]]:
    """The test-one-input function of ``target`` and its seed inputs."""
    from llmnode.bus.identity import Identity  # imported under instrumentation
    from llmnode.bus.keyring import MeshKeyRing
    from llmnode.bus.sealing import Sealer
    from llmnode.errors import Rejected
    from llmnode.nodes.control.wire import FrameReader, frame
    from llmnode.nodes.discovery.beacon import decode_beacon, encode_beacon
    from llmnode.schemas.messages import decode, encode
    from llmnode.schemas.requests import Request

    ring = MeshKeyRing(bytes(range(32)))
    sender = Sealer(Identity(bytes(32)), ring, epoch=1)
    receiver = Sealer(Identity(bytes([1] * 32)), ring, epoch=1)
    request = encode(
        Request(id=bytes(16), service="echo", method="request", payload=b"x", deadline=1.0)
    )
    if target == "frame":

        def one(data: bytes) -> None:
            with contextlib.suppress(Rejected):
                decode(receiver.open(data, NOW).body)

        return one, [sender.seal(receiver.node_id, request, NOW)]
    if target == "control_wire":

        def one(data: bytes) -> None:
            reader = FrameReader(limit=64 * 1024)
            try:
                for start in range(0, len(data), 7):
                    for body in reader.feed(data[start : start + 7]):
                        decode(body)
            except Rejected:
                pass

        return one, [frame(b"token" * 4) + frame(request)]
    if target == "beacon":
        keys = {ring.primary_id: ring.primary}

        def one(data: bytes) -> None:
            decode_beacon(data, keys)

        return one, [encode_beacon(ring.primary, ring.primary_id, bytes(32), "tcp://h:1")]
    if target == "body":

        def one(data: bytes) -> None:
            with contextlib.suppress(Rejected):
                decode(data)

        return one, [request]
    raise SystemExit(f"unknown target {target}")


def child(target: str, runs: int, corpus: str, artifacts: str) -> None:
    import atheris  # type: ignore[import-untyped]

    with atheris.instrument_imports(include=["llmnode", "msgspec"]):
        one, seeds = build(target)
    for index, seed in enumerate(seeds):
        Path(corpus, f"seed{index}").write_bytes(seed)
    argv = [sys.argv[0], f"-runs={runs}", "-print_final_stats=1", "-max_len=4096",
            f"-artifact_prefix={artifacts}/{target}-", corpus]  # fmt: skip
    atheris.Setup(argv, one)
    atheris.Fuzz()


def baseline(target: str) -> float:
    """Inputs per second of the uninstrumented target on random inputs (2 s)."""
    one, _ = build(target)
    count, end = 0, time.perf_counter() + 2.0
    while time.perf_counter() < end:
        one(os.urandom(count % 600))
        count += 1
    return count / 2.0


def run_target(target: str, runs: int, artifacts: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as corpus:
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, __file__, "--child", target, "--runs", str(runs),
             "--corpus", corpus, "--artifacts", artifacts],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
    output = result.stderr
    executed = re.findall(r"stat::number_of_executed_units: (\d+)", output)
    coverage = re.findall(r"cov: (\d+)", output)
    crashed = result.returncode != 0 or "Uncaught Python exception" in output
    return {
        "executions": int(executed[-1]) if executed else 0,
        "crashes": int(crashed),
        "coverage": int(coverage[-1]) if coverage else 0,
        "seconds": round(seconds, 1),
        "baseline_exec_s": round(baseline(target)),
        **({"crash_output": output[-1500:]} if crashed else {}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--artifacts", default=tempfile.gettempdir())
    parser.add_argument("--child", choices=TARGETS)
    parser.add_argument("--corpus", default="")
    arguments = parser.parse_args()
    if arguments.child:
        child(arguments.child, arguments.runs, arguments.corpus, arguments.artifacts)
        return
    results = {
        target: run_target(target, arguments.runs, arguments.artifacts)
        for target in arguments.targets.split(",")
    }
    print(json.dumps({"runs_per_target": arguments.runs, "targets": results}))


if __name__ == "__main__":
    main()
