"""Real `llmnode start` nodes in network namespaces: membership under partitions and loss,
and the docker-compose topology answering through the example application."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import compose
import netns
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MakeCluster = Callable[[Sequence[str] | int], netns.Cluster]
PORT = 7946
PEERS_COMMAND = ("llmnode", "peers", "--json")
FORMATION_BOUND_S = 60.0  # five nodes on 2 busy cores: process start-up dominates
DETECTION_BOUND_S = 30.0  # probe 0.2 s: suspicion ≈ 4-6 × log(N) probe periods, then gossip
RECOVERY_BOUND_S = 45.0  # after heal: rejoin through the seed / push-pull, then gossip


class MeshNodes:
    """`llmnode start` processes, one per namespace, each with its own data dir."""

    def __init__(self, cluster: netns.Cluster, work_dir: Path, mesh_key: str) -> None:
        self.cluster = cluster
        self.work_dir = work_dir
        self.mesh_key = mesh_key

    def data_dir(self, name: str) -> Path:
        return self.work_dir / name

    def environment(self, name: str) -> dict[str, str]:
        return {
            **compose.image_environment(),
            "LLMNODE_MESH_KEY": self.mesh_key,
            "LLMNODE_DATA_DIR": str(self.data_dir(name)),
        }

    def start(
        self,
        name: str,
        *,
        join: Sequence[str] = (),
        extra: Sequence[str] = (),
        beacon: bool = False,
    ) -> subprocess.Popen[bytes]:
        address = self.cluster.node(name).address
        self.data_dir(name).mkdir(parents=True, exist_ok=True)
        argv = ["llmnode", "start", "--data-dir", str(self.data_dir(name)), "--name", name]
        argv += ["--listen", f"tcp://{address}:{PORT}", "--log-json"]
        if not beacon:
            argv.append("--no-beacon")
        for seed in join:
            argv += ["--join", f"{self.cluster.node(seed).address}:{PORT}"]
        argv += list(extra)
        log_path = self.work_dir / f"{name}.log"
        return self.cluster.run(name, argv, self.environment(name), log_path=log_path)

    def wait_running(self, name: str, timeout: float = FORMATION_BOUND_S) -> None:
        deadline = time.monotonic() + timeout
        while True:
            completed = self.cluster.execute(
                name, ["llmnode", "status", "--json"], self.environment(name)
            )
            if completed.returncode == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"{name} never answered `llmnode status`\n{self.cluster.log_tails()}")
            time.sleep(0.5)

    def views(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each node's view, {observer: {peer name: state}}, from `llmnode peers --json` run in
        the observer's namespace (all observers asked at once)."""
        running = {
            name: subprocess.Popen(
                ["ip", "netns", "exec", self.cluster.node(name).namespace, *PEERS_COMMAND],
                env=self.environment(name),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for name in names
        }
        views: dict[str, dict[str, str]] = {}
        for name, process in running.items():
            output, _ = process.communicate(timeout=60)
            try:
                rows = json.loads(output) if process.returncode == 0 else []
            except ValueError:
                rows = []
            views[name] = {
                row.get("name", row["node_id"]): row["state"]
                for row in rows
                if not row.get("self") and row.get("name") != name
            }
        return views

    def wait_for_views(
        self,
        expected: Callable[[str], dict[str, str]],
        names: Sequence[str],
        timeout: float,
        what: str,
    ) -> float:
        """Poll until every node's view (restricted to the expected peers) is as expected;
        returns the seconds it took."""
        started = time.monotonic()
        while True:
            views = self.views(names)
            seen = {
                name: {peer: views[name].get(peer, "absent") for peer in expected(name)}
                for name in names
            }
            if all(seen[name] == expected(name) for name in names):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                pytest.fail(
                    f"{what}: not reached in {timeout:.0f}s; last views {seen}\n"
                    + self.cluster.log_tails()
                )
            time.sleep(0.5)


@pytest.fixture
def mesh_key() -> str:
    return _new_mesh_key()


def _new_mesh_key() -> str:
    completed = subprocess.run(
        ["llmnode", "init", "--print-mesh-key"],
        env=compose.image_environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout.strip()


def form_mesh(nodes: MeshNodes, names: Sequence[str], extra: Sequence[str]) -> float:
    seed, *others = names
    nodes.start(seed, extra=extra)
    nodes.wait_running(seed)
    for name in others:
        nodes.start(name, join=[seed], extra=extra)

    def everyone_alive(name: str) -> dict[str, str]:
        return {peer: "alive" for peer in names if peer != name}

    return nodes.wait_for_views(everyone_alive, names, FORMATION_BOUND_S, "mesh formation")


def test_partition_is_detected_on_both_sides_and_heals_into_one_view(
    make_cluster: MakeCluster, tmp_path: Path, mesh_key: str
) -> None:
    names = ["n0", "n1", "n2", "n3", "n4"]
    cluster = make_cluster(names)
    nodes = MeshNodes(cluster, tmp_path, mesh_key)
    form_mesh(nodes, names, ["--probe-interval", "0.2"])
    side_a, side_b = names[:3], names[3:]

    cluster.partition(side_a, side_b)

    def split(name: str) -> dict[str, str]:
        own, other = (side_a, side_b) if name in side_a else (side_b, side_a)
        return {peer: "alive" for peer in own if peer != name} | dict.fromkeys(other, "dead")

    detection = nodes.wait_for_views(split, names, DETECTION_BOUND_S, "partition detection")

    cluster.heal()

    def whole(name: str) -> dict[str, str]:
        return {peer: "alive" for peer in names if peer != name}

    recovery = nodes.wait_for_views(whole, names, RECOVERY_BOUND_S, "recovery after heal")
    print(f"partition detected in {detection:.1f}s, one view again {recovery:.1f}s after heal")


def test_ten_percent_loss_and_fifty_ms_delay_cause_no_false_deaths(
    make_cluster: MakeCluster, tmp_path: Path, mesh_key: str
) -> None:
    names = ["n0", "n1", "n2", "n3", "n4"]
    cluster = make_cluster(names)
    nodes = MeshNodes(cluster, tmp_path, mesh_key)
    # memberlist's LAN timings (probe 1 s, timeout 500 ms): the point is that the defaults hold.
    form_mesh(nodes, names, ["--probe-interval", "1.0", "--fault-delay-ms", "50"])
    for name in names:
        cluster.loss(name, 10)

    observed_for_s = 120.0
    started = time.monotonic()
    false_deaths: list[tuple[float, str, str, str]] = []
    worst: dict[str, int] = {}
    while time.monotonic() - started < observed_for_s:
        for observer, view in nodes.views(names).items():
            for peer, state in view.items():
                if state in ("dead", "left"):
                    false_deaths.append((time.monotonic() - started, observer, peer, state))
                if state == "suspect":
                    worst[peer] = worst.get(peer, 0) + 1
        time.sleep(2.0)
    print(f"suspect sightings under loss: {worst}")
    assert false_deaths == [], f"false deaths under 10 % loss + 50 ms delay: {false_deaths[:10]}"
    cluster.heal()

    def everyone_alive(name: str) -> dict[str, str]:
        return {peer: "alive" for peer in names if peer != name}

    nodes.wait_for_views(everyone_alive, names, DETECTION_BOUND_S, "all alive after the run")


def default_models_in_store(store: Path, models: Sequence[str]) -> None:
    """Pull the default models into ``store`` unless they are there (needs PyPI, outside the
    namespaces; a no-op when the store is warm)."""
    for model in models:
        if (store / model / "manifest.json").exists():
            continue
        environment = {**compose.image_environment(), "LLMNODE_MODEL_STORE": str(store)}
        completed = subprocess.run(
            ["llmnode", "models", "pull", model],
            env=environment,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert completed.returncode == 0, f"cannot pull {model}: {completed.stderr[-2000:]}"


@pytest.mark.models
def test_lan_beacons_form_a_mesh_with_no_seed_and_ignore_a_foreign_mesh(
    make_cluster: MakeCluster, tmp_path: Path, mesh_key: str
) -> None:
    names = ["b0", "b1", "b2", "stranger"]
    cluster = make_cluster(names)
    nodes = MeshNodes(cluster, tmp_path, mesh_key)
    strangers = MeshNodes(cluster, tmp_path, _new_mesh_key())
    for name in names[:3]:
        nodes.start(name, beacon=True, extra=["--probe-interval", "0.2"])
    strangers.start("stranger", beacon=True, extra=["--probe-interval", "0.2"])
    members = names[:3]

    def everyone_alive(name: str) -> dict[str, str]:
        return {peer: "alive" for peer in members if peer != name}

    nodes.wait_for_views(everyone_alive, members, FORMATION_BOUND_S, "beacon discovery")
    time.sleep(6.0)  # more than one beacon interval: the stranger's beacons were heard
    assert all("stranger" not in view for view in nodes.views(members).values())
    assert strangers.views(["stranger"])["stranger"] == {}
    status = cluster.execute("b0", ["llmnode", "status", "--json"], nodes.environment("b0"))
    assert json.loads(status.stdout)["counters"]["rejections"].get("bad_beacon", 0) >= 1


def test_compose_topology_answers_the_example_question(
    make_cluster: MakeCluster, tmp_path: Path, mesh_key: str
) -> None:
    services = compose.active(compose.load_services())
    store = Path(os.environ.get("LLMNODE_MODEL_STORE") or Path.home() / ".cache/llmnode/models")
    default_models_in_store(store, ["all-minilm-l6-v2", "smollm2-135m-instruct"])
    cluster = make_cluster(list(services))
    mesh = compose.ComposeMesh(
        cluster,
        services,
        work_dir=tmp_path,
        env_file_values={"LLMNODE_MESH_KEY": mesh_key},
        model_store=store,
    )
    mesh.up(health_timeout=180.0)
    exit_code = mesh.wait("client", timeout=300.0)
    output = mesh.output("client")
    print(output[-3000:])
    assert exit_code == 0, f"client failed\n{cluster.log_tails()}"
    assert "Paris" in output


def test_harness_python_is_the_virtualenv() -> None:
    # The nodes run `llmnode` from PATH; the harness puts this interpreter's bin directory first.
    path = compose.image_environment()["PATH"].split(":")
    assert path[0] == str(Path(sys.executable).parent)
    assert (Path(path[0]) / "llmnode").exists()
