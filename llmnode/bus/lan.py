"""Where the LAN beacon may listen and announce, from the bus's listen address (reads interfaces).

The beacon (:mod:`llmnode.nodes.discovery.beacon`) follows ``--listen``: a node bound to every
interface announces with ``255.255.255.255`` and listens on ``0.0.0.0``; a node bound to one address
announces and listens on that address's interface only, through its subnet's broadcast address;
a node bound to loopback or a named host that is not a local IPv4 address has no beacon.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from dataclasses import dataclass

from llmnode.log import get_logger

_log = get_logger(__name__)

_SIOCGIFADDR = 0x8915
_SIOCGIFBRDADDR = 0x8919
_SIOCGIFNETMASK = 0x891B
_WILDCARDS = ("", "*", "0.0.0.0")


@dataclass(frozen=True, slots=True)
class BeaconBinding:
    """Receive on ``(listen_host, port)``; send from ``source_host`` to ``(broadcast, port)``."""

    listen_host: str
    source_host: str
    broadcast: str


def _interface_address(name: str, request: int) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            packed = fcntl.ioctl(probe.fileno(), request, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def broadcast_of(host: str) -> str | None:
    """The broadcast address of the local interface that has IPv4 address ``host``, or None."""
    for _, name in socket.if_nameindex():
        if _interface_address(name, _SIOCGIFADDR) == host:
            broadcast = _interface_address(name, _SIOCGIFBRDADDR)
            if broadcast and broadcast != "0.0.0.0":
                return broadcast
            # `ip addr add A/24` without `brd +` sets no broadcast address: the subnet's is it.
            netmask = _interface_address(name, _SIOCGIFNETMASK)
            if netmask is None:
                return None
            network = ipaddress.IPv4Network(f"{host}/{netmask}", strict=False)
            return None if network.prefixlen >= 31 else str(network.broadcast_address)
    return None


def beacon_binding(listen: str) -> BeaconBinding | None:
    """How the beacon of a node listening on ``listen`` (``tcp://HOST:PORT``) binds; None: off."""
    binding = _binding(listen)
    if binding is None:
        _log.info("beacon_disabled", reason=f"{listen} is not on a LAN interface")
    return binding


def _binding(listen: str) -> BeaconBinding | None:
    host = listen.removeprefix("tcp://").rpartition(":")[0].strip("[]")
    if host in _WILDCARDS:
        return BeaconBinding("", "", "255.255.255.255")
    with contextlib.suppress(OSError, UnicodeError):
        host = socket.gethostbyname(host)  # a name: the address it stands for
    with contextlib.suppress(ValueError):
        address = ipaddress.ip_address(host)
        if address.version != 4 or address.is_loopback:
            return None
        broadcast = broadcast_of(host)
        if broadcast is None or broadcast == "0.0.0.0":
            return None
        return BeaconBinding(broadcast, host, broadcast)
    return None
