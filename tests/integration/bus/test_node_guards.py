"""Guards of a node process: one node per data dir, a clear line when a seed refuses our key.

Real `llmnode start` processes on 127.0.0.1 (tests/support/mesh.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmnode.bus.keyring import MeshKeyRing
from tests.support.mesh import LocalMesh, NodeProcess, llmnode_command, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def mesh(tmp_path: Path) -> Iterator[LocalMesh]:
    local = LocalMesh(tmp_path)
    yield local
    for node in local.nodes:
        if node.alive():
            node.stop()


def test_a_second_start_on_the_same_data_dir_fails_naming_the_running_pid(
    mesh: LocalMesh,
) -> None:
    first = mesh.add("first")
    assert first.process is not None
    second = subprocess.run(
        llmnode_command("start", *first.args),
        env=first.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert f"pid {first.process.pid}" in lines[0]
    # the running node keeps its control socket: the CLI still reaches it
    status = first.status()
    assert status is not None and status["address"] == first.address


def test_a_joiner_with_another_mesh_key_says_the_seed_refused_it(
    mesh: LocalMesh, tmp_path: Path
) -> None:
    seed = mesh.add("seed")
    joiner = NodeProcess(
        "joiner",
        tmp_path / "joiner",
        [
            "--data-dir",
            str(tmp_path / "joiner"),
            "--listen",
            "tcp://127.0.0.1:0",
            "--no-beacon",
            "--log-json",
            "--join",
            seed.address.removeprefix("tcp://"),
        ],
        {**mesh.env, "LLMNODE_MESH_KEY": MeshKeyRing.key_to_text(MeshKeyRing.generate_key())},
        tmp_path / "joiner.log",
    )
    mesh.nodes.append(joiner)
    joiner.start()
    wait_for(
        lambda: "seed_refused_mesh_key" in joiner.log_text(),
        timeout=30,
        what="the joiner to report the refusal",
    )
    assert "refused our mesh key" in joiner.log_text()
    refused = (seed.status() or {}).get("counters", {}).get("rejections", {})
    assert refused.get("conn_refused_key", 0) >= 1, refused


def udp_bindings(port: int) -> list[str]:
    """Local IPv4 addresses with a UDP socket on ``port`` (from /proc/net/udp)."""
    found = []
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        local = line.split()[1]
        host_hex, port_hex = local.split(":")
        if int(port_hex, 16) == port:
            found.append(socket.inet_ntoa(bytes.fromhex(host_hex)[::-1]))
    return found


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def lan_address() -> str | None:
    for _, name in socket.if_nameindex():
        host = _interface_host(name)
        if host is not None and not host.startswith("127."):
            return host
    return None


def _interface_host(name: str) -> str | None:
    binding = None
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("256s", name.encode()[:15])
        binding = socket.inet_ntoa(fcntl.ioctl(probe.fileno(), 0x8915, request)[20:24])
    return binding


@pytest.mark.parametrize("where", ["loopback", "lan"])
def test_the_beacon_follows_the_listen_address(where: str, mesh: LocalMesh, tmp_path: Path) -> None:
    host = "127.0.0.1" if where == "loopback" else lan_address()
    if host is None:
        pytest.skip("no LAN interface on this machine")
    port = free_udp_port()
    config = tmp_path / f"{where}.toml"
    config.write_text(f"beacon_port = {port}\n")
    data_dir = tmp_path / where
    node = NodeProcess(
        where,
        data_dir,
        ["--data-dir", str(data_dir), "--listen", f"tcp://{host}:0", "--log-json"],
        {**mesh.env, "LLMNODE_CONFIG": str(config)},
        tmp_path / f"{where}.log",
    )
    mesh.nodes.append(node)
    node.start()
    wait_for(node.status, timeout=60, what="the node to start")
    time.sleep(0.5)
    bound = udp_bindings(port)
    assert "0.0.0.0" not in bound, bound  # never every interface when --listen names one
    if where == "loopback":
        assert bound == [], bound  # a loopback node announces nowhere
        assert "beacon_disabled" in node.log_text()
    else:
        assert bound and all(address.endswith(".255") for address in bound), bound
