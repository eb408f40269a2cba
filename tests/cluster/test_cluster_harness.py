"""Self-tests of the namespace harness with plain Python sockets (no llmnode involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence

import netns
import pytest

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MakeCluster = Callable[[Sequence[str] | int], netns.Cluster]

# Echoes every UDP datagram and every TCP line on port 9000 of all addresses, forever.
ECHO_SERVER = """
import socket, threading
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 9000))
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 9000))
tcp.listen()
def serve_tcp():
    while True:
        connection, _ = tcp.accept()
        connection.sendall(connection.recv(100))
        connection.close()
threading.Thread(target=serve_tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = udp.recvfrom(100)
    udp.sendto(data, peer)
"""

# argv: ADDRESS. Prints "ok" or the error after one TCP round trip to ADDRESS:9000 (1 s timeout).
TCP_PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], 9000), timeout=1.0) as connection:
        connection.sendall(b"ping")
        print("ok" if connection.recv(100) == b"ping" else "bad")
except OSError as error:
    print(type(error).__name__)
"""

# argv: ADDRESS COUNT. Sends COUNT numbered datagrams, prints how many distinct ones came back.
UDP_COUNT = """
import socket, sys, time
address, count = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
for number in range(count):
    udp.sendto(str(number).encode(), (address, 9000))
    if number % 50 == 49:
        time.sleep(0.002)
udp.settimeout(1.0)
seen = set()
try:
    while True:
        seen.add(udp.recv(100))
except TimeoutError:
    pass
print(len(seen))
"""


def start_echo(cluster: netns.Cluster, node: str) -> subprocess.Popen[bytes]:
    process = cluster.run(node, [sys.executable, "-c", ECHO_SERVER], dict(os.environ), capture=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == b"ready"
    return process


def tcp_probe(cluster: netns.Cluster, source: str, target: str) -> str:
    address = cluster.node(target).address
    argv = [sys.executable, "-c", TCP_PROBE, address]
    completed = cluster.execute(source, argv, dict(os.environ))
    return completed.stdout.strip()


def test_every_namespace_reaches_every_other(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["a", "b", "c"])
    for name in cluster.nodes:
        start_echo(cluster, name)
    results = {
        (source, target): tcp_probe(cluster, source, target)
        for source in cluster.nodes
        for target in cluster.nodes
        if source != target
    }
    assert results == dict.fromkeys(results, "ok")


def test_namespaces_have_unique_addresses_in_the_private_subnet(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(4)
    addresses = [node.address for node in cluster.nodes.values()]
    assert len(set(addresses)) == 4
    assert all(address.startswith("10.77.0.") for address in addresses)
    routes = cluster.execute("n0", ["ip", "-j", "route"]).stdout
    destinations = {route["dst"] for route in json.loads(routes)}
    assert destinations == {"10.77.0.0/24", "255.255.255.255"}  # no default route: no way out


def test_loss_rule_drops_about_the_given_share(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["client", "server"])
    start_echo(cluster, "server")
    cluster.loss("server", 10)
    count = 2000
    completed = cluster.execute(
        "client",
        [sys.executable, "-c", UDP_COUNT, cluster.node("server").address, str(count)],
        dict(os.environ),
    )
    lost_share = 1 - int(completed.stdout) / count
    # 2000 draws at p = 0.1: the standard deviation is 0.7 %, so 5..15 % is > 7 sigma wide.
    assert 0.05 <= lost_share <= 0.15, f"lost {lost_share:.1%}"


def test_partition_blocks_both_ways_and_heal_restores(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["a1", "a2", "b1"])
    for name in cluster.nodes:
        start_echo(cluster, name)
    cluster.partition(["a1", "a2"], ["b1"])
    assert tcp_probe(cluster, "a1", "b1") == "TimeoutError"
    assert tcp_probe(cluster, "b1", "a2") == "TimeoutError"
    assert tcp_probe(cluster, "a1", "a2") == "ok"  # the same side still talks
    cluster.heal()
    assert tcp_probe(cluster, "a1", "b1") == "ok"
    assert tcp_probe(cluster, "b1", "a2") == "ok"


def test_service_names_resolve_through_per_namespace_hosts(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["seed", "node2"])
    start_echo(cluster, "seed")
    cluster.set_hosts({name: node.address for name, node in cluster.nodes.items()})
    assert tcp_probe(cluster, "node2", "seed") == "ok"
    resolved = cluster.execute(
        "node2", [sys.executable, "-c", "import socket; print(socket.gethostbyname('seed'))"]
    )
    assert resolved.stdout.strip() == cluster.node("seed").address
    own = "import socket; print(socket.gethostbyname(socket.gethostname()))"
    assert cluster.execute("node2", [sys.executable, "-c", own]).stdout.strip() == (
        cluster.node("node2").address
    )


def test_close_kills_processes_and_deletes_namespaces(make_cluster: MakeCluster) -> None:
    cluster = make_cluster(["a", "b"])
    sleeper = cluster.run("a", [sys.executable, "-c", "import time; time.sleep(600)"])
    cluster.set_hosts({"a": cluster.node("a").address})
    namespaces = [node.namespace for node in cluster.nodes.values()] + [cluster.bridge_namespace]
    cluster.close()
    assert sleeper.poll() is not None
    remaining = netns.namespace_names()
    assert not any(namespace in remaining for namespace in namespaces)
    assert not any((netns.NETNS_ETC / namespace).exists() for namespace in namespaces)


def test_stale_namespaces_of_dead_runs_are_removed(netns_available: None) -> None:
    dead_pid = 99_999_999  # above the kernel's largest pid_max (2**22): never alive
    stale = f"{netns.NAMESPACE_PREFIX}{dead_pid}x0-br"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    assert stale in netns.remove_stale_namespaces()
    assert stale not in netns.namespace_names()
