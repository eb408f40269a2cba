"""Real node processes on 127.0.0.1 for integration tests: start, kill, restart, ask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmnode.bus.keyring import MeshKeyRing


def llmnode_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "llmnode", *args]


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    address: str = ""
    node_id: str = ""
    extra: list[str] = field(default_factory=list)
    prefix: list[str] = field(default_factory=list)  # e.g. ``ip netns exec NS``

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *llmnode_command("start", *self.args)],
                env=self.env,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def run_cli(self, *args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            llmnode_command(*args, "--data-dir", str(self.data_dir)),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def status(self) -> dict[str, Any] | None:
        result = self.run_cli("status", "--json")
        return json.loads(result.stdout) if result.returncode == 0 else None

    def peers(self) -> list[dict[str, Any]]:
        result = self.run_cli("peers", "--json")
        if result.returncode != 0:
            raise AssertionError(f"peers failed on {self.name}: {result.stderr}")
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def states(self) -> dict[str, str]:
        return {row["name"]: row["state"] for row in self.peers()}

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


class LocalMesh:
    """N `llmnode start` processes on 127.0.0.1 sharing one mesh key; node 0 is the seed."""

    def __init__(self, root: Path, *, probe_interval: float = 0.2) -> None:
        self.root = root
        self.key = MeshKeyRing.key_to_text(MeshKeyRing.generate_key())
        self.probe_interval = probe_interval
        self.nodes: list[NodeProcess] = []
        self.env = {
            **os.environ,
            "LLMNODE_MESH_KEY": self.key,
            "PYTHONUNBUFFERED": "1",
            "LLMNODE_ORT_THREADS": os.environ.get("LLMNODE_ORT_THREADS", "1"),
        }

    def add(
        self,
        name: str,
        extra: Sequence[str] = (),
        *,
        join: bool = True,
        host: str = "127.0.0.1",
        prefix: Sequence[str] = (),
    ) -> NodeProcess:
        """Start node ``name`` listening on ``host``; ``prefix`` goes before the command (e.g.
        ``ip netns exec NS`` to run it in a network namespace of tests/cluster/netns.py)."""
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--listen",
            f"tcp://{host}:0",
            "--no-beacon",
            "--probe-interval",
            str(self.probe_interval),
            "--log-json",
            *extra,
        ]
        if join and self.nodes:
            seed = self.nodes[0].address.removeprefix("tcp://")
            args += ["--join", seed]
        node = NodeProcess(
            name, data_dir, args, dict(self.env), self.root / f"{name}.log", prefix=list(prefix)
        )
        node.start()
        self.nodes.append(node)
        status = wait_for(node.status, timeout=60, what=f"{name} to start")
        node.address, node.node_id = status["address"], status["node_id"]
        return node

    def restart(self, node: NodeProcess, *, join: NodeProcess | None = None) -> None:
        """Start a stopped ``node`` again on its data dir (it listens on a new port). It joins
        ``join`` where that node listens now, not the seed it first joined (a restarted seed
        has a new address too); with no ``join`` it starts alone."""
        args = list(node.args)
        if "--join" in args:
            at = args.index("--join")
            del args[at : at + 2]
        if join is not None:
            args += ["--join", join.address.removeprefix("tcp://")]
        node.args = args
        node.start()
        status = wait_for(node.status, timeout=60, what=f"{node.name} to restart")
        node.address, node.node_id = status["address"], status["node_id"]

    def wait_converged(self, names: Sequence[str] | None = None, timeout: float = 30.0) -> None:
        live = [n for n in self.nodes if n.alive()]
        expected = set(names) if names is not None else {n.name for n in live}

        def converged() -> bool:
            for node in live:
                states = node.states()
                if {k for k, v in states.items() if v == "alive"} != expected:
                    return False
            return True

        wait_for(converged, timeout=timeout, what=f"mesh to converge on {sorted(expected)}")

    def close(self) -> None:
        for node in self.nodes:
            if node.alive():
                assert node.process is not None
                node.process.send_signal(signal.SIGKILL)
                node.process.wait(10)


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as error:  # a node not up yet: keep polling
            last_error = error
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last_error})")
