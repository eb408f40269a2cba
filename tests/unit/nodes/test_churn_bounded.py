"""A node's tables stay bounded under churn: members that left are forgotten everywhere."""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from pathlib import Path

import pytest

from llmnode.bus.bus import Bus
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.nodes.membership import Membership, MembershipConfig, Outbound
from llmnode.nodes.mesh.records import verify_record
from tests.support.inprocess import PROBE_INTERVAL, in_process_mesh

CYCLES = 1000
TOMBSTONE_S = 0.3


def _send_all(bus: Bus, outbound: list[Outbound]) -> None:
    for item in outbound:
        if item.address and bus.peer_address(item.to) is None:
            bus.add_peer(item.to, item.address)
        bus.send(item.to, item.message)


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_a_thousand_joins_and_leaves_leave_the_bus_and_the_view_bounded(
    tmp_path: Path,
) -> None:
    scaled = MembershipConfig().scaled(1.0 / PROBE_INTERVAL)
    config = dataclasses.replace(scaled, tombstone_timeout=TOMBSTONE_S)
    async with in_process_mesh(tmp_path) as mesh:
        observer = await mesh.start(membership_config=config)
        assert observer.membership is not None
        largest = 0
        for cycle in range(CYCLES):
            address = f"tcp://127.0.0.2:{30000 + cycle}"
            bus = Bus(
                Identity.generate(),
                MeshKeyRing(mesh.keyring.primary),
                mesh.network.endpoint(address),
            )
            await bus.start()
            member = Membership(
                bus.node_id, address, config, rng=random.Random(cycle), verify_record=verify_record
            )
            _send_all(bus, member.join([(observer.node_id, observer.bus.address)], time.time()))
            # The joiner learns the observer from its push-pull answer, then leaves gracefully.
            while member.state_of(observer.node_id) != "alive":
                inbound = await asyncio.wait_for(bus.receive(), 2.0)
                _send_all(bus, member.receive(inbound.sender, inbound.message, time.time()))
            _send_all(bus, member.leave(time.time()))
            for _ in range(500):
                if observer.membership.state_of(bus.node_id) == "left":
                    break
                await asyncio.sleep(0.001)
            assert observer.membership.state_of(bus.node_id) == "left", f"cycle {cycle}"
            await bus.close()
            largest = max(largest, len(observer.bus.peers), len(observer.view.peers))
        # While it ran: only members within one tombstone period were still kept.
        assert largest < CYCLES / 2
        await asyncio.sleep(TOMBSTONE_S + 10 * PROBE_INTERVAL)
        assert len(observer.membership.members()) == 1
        assert observer.bus.peers == {}
        assert list(observer.view.peers) == [observer.node_id]
        assert observer.bus.tracked_senders <= 1
