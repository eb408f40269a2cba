"""Admission keys and the ZAP rule follow the live key ring; the beacon follows --listen."""

from __future__ import annotations

from zmq.utils import z85

from llmnode.bus import crypto
from llmnode.bus.admission import MeshKeyCredentials
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.lan import BeaconBinding, beacon_binding


def client_key_text(mesh_key: bytes) -> bytes:
    return z85.encode(crypto.curve_client_keys(mesh_key)[0])


def test_client_keys_are_per_mesh_key_and_the_server_key_is_one_constant() -> None:
    one, two = MeshKeyRing.generate_key(), MeshKeyRing.generate_key()
    assert crypto.curve_client_keys(one) == crypto.curve_client_keys(one)
    assert crypto.curve_client_keys(one)[0] != crypto.curve_client_keys(two)[0]
    assert crypto.curve_server_keys() == crypto.curve_server_keys()
    assert crypto.curve_server_keys()[0] not in (
        crypto.curve_client_keys(one)[0],
        crypto.curve_client_keys(two)[0],
    )


def test_the_zap_rule_follows_rotations_of_the_live_ring() -> None:
    old, new = MeshKeyRing.generate_key(), MeshKeyRing.generate_key()
    ring = MeshKeyRing(old)
    rule = MeshKeyCredentials(ring)
    assert rule.callback("llmnode", client_key_text(old))
    assert not rule.callback("llmnode", client_key_text(new))
    ring.add(new)
    assert rule.callback("llmnode", client_key_text(new))
    ring.use(new)
    ring.remove(old)
    assert not rule.callback("llmnode", client_key_text(old))
    assert rule.callback("llmnode", client_key_text(new))
    assert not rule.callback("llmnode", z85.encode(bytes(32)))


def test_the_beacon_binding_follows_the_listen_address() -> None:
    every = BeaconBinding("", "", "255.255.255.255")
    assert beacon_binding("tcp://0.0.0.0:7946") == every
    assert beacon_binding("tcp://*:7946") == every
    assert beacon_binding("tcp://127.0.0.1:7946") is None
    assert beacon_binding("tcp://localhost:7946") is None
    assert beacon_binding("tcp://[::1]:7946") is None
    assert beacon_binding("tcp://203.0.113.77:7946") is None  # no local interface has it
