"""``--agent`` agents fail loudly and are supervised, against real node processes: a spec that
names no module or class stops ``llmnode start`` before a node starts (one line, exit 2), and an
agent host that fails is logged, restarted and shown in ``llmnode status``."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from llmnode.client.mesh import connect
from tests.support.mesh import LocalMesh, llmnode_command, wait_for

pytestmark = pytest.mark.slow

FLAKY = "tests.integration.nodes.supervised_agents:Flaky"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("nosuch.module:Nope", "cannot import nosuch.module"),
        ("tests.integration.nodes.supervised_agents:Nope", "has no Nope"),
    ],
)
def test_a_wrong_agent_spec_is_one_line_and_exit_2_before_any_node_starts(
    tmp_path: Path, spec: str, reason: str
) -> None:
    result = subprocess.run(
        llmnode_command("start", "--data-dir", str(tmp_path), "--no-beacon", "--agent", spec),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: agent") and reason in lines[0]
    assert not (tmp_path / "control.address").exists()  # no node ran


def test_the_installed_command_finds_agent_modules_in_the_current_directory(
    tmp_path: Path,
) -> None:
    """``llmnode`` (the console script, whose sys.path does not hold the current directory, unlike
    ``python -m``) resolves ``--agent pkg.module:Class`` from where it is run, as the README's
    ``--agent examples.qa_pipeline:Writer`` expects."""
    script = Path(sys.executable).parent / "llmnode"
    if not script.exists():
        pytest.skip("the llmnode console script is not installed")
    package = tmp_path / "mypackage"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "hello.py").write_text(
        "from llmnode import Agent\n\nclass Hello(Agent):\n    pass\n"
    )
    result = subprocess.run(
        [
            str(script),
            "start",
            "--data-dir",
            str(tmp_path / "data"),
            "--agent",
            "mypackage.hello:Nope",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    # The module was found (the class was not): the directory was searched.
    assert result.returncode == 2
    assert "mypackage.hello has no Nope" in result.stderr, result.stderr


def test_an_agent_host_that_fails_is_restarted_and_shown_in_status(tmp_path: Path) -> None:
    mesh = LocalMesh(tmp_path)
    try:
        node = mesh.add("solo", ["--agent", FLAKY])

        def running() -> dict[str, object] | None:
            status = node.status()
            agent = (status or {}).get("agents", {}).get("flaky")
            return agent if agent and agent["state"] == "running" else None

        agent = wait_for(running, timeout=30, what="flaky to run after its restart")
        assert agent["restarts"] == 1
        assert agent["last_error"] == "RuntimeError: first start fails"
        assert "agent_host_failed" in node.log_text()
        text = node.run_cli("status")
        assert text.returncode == 0
        assert "flaky" in text.stdout and "restarts 1" in text.stdout

        async def ask() -> object:
            async with connect(node.data_dir) as client:
                return await client.request("flaky", {"type": "dict", "x": 1}, timeout=10)

        assert asyncio.run(ask()) == {"starts": 2, "type": "dict", "x": 1}
    finally:
        mesh.close()
