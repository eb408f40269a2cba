"""``llmnode demo``: the demo mesh of docker-compose.yml on one machine, no containers (I/O).

Three node processes on 127.0.0.1 — ``seed`` serving all-MiniLM-L6-v2, ``node2`` hosting the
example application's Librarian and Writer agents, ``node3`` serving SmolLM2-135M-Instruct — the
same commands as the compose services. The demo pulls the default models if the store lacks them,
prints nodes joining, asks the writer agent questions through the mesh, prints who served what,
then stops every node gracefully.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from llmnode.errors import ConfigError, MeshError

CHAT_MODEL = "smollm2-135m-instruct"
EMBED_MODEL = "all-minilm-l6-v2"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _say(text: str) -> None:
    typer.secho(text, fg=typer.colors.CYAN, bold=True)


class _DemoNode:
    def __init__(self, name: str, root: Path, args: Sequence[str], env: dict[str, str]) -> None:
        self.name = name
        self.data_dir = root / name
        self.data_dir.mkdir(parents=True)
        self.log_path = root / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "llmnode",
            "start",
            "--data-dir",
            str(self.data_dir),
            "--name",
            name,
            "--listen",
            "tcp://127.0.0.1:0",
            "--no-beacon",
            "--log-json",
            *args,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=env, stdout=log, stderr=log, cwd=REPO_ROOT, start_new_session=True
            )

    def status(self) -> dict[str, Any] | None:
        result = subprocess.run(
            [sys.executable, "-m", "llmnode", "status", "--json", "--data-dir", str(self.data_dir)],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return json.loads(result.stdout) if result.returncode == 0 else None

    def wait_ready(self, timeout: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace").splitlines()[-5:]
                raise MeshError(f"node {self.name} exited: " + " | ".join(tail))
            status = self.status()
            if status is not None:
                return status
            time.sleep(0.3)
        raise MeshError(f"node {self.name} did not start within {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _ensure_models(store: str | None) -> None:
    from llmnode.agents.models.sources import pull  # noqa: PLC0415 - heavy
    from llmnode.agents.models.store import ModelStore  # noqa: PLC0415

    model_store = ModelStore(store)
    for name in (EMBED_MODEL, CHAT_MODEL):
        if not model_store.exists(name):
            _say(f"pulling {name} into {model_store.root} (first run only)")
            pull(name, model_store, progress=True)


def run_demo(questions: list[str], *, store: str | None = None, keep: bool = False) -> int:
    if not (REPO_ROOT / "examples" / "qa_pipeline.py").exists():
        raise ConfigError("llmnode demo runs from a source checkout (examples/ not found)")
    from llmnode.bus.keyring import MeshKeyRing  # noqa: PLC0415

    started = time.monotonic()
    _ensure_models(store)
    root = Path(tempfile.mkdtemp(prefix="llmnode-demo-"))
    env = {
        **os.environ,
        "LLMNODE_MESH_KEY": MeshKeyRing.key_to_text(MeshKeyRing.generate_key()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
        "LLMNODE_ORT_THREADS": os.environ.get("LLMNODE_ORT_THREADS", "1"),
    }
    if store:
        env["LLMNODE_MODEL_STORE"] = store
    nodes: list[_DemoNode] = []
    try:
        _say(f"starting the demo mesh in {root}")
        seed = _DemoNode("seed", root, ["--model", EMBED_MODEL], env)
        nodes.append(seed)
        seed_status = seed.wait_ready()
        join = seed_status["address"].removeprefix("tcp://")
        _node_line("seed", seed_status, f"serves model:{EMBED_MODEL}")
        node3 = _DemoNode("node3", root, ["--join", join, "--model", CHAT_MODEL], env)
        node2 = _DemoNode(
            "node2",
            root,
            [
                "--join",
                join,
                "--agent",
                "examples.qa_pipeline:Librarian",
                "--agent",
                "examples.qa_pipeline:Writer",
            ],
            env,
        )
        nodes += [node3, node2]
        for node, role in (
            (node2, "hosts agents librarian, writer"),
            (node3, f"serves model:{CHAT_MODEL}"),
        ):
            _node_line(node.name, node.wait_ready(), f"{role}, joined via seed")
        _say("waiting for the mesh to agree (gossip)")
        _wait_converged(seed, expected=3)
        typer.echo(f"  3 nodes alive after {time.monotonic() - started:.1f} s")
        _say("asking the writer agent through the mesh")
        answers = asyncio.run(_ask(seed.data_dir, questions))
        _say("served by")
        for node in nodes:
            status = node.status() or {}
            requests = status.get("counters", {}).get("requests", {})
            services = ", ".join(
                s["name"] for s in status.get("services", []) if s["kind"] != "subscriptions"
            )
            served = requests.get("served", 0)
            typer.echo(f"  {node.name:<6} served {served:>3} requests  ({services or '-'})")
        typer.echo(f"\ndemo finished in {time.monotonic() - started:.1f} s; {len(answers)} answers")
        return 0
    finally:
        for node in reversed(nodes):
            node.stop()
        if keep:
            typer.echo(f"logs kept in {root}")
        else:
            import shutil  # noqa: PLC0415

            shutil.rmtree(root, ignore_errors=True)


def _node_line(name: str, status: dict[str, Any], role: str) -> None:
    typer.echo(f"  {name:<6} {status['node_id'][:12]} at {status['address']}  {role}")


def _wait_converged(node: _DemoNode, expected: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = node.status() or {}
        if status.get("members_alive", 0) >= expected:
            return
        time.sleep(0.3)
    raise MeshError("the demo mesh did not converge")


async def _ask(data_dir: Path, questions: list[str]) -> list[Any]:
    sys.path.insert(0, str(REPO_ROOT))
    from examples.qa_pipeline import DEFAULT_QUESTIONS, ask_questions  # noqa: PLC0415
    from llmnode.client.mesh import connect  # noqa: PLC0415

    async with connect(str(data_dir), name="demo") as mesh:
        return list(await ask_questions(mesh, questions or DEFAULT_QUESTIONS))


def register(app: typer.Typer) -> None:
    @app.command()
    def demo(
        question: Annotated[
            list[str] | None, typer.Option("--question", help="Ask this instead (repeatable).")
        ] = None,
        model_store: Annotated[
            str | None, typer.Option("--model-store", help="Model store [env LLMNODE_MODEL_STORE].")
        ] = None,
        keep: Annotated[bool, typer.Option("--keep", help="Keep the nodes' logs.")] = False,
    ) -> None:
        """Run a three-node demo mesh on this machine and ask it questions (no containers)."""
        try:
            run_demo(list(question or []), store=model_store, keep=keep)
        except MeshError as error:
            typer.secho(f"error: {error}", err=True, fg=typer.colors.RED)
            raise typer.Exit(1) from None


__all__ = ["register", "run_demo"]
