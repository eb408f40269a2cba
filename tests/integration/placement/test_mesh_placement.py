"""Placement with real `llmnode start` processes: deploy, repair after kill -9, memory, pulls.

Each node has a store of its own and a declared capacity (a config file), so the memory every
node gossips is fixed and the test knows which node placement prefers. The model is the smallest
real one of the defaults, all-minilm-l6-v2 (88 MB); one node holds it at the start.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from llmnode.agents.models import ModelStore, ensure_models
from llmnode.client.sync import connect_sync
from llmnode.config import DEPLOYMENTS_FILE
from tests.integration.http.conftest import CHAT_MODEL, EMBED_MODEL, store_root
from tests.support.mesh import LocalMesh, NodeProcess, llmnode_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.models]

MODEL = EMBED_MODEL


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    ensure_models(ModelStore(store_root()), [MODEL])
    local = LocalMesh(tmp_path, probe_interval=0.2)
    try:
        yield local
    finally:
        local.close()


def holding(root: Path, *models: str) -> Path:
    """A store at ``root`` with copies of ``models`` from the default store."""
    root.mkdir(parents=True)
    for model in models:
        shutil.copytree(store_root() / model, root / model)
    return root


def start(
    mesh: LocalMesh,
    name: str,
    ram_mb: int,
    store: Path,
    *,
    transfer_mb_s: float = 100.0,
    more: str = "",
    extra: tuple[str, ...] = (),
) -> NodeProcess:
    """A node whose declared RAM fixes the memory it has for models (RAM less the reserve)."""
    config = mesh.root / f"{name}.toml"
    config.write_text(
        f"model_transfer_mb_s = {transfer_mb_s}\n{more}[capacity]\nram_mb = {ram_mb}\n"
    )
    store.mkdir(parents=True, exist_ok=True)
    args = ["--model-store", str(store), "--config", str(config), "--http", "off", *extra]
    return mesh.add(name, args)


def cli(node: NodeProcess, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return node.run_cli(*args, timeout=timeout)


def deployments(node: NodeProcess) -> list[dict[str, Any]]:
    result = cli(node, "models", "deployments", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def serving(node: NodeProcess, model: str = MODEL) -> set[str]:
    """The nodes whose gossiped state advertises ``model`` (loaded and warm)."""
    return {
        row["name"]
        for row in node.peers()
        if row["state"] == "alive" and f"model:{model}" in json.dumps(row.get("services", []))
    }


class Traffic:
    """Embeddings asked through one node, back to back, in threads; every outcome kept."""

    def __init__(
        self, entry: NodeProcess, threads: int = 1, pause_s: float = 0.05, model: str = MODEL
    ) -> None:
        self.entry, self.pause_s, self.model = entry, pause_s, model
        self.served: list[float] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with connect_sync(self.entry.data_dir) as client:
            while not self._stop.is_set():
                try:
                    if self.model == MODEL:
                        rows = client.embed(MODEL, ["the mesh keeps serving"], timeout=20)
                        assert len(rows) == 1 and len(rows[0]) == 384
                    else:
                        text = client.chat(self.model, "Say hi.", max_tokens=2, timeout=60)
                        assert isinstance(text, str)
                    self.served.append(time.monotonic())
                except Exception as error:  # kept, and the test fails on it
                    self.failed.append(f"{type(error).__name__}: {error}")
                time.sleep(self.pause_s)

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


@pytest.mark.parametrize(
    ("model", "ram_mb", "more"),
    [
        # Memory for models: a 976 MiB, b 7200 MiB, c 2976 MiB (declared RAM less the reserve).
        (MODEL, (2000, 8000, 4000), ""),
        # One slot each, so smollm2's footprint (weights and the KV cache of one sequence of its
        # full context) is about 880 MiB: a 1976 MiB, b 7976 MiB, c 3976 MiB.
        (CHAT_MODEL, (3000, 9000, 5000), "model_slots = 1\n"),
    ],
    ids=["minilm", "smollm2"],
)
def test_deploy_copies_the_model_to_a_peer_and_a_killed_replica_is_restored_on_the_third(
    mesh: LocalMesh, tmp_path: Path, model: str, ram_mb: tuple[int, int, int], more: str
) -> None:
    ensure_models(ModelStore(store_root()), [model])
    a = start(mesh, "a", ram_mb[0], holding(tmp_path / "store-a", model), more=more)
    b = start(mesh, "b", ram_mb[1], tmp_path / "store-b", more=more)
    c = start(mesh, "c", ram_mb[2], tmp_path / "store-c", more=more)
    mesh.wait_converged()

    deployed = cli(c, "models", "deploy", model, "--replicas", "2")
    assert deployed.returncode == 0, deployed.stderr
    # a holds the files; b has the most memory, so b fetches them from a over the mesh.
    wait_for(lambda: serving(c, model) == {"a", "b"}, timeout=180, what="replicas on a and b")
    assert ModelStore(tmp_path / "store-b").verify(model)  # every file's sha256
    assert not (tmp_path / "store-c" / model).exists()
    for node in (a, b, c):  # the record reached every node; each places the same
        (row,) = deployments(node)
        assert (row["replicas"], sorted(row["assigned"])) == (2, ["a", "b"])

    with Traffic(c, model=model) as traffic:
        wait_for(lambda: len(traffic.served) >= 5, timeout=60, what="requests served")
        killed_at = time.monotonic()
        a.kill()  # kill -9 the only node that held the model at the start
        wait_for(lambda: serving(c, model) == {"b", "c"}, timeout=180, what="replica on c")
        restored_s = time.monotonic() - killed_at
        wait_for(
            lambda: len([t for t in traffic.served if t > killed_at + restored_s]) >= 5,
            timeout=60,
            what="requests after the repair",
        )
    print(f"{model}: replica restored {restored_s:.1f} s after the kill")
    assert not traffic.failed, traffic.failed[:3]
    assert ModelStore(tmp_path / "store-c").verify(model)  # copied from b's copy
    during = [t for t in traffic.served if killed_at < t < killed_at + restored_s]
    assert during, "no request was served while the replica was being restored"
    (row,) = deployments(c)
    assert sorted(row["serving"]) == ["b", "c"]


def test_deployments_survive_a_restart_of_every_node(mesh: LocalMesh, tmp_path: Path) -> None:
    a = start(mesh, "a", 2000, holding(tmp_path / "store-a", MODEL))
    b = start(mesh, "b", 8000, tmp_path / "store-b")
    mesh.wait_converged()
    deployed = cli(b, "models", "deploy", MODEL, "--replicas", "2")
    assert deployed.returncode == 0, deployed.stderr
    wait_for(lambda: serving(b) == {"a", "b"}, timeout=180, what="replicas on a and b")

    for node in (a, b):
        node.kill()  # kill -9 every node of the mesh: nothing of the deployment is left in memory
        assert (node.data_dir / DEPLOYMENTS_FILE).stat().st_mode & 0o777 == 0o600

    mesh.restart(b)  # alone: no peer to learn the deployment from, so it comes from b's disk
    (row,) = deployments(b)
    assert (row["model"], row["replicas"], row["deployed"]) == (MODEL, 2, True)
    mesh.restart(a, join=b)
    mesh.wait_converged()
    wait_for(lambda: serving(b) == {"a", "b"}, timeout=180, what="replicas placed again")
    for node in (a, b):
        (row,) = deployments(node)
        assert (row["replicas"], sorted(row["assigned"]), sorted(row["serving"])) == (
            2,
            ["a", "b"],
            ["a", "b"],
        )
        assert '"deployments_restored"' in node.log_text()
        assert '"deployments_file_refused"' not in node.log_text()
    with connect_sync(a.data_dir) as client:
        assert len(client.embed(MODEL, ["back after a restart"], timeout=30)[0]) == 384


def test_memory_decides_a_pinned_replica_counts_and_bad_deploys_are_one_line(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    ensure_models(ModelStore(store_root()), [CHAT_MODEL])
    # a: 976 MiB for models, started with --model (a pinned replica); b: 76 MiB, below the
    # embedding model's footprint (about 87 MiB).
    store_a = holding(tmp_path / "store-a", MODEL, CHAT_MODEL)
    a = start(mesh, "a", 2000, store_a, extra=("--model", MODEL))
    b = start(mesh, "b", 1100, tmp_path / "store-b")
    mesh.wait_converged()
    wait_for(lambda: serving(b) == {"a"}, timeout=60, what="a's pinned replica")

    assert cli(b, "models", "deploy", MODEL, "--replicas", "2").returncode == 0
    wait_for(lambda: serving(b) == {"a"}, timeout=60, what="the replica on a")
    time.sleep(3.0)  # many placement rounds: b is never given it, and never fetches it
    assert serving(b) == {"a"}
    assert not (tmp_path / "store-b" / MODEL).exists()
    assert not list((tmp_path / "store-b").glob(".partial-*/*"))
    (row,) = deployments(b)
    assert (row["assigned"], row["unplaced"]) == (["a"], 1)

    errors = {
        "unknown model": ("models", "deploy", "no-such-model", "--replicas", "1"),
        "replicas must be": ("models", "deploy", MODEL, "--replicas", "0"),
        "no node has memory": ("models", "deploy", CHAT_MODEL, "--replicas", "1"),
        "--replicas N or --auto": ("models", "deploy", MODEL),
        "not deployed": ("models", "undeploy", CHAT_MODEL),
        "not a model name": ("models", "deploy", "../etc", "--replicas", "1"),
    }
    for expected, args in errors.items():
        result = cli(b, *args)
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], (args, result.stderr)

    assert cli(b, "models", "undeploy", MODEL).returncode == 0
    wait_for(lambda: not deployments(a)[0]["deployed"], timeout=30, what="the undeploy on a")
    time.sleep(2.0)
    assert serving(b) == {"a"}  # pinned: --model replicas stay whatever placement says


def test_pull_from_mesh_checks_sha256_and_resumes_after_the_fetcher_is_killed(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    start(mesh, "a", 2000, holding(tmp_path / "store-a", MODEL))
    store_b = tmp_path / "store-b"
    b = start(mesh, "b", 8000, store_b, transfer_mb_s=10)  # about 9 s for the 88 MB
    mesh.wait_converged()
    command = llmnode_command("models", "pull", MODEL, "--from-mesh", "--data-dir", str(b.data_dir))
    first = subprocess.Popen(command, env=b.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = store_b / f".partial-{MODEL}"

    def received() -> int:
        return sum(p.stat().st_size for p in partial.rglob("*") if p.is_file())

    wait_for(lambda: received() > 20_000_000, timeout=60, what="20 MB received")
    b.kill()  # the fetching node dies mid-transfer
    first.communicate(timeout=30)
    assert first.returncode != 0
    kept = received()
    assert kept > 20_000_000 and not (store_b / MODEL).exists()

    b.start()  # the same data dir and store
    wait_for(b.status, timeout=60, what="b to restart")
    mesh.wait_converged()
    again = cli(b, "models", "pull", MODEL, "--from-mesh", timeout=120)
    assert again.returncode == 0, again.stderr
    assert "sha256 checked" in again.stdout
    total = ModelStore(store_b).verify(MODEL).size_bytes
    pulled = [
        json.loads(line)
        for line in b.log_text().splitlines()
        if '"model_pulled"' in line and line.startswith("{")
    ]
    assert pulled, "no model_pulled line in b's log"
    stats = pulled[-1]["stats"]
    assert stats["bytes_resumed"] >= kept - 2 * 256 * 1024  # resumed from what was written
    assert stats["bytes_fetched"] + stats["bytes_resumed"] == total  # only the rest crossed

    already = cli(b, "models", "pull", MODEL, "--from-mesh")
    assert already.returncode == 0 and "already" in already.stdout


AUTOSCALE = """model_slots = 1
[autoscale]
add_wait_ms = 10.0
add_window_s = 2.0
remove_wait_ms = 1.0
quiet_s = 5.0
cooldown_s = 3.0
"""


def test_auto_adds_a_replica_under_a_burst_and_removes_it_when_quiet(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    # One slot per replica, and the policy's windows in seconds (defaults: 30 s and 300 s).
    a = start(mesh, "a", 8000, holding(tmp_path / "store-a", MODEL), more=AUTOSCALE)
    b = start(mesh, "b", 8000, tmp_path / "store-b", more=AUTOSCALE)
    mesh.wait_converged()
    deployed = cli(a, "models", "deploy", MODEL, "--auto", "--max-replicas", "2")
    assert deployed.returncode == 0, deployed.stderr
    wait_for(lambda: serving(a) == {"a"}, timeout=60, what="the first replica")
    time.sleep(3.0)  # no load: still one replica (never below one while deployed)
    assert serving(a) == {"a"}

    with Traffic(a, threads=12, pause_s=0.0) as burst:  # the queue wait rises above 10 ms
        wait_for(lambda: serving(a) == {"a", "b"}, timeout=90, what="a second replica")
        (row,) = deployments(a)
        assert (row["auto"], row["replicas"]) == (True, 2)
    assert not burst.failed, burst.failed[:3]

    wait_for(lambda: len(serving(a)) == 1, timeout=90, what="back to one replica when quiet")
    (row,) = deployments(b)
    assert row["replicas"] == 1
