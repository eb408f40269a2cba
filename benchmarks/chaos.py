"""Chaos: five real nodes under mixed load while something goes wrong every 20 s (does I/O).

Five `llmnode start` processes on 127.0.0.1 (tests/support/mesh.py): ``entry`` (never faulted;
the SDK client connects to it), two nodes serving ``all-minilm-l6-v2`` and two serving
``smollm2-135m-instruct``, each of those four hosting a ``Ledger`` agent. Load, through the
SDK: embeds, streamed chats (8 tokens) and non-idempotent agent requests, ``--concurrency``
loops each; and through the entry node's OpenAI API (benchmarks/chaos_http.py, the official
``openai`` client in a subprocess beside the entry node): streamed chats and embeds,
``--concurrency`` loops each. ``--no-http`` leaves the HTTP half out.

Every ``--every`` seconds one fault, in turn, on the next non-entry node:

- ``kill``: kill -9, then restart it on the same data dir and address;
- ``stop``: SIGSTOP for 10 s, then SIGCONT;
- ``partition``: the node cut off from every other node for 10 s, then healed;
- ``rotate``: a mesh key rotation on every node (``llmnode keys add``, ``use``, ``remove``).

The partition needs network namespaces: with root, ``ip`` and ``nft`` (and unless ``--no-netns``)
every node runs in a namespace of its own on a private bridge (tests/cluster/netns.py; the kernel
has no netem, so the cut is an nftables drop rule on both sides), the SDK and the CLI reaching the
entry node through its control socket in the data dir. Without them the nodes run on 127.0.0.1
and the partition is left out of the cycle (the JSON says ``"partition": false``).

Each agent request carries a unique id that the ``Ledger`` appends to a file; an id written
twice is a duplicated non-idempotent request. A request is ``lost`` if it neither completed nor
failed with a typed :class:`MeshError` within its deadline plus 5 s. Latency p99 is split by
whether the request started in a calm window or within a fault (from the fault until the entry
node again sees every node alive). ``recovery_s`` per fault is the time from the end of the fault
(the node restarted, resumed or healed, the rotation done) until that full view. Prints one JSON
object as its last line: ``sent``, ``completed``, ``failed`` (by error), ``lost``,
``duplicated``, ``p99_calm_ms``, ``p99_faults_ms``, ``recovery_s_max`` (all requests), and
``by_face``: ``sent``/``completed``/``lost`` for the SDK and the HTTP API apiece.

Usage: ``python benchmarks/chaos.py [--minutes 10] [--every 20] [--concurrency 2] [--no-netns]
[--no-http]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parents[1]))

from llmnode.agents.agent import Agent, handler
from llmnode.bus.keyring import MeshKeyRing
from llmnode.client.mesh import Mesh, connect
from llmnode.errors import MeshError
from tests.cluster import netns
from tests.support.mesh import LocalMesh, NodeProcess, wait_for

EMBED = "all-minilm-l6-v2"
CHAT = "smollm2-135m-instruct"
LEDGER_ENV = "LLMNODE_CHAOS_LEDGER"
DEADLINE_S = 20.0
CUT_S = 10.0  # how long a SIGSTOP or a partition lasts
NAMES = ["entry", "embed0", "embed1", "chat0", "chat1"]


class Ledger(Agent):
    """Appends each request's id to the ledger file: the proof of how often it ran."""

    name = "ledger"

    @handler
    async def record(self, message: dict[str, Any]) -> dict[str, Any]:
        with open(os.environ[LEDGER_ENV], "a") as ledger:  # noqa: ASYNC230 - one short line
            ledger.write(f"{message['id']}\n")
        return {"id": message["id"]}


class Recorder:
    def __init__(self) -> None:
        self.sent = 0
        self.completed = 0
        self.failed: Counter[str] = Counter()
        self.examples: dict[str, tuple[float, str]] = {}  # each failure's first (start, message)
        self.lost = 0
        self.by_face: dict[str, Counter[str]] = {"sdk": Counter(), "http": Counter()}
        self.latencies: list[tuple[float, float]] = []  # (start, seconds)
        self.faults: list[tuple[float, float]] = []  # (start, end of recovery)
        self.kinds: list[str] = []  # "kind:node" of each fault, in order

    async def one(self, kind: str, call: Any) -> None:
        start = time.monotonic()
        try:
            await asyncio.wait_for(call(), DEADLINE_S + 5)
        except MeshError as error:
            self.record(kind, start, 0.0, f"failed:{type(error).__name__}", str(error))
            return
        except TimeoutError:
            self.record(kind, start, 0.0, "lost")
            return
        self.record(kind, start, time.monotonic() - start, "ok")

    def record(
        self, kind: str, start: float, seconds: float, outcome: str, message: str = ""
    ) -> None:
        """One request's end: ``ok``, ``failed:<error>`` or ``lost`` (chaos_http.py's lines too)."""
        face = self.by_face["http" if kind.startswith("http") else "sdk"]
        self.sent += 1
        face["sent"] += 1
        if outcome == "ok":
            self.completed += 1
            face["completed"] += 1
            self.latencies.append((start, seconds))
        elif outcome == "lost":
            self.lost += 1
            face["lost"] += 1
        else:
            failure = f"{kind}:{outcome.removeprefix('failed:')}"
            self.failed[failure] += 1
            self.examples.setdefault(failure, (start, message[:300]))
            face["failed"] += 1


async def load(mesh: Mesh, recorder: Recorder, stop: asyncio.Event, kind: str) -> None:
    counter = 0
    while not stop.is_set():
        counter += 1
        if kind == "embed":
            await recorder.one(kind, lambda: mesh.embed(EMBED, "chaos", timeout=DEADLINE_S))
        elif kind == "chat":

            async def chat() -> None:
                async for _ in mesh.generate(CHAT, "Say hi", max_tokens=8, timeout=DEADLINE_S):
                    pass

            await recorder.one(kind, chat)
        else:
            request_id = f"{id(recorder)}-{kind}-{counter}-{time.monotonic_ns()}"
            await recorder.one(
                kind,
                lambda rid=request_id: mesh.request(
                    "ledger", {"id": rid}, timeout=DEADLINE_S, idempotent=False
                ),
            )


def all_alive(entry: NodeProcess, names: set[str]) -> bool:
    try:
        states = entry.states()
    except AssertionError:
        return False
    return {n for n, s in states.items() if s == "alive"} >= names


async def fault(
    kind: str, node: NodeProcess, mesh: LocalMesh, cluster: netns.Cluster | None
) -> None:
    assert node.process is not None
    if kind == "kill":
        node.kill()
        await asyncio.sleep(1.0)
        node.start()
    elif kind == "stop":
        node.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(CUT_S)
        node.process.send_signal(signal.SIGCONT)
    elif kind == "partition":
        assert cluster is not None
        others = [each.name for each in mesh.nodes if each is not node]
        await asyncio.to_thread(cluster.partition, [node.name], others)
        await asyncio.sleep(CUT_S)
        await asyncio.to_thread(cluster.heal)
    else:
        new = MeshKeyRing.key_to_text(MeshKeyRing.generate_key())
        old = mesh.key
        for step in (("add", new), ("use", new), ("remove", old)):
            for each in mesh.nodes:
                await asyncio.to_thread(each.run_cli, "keys", *step)
        mesh.key = new
        for each in mesh.nodes:  # a restart must come back with the new key
            each.env["LLMNODE_MESH_KEY"] = new


def wait_recovered(entry: NodeProcess, names: set[str], kind: str) -> None:
    wait_for(lambda: all_alive(entry, names), timeout=120, what=f"recovery from {kind}")


def p99_ms(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)


def placement(cluster: netns.Cluster | None, name: str) -> dict[str, Any]:
    """Where node ``name`` runs: its own namespace in ``cluster``, else 127.0.0.1."""
    if cluster is None:
        return {}
    node = cluster.node(name)
    return {"host": node.address, "prefix": ["ip", "netns", "exec", node.namespace]}


def start_http_load(
    entry: NodeProcess, cluster: netns.Cluster | None, concurrency: int, out: Path, env: Any
) -> subprocess.Popen[Any]:
    """benchmarks/chaos_http.py where the entry node's loopback is (its namespace, if any)."""
    status = entry.status()
    assert status is not None and status.get("http"), "the entry node serves no HTTP"
    argv = [
        sys.executable,
        str(Path(__file__).with_name("chaos_http.py")),
        f"--url=http://{status['http']}/v1",
        f"--out={out}",
        f"--concurrency={concurrency}",
        f"--deadline={DEADLINE_S}",
    ]
    log = out.with_suffix(".log")
    if cluster is not None:
        return cluster.run("entry", argv, env, log_path=log)
    with log.open("ab") as sink:
        return subprocess.Popen(argv, env=env, stdout=sink, stderr=subprocess.STDOUT)


def finish_http_load(process: subprocess.Popen[Any], out: Path, recorder: Recorder) -> None:
    """Stop the HTTP load, let its requests in flight end, and count its lines."""
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=DEADLINE_S + 30)
    lines = out.read_text().splitlines() if out.exists() else []
    for line in lines:
        each = json.loads(line)
        recorder.record(
            each["kind"], each["start"], each["seconds"], each["outcome"], each.get("message", "")
        )


async def chaos(
    minutes: float, every: float, concurrency: int, use_netns: bool, use_http: bool = True
) -> dict[str, Any]:
    cluster = netns.Cluster(NAMES) if use_netns else None
    with tempfile.TemporaryDirectory() as root, cluster or contextlib.nullcontext():
        mesh = LocalMesh(Path(root))
        mesh.env[LEDGER_ENV] = str(Path(root) / "ledger.txt")
        mesh.env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])
        agent = ["--agent", "benchmarks.chaos:Ledger"]
        http_load: subprocess.Popen[Any] | None = None
        try:
            entry = mesh.add("entry", ["--http", "127.0.0.1:0"], **placement(cluster, "entry"))
            workers = []
            for name in NAMES[1:]:
                serve = ["--model", EMBED if name.startswith("embed") else CHAT, *agent]
                workers.append(mesh.add(name, serve, **placement(cluster, name)))
            names = {n.name for n in mesh.nodes}
            mesh.wait_converged(timeout=120)
            recorder = Recorder()
            stop = asyncio.Event()
            http_out = Path(root) / "http-load.jsonl"
            http_load = (
                start_http_load(entry, cluster, concurrency, http_out, mesh.env)
                if use_http
                else None
            )
            async with connect(entry.data_dir, name="chaos") as client:
                loads = [
                    asyncio.create_task(load(client, recorder, stop, kind))
                    for kind in ("embed", "chat", "agent")
                    for _ in range(concurrency)
                ]
                start = time.monotonic()
                kinds = (
                    ("kill", "stop", "partition", "rotate")
                    if cluster
                    else ("kill", "stop", "rotate")
                )
                index = 0
                recoveries: list[float] = []
                while time.monotonic() - start < minutes * 60:
                    await asyncio.sleep(every)
                    kind = kinds[index % len(kinds)]
                    # Each kind meets every worker in turn (not always the same one).
                    node = workers[(index + index // len(workers)) % len(workers)]
                    index += 1
                    began = time.monotonic()
                    await fault(kind, node, mesh, cluster)
                    ended = time.monotonic()  # restarted, resumed, healed or rotated
                    await asyncio.to_thread(wait_recovered, entry, names, kind)
                    recoveries.append(time.monotonic() - ended)
                    recorder.faults.append((began, time.monotonic()))
                    recorder.kinds.append(f"{kind}:{node.name}")
                stop.set()
                await asyncio.gather(*loads)
                if http_load is not None:
                    await asyncio.to_thread(finish_http_load, http_load, http_out, recorder)
        finally:
            if http_load is not None and http_load.poll() is None:
                http_load.kill()
            for node in mesh.nodes:
                if node.alive():
                    with_signal_cont(node)
                    node.stop()
        ledger = await asyncio.to_thread(read_ledger, Path(mesh.env[LEDGER_ENV]))
    return {**summarize(recorder, recoveries, ledger, minutes), "partition": cluster is not None}


def read_ledger(path: Path) -> Counter[str]:
    """How many times each agent request ran."""
    return Counter(path.read_text().split() if path.exists() else [])


def with_signal_cont(node: NodeProcess) -> None:
    if node.process is not None:
        node.process.send_signal(signal.SIGCONT)


def summarize(
    recorder: Recorder, recoveries: list[float], ledger: Counter[str], minutes: float
) -> dict[str, Any]:
    def in_fault(start: float) -> bool:
        return any(began <= start <= end for began, end in recorder.faults)

    def during(start: float) -> str:
        for (began, end), kind in zip(recorder.faults, recorder.kinds, strict=True):
            if began <= start <= end:
                return f"during {kind}"
        return "calm"

    calm = [seconds for start, seconds in recorder.latencies if not in_fault(start)]
    faulty = [seconds for start, seconds in recorder.latencies if in_fault(start)]
    return {
        "minutes": minutes,
        "faults": len(recoveries),
        "sent": recorder.sent,
        "completed": recorder.completed,
        "failed": dict(recorder.failed),
        "lost": recorder.lost,
        "failure_examples": {
            failure: f"{during(start)}: {message}"
            for failure, (start, message) in recorder.examples.items()
        },
        "by_face": {face: dict(counts) for face, counts in recorder.by_face.items()},
        "duplicated": sum(1 for count in ledger.values() if count > 1),
        "p99_calm_ms": p99_ms(calm),
        "p99_faults_ms": p99_ms(faulty),
        "fault_kinds": recorder.kinds,
        "recovery_s": [round(value, 1) for value in recoveries],
        "recovery_s_max": round(max(recoveries), 1) if recoveries else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--no-netns", action="store_true", help="stay on 127.0.0.1 (no partition fault)"
    )
    parser.add_argument("--no-http", action="store_true", help="load through the SDK only")
    arguments = parser.parse_args()
    missing = None if arguments.no_netns else netns.missing_requirements()
    if missing is not None:
        print(f"no partition fault: {missing}", file=sys.stderr)
    use_netns = not arguments.no_netns and missing is None
    result = chaos(
        arguments.minutes,
        arguments.every,
        arguments.concurrency,
        use_netns,
        use_http=not arguments.no_http,
    )
    print(json.dumps(asyncio.run(result)))


if __name__ == "__main__":
    main()
