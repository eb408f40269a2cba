"""The CLI as a new user meets it, against real node processes: Ctrl-C is one line and status
130, a message no handler takes is an error, ``name@node`` fails at once where that node lacks
the agent, ``peers`` cuts nothing off, and the data dir and every file in it are private."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.mesh import LocalMesh, NodeProcess, llmnode_command, wait_for

pytestmark = pytest.mark.slow

NOTES = ["--agent", "tests.integration.nodes.cli_agents:Notes"]


def test_ctrl_c_during_a_streamed_chat_is_one_line_and_status_130(
    mesh: LocalMesh, tiny_store: Path
) -> None:
    # Each token is held 100 ms, so the answer is still streaming when Ctrl-C comes.
    node = mesh.add(
        "solo",
        ["--model", "tiny-gpt2", "--model-store", str(tiny_store), "--fault-slow-ms", "100"],
    )
    chat = subprocess.Popen(
        llmnode_command(
            "chat", "tiny-gpt2", "--max-tokens", "200", "--data-dir", str(node.data_dir)
        ),
        env=node.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert chat.stdin is not None and chat.stdout is not None
    chat.stdin.write(b"Tell me a long story.\n")
    chat.stdin.flush()
    assert chat.stdout.read(1)  # the answer has begun streaming
    chat.send_signal(signal.SIGINT)
    _, stderr = chat.communicate(timeout=30)
    assert chat.returncode == 130
    assert stderr.decode().strip().splitlines() == ["interrupted"]


def test_a_message_no_handler_takes_is_an_error_and_one_it_takes_is_delivered(
    mesh: LocalMesh,
) -> None:
    node = mesh.add("solo", NOTES)
    wait_for(lambda: "notes" in node.run_cli("status").stdout, timeout=60, what="the agent")
    refused = node.run_cli("send", "notes", '{"type": "Nope"}')
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [
        "error: agent 'notes' has no handler for messages of type 'Nope'"
    ]
    taken = node.run_cli("send", "notes", '{"type": "Note", "text": "kept"}')
    assert taken.returncode == 0, taken.stderr
    count = node.run_cli("request", "notes", '{"type": "Count"}')
    assert count.returncode == 0, count.stderr
    assert '"kept"' in count.stdout


def test_a_handler_sends_to_its_own_agent_while_it_holds_the_only_slot(
    mesh: LocalMesh,
) -> None:
    node = mesh.add("solo", NOTES)
    wait_for(lambda: "notes" in node.run_cli("status").stdout, timeout=60, what="the agent")
    started = time.monotonic()
    relayed = node.run_cli("request", "notes", '{"type": "Relay", "text": "looped"}')
    assert relayed.returncode == 0, relayed.stderr
    assert time.monotonic() - started < 15  # not the 30 s send timeout
    count = wait_for(
        lambda: (
            '"looped"' in (out := node.run_cli("request", "notes", '{"type": "Count"}').stdout)
            and out
        ),
        timeout=10,
        what="the relayed note",
    )
    assert '"looped"' in count


def test_name_at_node_fails_at_once_when_that_node_lacks_the_agent(mesh: LocalMesh) -> None:
    mesh.add("hosting", NOTES)
    bare = mesh.add("bare")
    mesh.wait_converged()
    hosting = mesh.nodes[0]
    wait_for(lambda: "notes" in hosting.run_cli("status").stdout, timeout=60, what="the agent")
    started = time.monotonic()
    result = bare.run_cli("request", "notes@bare", '{"type": "Count"}', "--timeout", "30")
    elapsed = time.monotonic() - started
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: no agent or model named 'notes' on node 'bare'"
    ]
    assert elapsed < 15, elapsed  # not the whole 30 s timeout
    reached = bare.run_cli("request", "notes@hosting", '{"type": "Count"}')
    assert reached.returncode == 0, reached.stderr


def test_peers_piped_shows_whole_addresses_and_model_names(
    mesh: LocalMesh, tiny_store: Path
) -> None:
    node = mesh.add("solo", ["--model", "tiny-gpt2", "--model-store", str(tiny_store)])
    narrow = {**node.env, "COLUMNS": "50"}
    result = subprocess.run(
        llmnode_command("peers", "--data-dir", str(node.data_dir)),
        env=narrow,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout
    for whole in (node.address, "model:tiny-gpt2", "free MiB", node.node_id[:12]):
        assert whole in result.stdout, (whole, result.stdout)


def test_a_started_node_keeps_its_data_dir_0700_and_its_incarnation_0600(
    node: NodeProcess,
) -> None:
    # LocalMesh made the data dir with the default mode (0755 under umask 022).
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((node.data_dir / "incarnation").stat().st_mode) == 0o600


def test_init_makes_an_existing_open_data_dir_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "open"
    data_dir.mkdir()
    os.chmod(data_dir, 0o755)
    result = subprocess.run(
        llmnode_command("init", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
