"""Network-namespace cluster harness for the cluster tests (does I/O: ``ip``, ``nft``, processes).

A :class:`Cluster` builds, for one test, a private network that cannot reach anything else::

    <prefix>-br     a namespace holding only the Linux bridge ``br0``
    <prefix>-<i>    one namespace per node: ``lo`` up, ``eth0`` = 10.77.0.<i+2>/24 on the bridge,
                    no default route (a route for 255.255.255.255 only, for LAN beacons)

Every interface lives inside a namespace the harness created (the veth pairs are made inside the
bridge namespace), so nothing in the root namespace changes and two runs never collide: the
prefix holds the pid and a counter. Addresses are only ever 10.77.0.0/24 inside those namespaces.

Processes run through ``ip netns exec`` (:meth:`Cluster.run`), which also bind-mounts
``/etc/netns/<namespace>/hosts`` over ``/etc/hosts`` (:meth:`Cluster.set_hosts`), so service names
resolve the way Docker's DNS resolves them in compose.

Faults come from one nftables table per node namespace (the kernel has no netem; delay comes
from the node's ``--fault-delay-ms``)::

    table inet llmnode_faults
      chain input      hook input: lo accepted, then jump partition, jump loss
      chain partition  ``ip saddr {other side} drop``      (:meth:`Cluster.partition`)
      chain loss       ``numgen random mod 100 < P drop``  (:meth:`Cluster.loss`)

Teardown (:meth:`Cluster.close`, run by the context manager and by ``atexit``) kills every
process started here and anything else still inside the namespaces, deletes the namespaces (and
with them the veths, the bridge and the nft tables) and the ``/etc/netns`` files. Namespaces left
by a run that was killed outright are removed by the next run (their pid is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from llmnode.agents.models.store import process_alive

SUBNET = "10.77.0"
FIRST_HOST = 2  # 10.77.0.1 is left unused: no gateway, nothing routes out
NAMESPACE_PREFIX = "lmc"
FAULT_TABLE = "llmnode_faults"
NETNS_ETC = Path("/etc/netns")
_STALE_NAME = re.compile(rf"^{NAMESPACE_PREFIX}(\d+)x\d+-")
_counter = itertools.count()
_open_clusters: list[Cluster] = []


class HarnessError(RuntimeError):
    """A harness command failed (the message holds the command and its stderr)."""


def missing_requirements(*, need_nft: bool = True) -> str | None:
    """Why the harness cannot run here, or None when it can (root, ``ip``, ``nft``)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    if need_nft and shutil.which("nft") is None:
        return "`nft` (nftables) is not installed"
    try:
        probe = f"{NAMESPACE_PREFIX}{os.getpid()}probe"
        _run(["ip", "netns", "add", probe])
        _run(["ip", "netns", "del", probe])
    except HarnessError as error:
        return f"cannot create network namespaces: {error}"
    return None


def _run(argv: Sequence[str], *, input_text: str | None = None, check: bool = True) -> str:
    completed = subprocess.run(
        list(argv), input=input_text, capture_output=True, text=True, timeout=30, check=False
    )
    if check and completed.returncode != 0:
        raise HarnessError(f"{' '.join(argv)!r} failed: {completed.stderr.strip()}")
    return completed.stdout


def namespace_names() -> list[str]:
    return [line.split()[0] for line in _run(["ip", "netns", "list"]).splitlines() if line.strip()]


def _kill_namespace_processes(namespace: str) -> None:
    pids = _run(["ip", "netns", "pids", namespace], check=False).split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete_namespace(namespace: str) -> None:
    _kill_namespace_processes(namespace)
    _run(["ip", "netns", "del", namespace], check=False)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces left by earlier harness runs whose process is gone; returns their names."""
    removed = []
    for name in namespace_names():
        match = _STALE_NAME.match(name)
        if match and not process_alive(int(match.group(1))):
            _delete_namespace(name)
            removed.append(name)
    return removed


@dataclass(frozen=True)
class Node:
    """One namespace on the bridge: ``name`` is the logical name the test uses."""

    name: str
    namespace: str
    address: str
    index: int


@dataclass
class _Started:
    node: Node
    process: subprocess.Popen[Any]
    log_path: Path | None
    log_file: IO[bytes] | None = field(default=None, repr=False)


class Cluster:
    """N nodes in their own network namespaces on one private bridge. Use as a context manager."""

    def __init__(self, names: Sequence[str] | int) -> None:
        self.names = [f"n{i}" for i in range(names)] if isinstance(names, int) else list(names)
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"node names must be unique: {self.names}")
        if len(self.names) > 250:
            raise ValueError("a /24 holds at most 250 nodes here")
        self.prefix = f"{NAMESPACE_PREFIX}{os.getpid()}x{next(_counter)}"
        self.bridge_namespace = f"{self.prefix}-br"
        self.nodes: dict[str, Node] = {}
        self._started: list[_Started] = []
        self._closed = False

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> Cluster:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Create the bridge namespace and one namespace per node; faults start cleared."""
        remove_stale_namespaces()
        _open_clusters.append(self)
        try:
            _run(["ip", "netns", "add", self.bridge_namespace])
            self._in_bridge("link", "add", "br0", "type", "bridge")
            self._in_bridge("link", "set", "br0", "up")
            for index, name in enumerate(self.names):
                self._add_node(index, name)
        except BaseException:
            self.close()
            raise

    def _in_bridge(self, *argv: str) -> None:
        _run(["ip", "-n", self.bridge_namespace, *argv])

    def _add_node(self, index: int, name: str) -> None:
        namespace = f"{self.prefix}-{index}"
        address = f"{SUBNET}.{FIRST_HOST + index}"
        _run(["ip", "netns", "add", namespace])
        self.nodes[name] = Node(name=name, namespace=namespace, address=address, index=index)
        port = f"p{index}"
        self._in_bridge(
            "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace
        )
        self._in_bridge("link", "set", port, "master", "br0")
        self._in_bridge("link", "set", port, "up")
        inside = ["ip", "-n", namespace]
        _run([*inside, "link", "set", "lo", "up"])
        _run([*inside, "addr", "add", f"{address}/24", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        # Limited broadcast (LAN beacons to 255.255.255.255) needs a route, and there is no
        # default route on purpose (nothing may leave); this one stays on the private bridge.
        _run([*inside, "route", "add", "255.255.255.255/32", "dev", "eth0"])
        if shutil.which("nft") is not None:
            self._nft(namespace, _FAULT_RULESET)

    def close(self) -> None:
        """Stop every process and delete every namespace and file this cluster made. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for started in self._started:
            _stop(started.process, grace=3.0)
            for stream in (started.process.stdout, started.process.stderr, started.log_file):
                if stream is not None:
                    stream.close()
        for node in self.nodes.values():
            _delete_namespace(node.namespace)
        _delete_namespace(self.bridge_namespace)
        if self in _open_clusters:
            _open_clusters.remove(self)

    # ---- processes ----------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def _resolve(self, node: Node | str) -> Node:
        return node if isinstance(node, Node) else self.nodes[node]

    def run(
        self,
        node: Node | str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | str | None = None,
        log_path: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` inside the node's namespace and return it.

        Output goes to ``log_path`` (stdout and stderr together), or to pipes with ``capture``,
        or is discarded. The process gets its own session so :meth:`close` can kill its whole
        group. ``env`` replaces the environment (pass ``os.environ`` entries yourself).
        """
        target = self._resolve(node)
        log_file: IO[bytes] | None = None
        stdout: Any = subprocess.DEVNULL
        stderr: Any = subprocess.DEVNULL
        if log_path is not None:
            log_file = log_path.open("ab")
            stdout, stderr = log_file, subprocess.STDOUT
        elif capture:
            stdout, stderr = subprocess.PIPE, subprocess.PIPE
        process = subprocess.Popen(
            ["ip", "netns", "exec", target.namespace, *argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        self._started.append(_Started(target, process, log_path, log_file))
        return process

    def execute(
        self,
        node: Node | str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        cwd: Path | str | None = None,
        timeout: float = 30.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the node's namespace to completion and return its output (text)."""
        target = self._resolve(node)
        return subprocess.run(
            ["ip", "netns", "exec", target.namespace, *argv],
            env=dict(env) if env is not None else None,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def stop(self, process: subprocess.Popen[Any], grace: float = 5.0) -> int | None:
        """SIGTERM the process group, SIGKILL after ``grace`` seconds; returns the exit code."""
        return _stop(process, grace)

    def log_tails(self, lines: int = 30) -> str:
        """The last lines of every process log, for assertion messages."""
        parts = []
        for started in self._started:
            if started.log_path is None or not started.log_path.exists():
                continue
            if started.log_file is not None:
                started.log_file.flush()
            text = started.log_path.read_text(errors="replace").splitlines()[-lines:]
            header = f"--- {started.node.name} ({started.log_path.name}) ---"
            parts.append("\n".join([header, *text]))
        return "\n".join(parts)

    def set_hosts(self, names: Mapping[str, str]) -> None:
        """Give every namespace an ``/etc/hosts`` mapping ``names`` (host name -> address).

        As Docker does for a container, each namespace's file also maps the machine's host name
        to that namespace's own address, so ``gethostbyname(gethostname())`` (how a node fills in
        a wildcard ``--listen`` address) gives the address its peers can reach.
        """
        shared = ["127.0.0.1 localhost", "::1 localhost ip6-localhost"]
        shared += [f"{address} {name}" for name, address in names.items()]
        hostname = socket.gethostname()
        for node in self.nodes.values():
            directory = NETNS_ETC / node.namespace
            directory.mkdir(parents=True, exist_ok=True)
            lines = [f"{node.address} {hostname}", *shared]
            (directory / "hosts").write_text("\n".join(lines) + "\n")

    # ---- faults -------------------------------------------------------------------------------

    def _nft(self, namespace: str, script: str) -> None:
        _run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input_text=script)

    def loss(self, node: Node | str, percent: int) -> None:
        """Drop ``percent`` % of the packets the node receives (0 clears). Loopback is spared."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss percent must be 0..100, got {percent}")
        target = self._resolve(node)
        script = f"flush chain inet {FAULT_TABLE} loss\n"
        if percent:
            script += f"add rule inet {FAULT_TABLE} loss numgen random mod 100 < {percent} drop\n"
        self._nft(target.namespace, script)

    def partition(self, group_a: Iterable[Node | str], group_b: Iterable[Node | str]) -> None:
        """Cut every packet between the two groups, both directions (adds to earlier cuts)."""
        side_a = [self._resolve(node) for node in group_a]
        side_b = [self._resolve(node) for node in group_b]
        if {node.name for node in side_a} & {node.name for node in side_b}:
            raise ValueError("a node cannot be on both sides of a partition")
        for own, other in ((side_a, side_b), (side_b, side_a)):
            addresses = ", ".join(node.address for node in other)
            for node in own:
                self._nft(
                    node.namespace,
                    f"add rule inet {FAULT_TABLE} partition ip saddr {{ {addresses} }} drop\n",
                )

    def heal(self) -> None:
        """Remove every partition and every loss rule on every node."""
        for node in self.nodes.values():
            self._nft(
                node.namespace,
                f"flush chain inet {FAULT_TABLE} partition\nflush chain inet {FAULT_TABLE} loss\n",
            )

    def fault_rules(self, node: Node | str) -> str:
        """The node's fault table as ``nft list`` prints it (for debugging and tests)."""
        target = self._resolve(node)
        inside = ["ip", "netns", "exec", target.namespace]
        return _run([*inside, "nft", "list", "table", "inet", FAULT_TABLE])


_FAULT_RULESET = f"""
table inet {FAULT_TABLE} {{
    chain partition {{
    }}
    chain loss {{
    }}
    chain input {{
        type filter hook input priority 0; policy accept;
        iif "lo" accept
        jump partition
        jump loss
    }}
}}
"""


def _stop(process: subprocess.Popen[Any], grace: float) -> int | None:
    if process.poll() is not None:
        return process.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    try:
        return process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return None


@atexit.register
def _close_open_clusters() -> None:
    for cluster in list(_open_clusters):
        cluster.close()
