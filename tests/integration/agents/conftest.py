"""Real ``llmnode start`` processes on 127.0.0.1 for the agent and SDK tests.

Each node gets a temporary data dir, the same mesh key, a bus on a random loopback port and its
control socket in the data dir; the first node is every other node's seed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from llmnode.agents.models.store import default_root
from llmnode.client.sync import SyncMesh, connect_sync
from llmnode.errors import MeshError

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
CLI = [sys.executable, "-c", "from llmnode.cli.main import main; main()"]
START_TIMEOUT = 60.0


def model_store_root() -> Path:
    configured = os.environ.get("LLMNODE_TEST_STORE")
    # The default store: scripts/install has already pulled the default models into it.
    return Path(configured) if configured else default_root()


@dataclass
class NodeProcess:
    name: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path
    address: str = ""
    node_id: str = ""

    def connect(self, name: str = "test") -> SyncMesh:
        return connect_sync(self.data_dir, name=name)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    root: Path
    mesh_key: str
    nodes: list[NodeProcess] = field(default_factory=list)

    def environment(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(ROOT), environment.get("PYTHONPATH", "")]
        )
        environment["LLMNODE_MESH_KEY"] = self.mesh_key
        environment.pop("LLMNODE_DATA_DIR", None)
        environment.update(extra or {})
        return environment

    def start(
        self,
        name: str,
        *,
        agents: list[str] = (),  # type: ignore[assignment]
        models: list[str] = (),  # type: ignore[assignment]
        env: dict[str, str] | None = None,
    ) -> NodeProcess:
        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*CLI, "init", "--data-dir", str(data_dir), "--mesh-key", self.mesh_key],
            check=True,
            capture_output=True,
            env=self.environment(),
        )
        command = [
            *CLI,
            "start",
            "--data-dir",
            str(data_dir),
            "--name",
            name,
            "--listen",
            "tcp://127.0.0.1:0",
            "--no-beacon",
            "--probe-interval",
            "0.2",
            "--log-json",
        ]
        if self.nodes:
            command += ["--join", self.nodes[0].address.removeprefix("tcp://")]
        for agent in agents:
            command += ["--agent", f"mesh_test_agents:{agent}" if ":" not in agent else agent]
        for model in models:
            command += ["--model", model, "--model-store", str(model_store_root())]
        log_path = self.root / f"{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=self.environment(env),
                cwd=ROOT,
            )
        node = NodeProcess(name, data_dir, process, log_path)
        self.nodes.append(node)
        status = self._wait_ready(node)
        node.address = status["address"]
        node.node_id = status["node_id"]
        return node

    def _wait_ready(self, node: NodeProcess) -> dict[str, object]:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if node.process.poll() is not None:
                raise AssertionError(f"node {node.name} exited:\n{node.log()}")
            if (node.data_dir / "control.address").exists():
                with contextlib.suppress(MeshError), node.connect() as mesh:
                    return mesh.status()
            time.sleep(0.2)
        raise AssertionError(f"node {node.name} did not start:\n{node.log()}")

    def wait_for(
        self, node: NodeProcess, service: str, replicas: int, timeout: float = 30.0
    ) -> None:
        """Until ``node`` sees ``replicas`` alive nodes hosting ``service``."""
        deadline = time.monotonic() + timeout
        seen = 0
        with node.connect() as mesh:
            while time.monotonic() < deadline:
                peers = mesh.peers()
                seen = sum(
                    1
                    for peer in peers
                    if peer.get("state") == "alive"
                    and any(s.get("name") == service for s in peer.get("services", []))
                )
                if seen >= replicas:
                    return
                time.sleep(0.2)
        raise AssertionError(f"{node.name} sees {seen} of {replicas} {service!r}: {peers}")

    def kill(self, node: NodeProcess) -> None:
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=10)

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                node.process.kill()
                node.process.wait(timeout=5)


def new_mesh_key() -> str:
    result = subprocess.run(
        [*CLI, "init", "--print-mesh-key"], check=True, capture_output=True, text=True
    )
    return result.stdout.strip().splitlines()[-1]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    running = Cluster(tmp_path, new_mesh_key())
    yield running
    running.stop_all()


@pytest.fixture(scope="module")
def module_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    running = Cluster(tmp_path_factory.mktemp("mesh"), new_mesh_key())
    yield running
    running.stop_all()
