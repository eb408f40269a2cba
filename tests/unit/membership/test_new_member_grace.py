"""A member learned moments ago is not probed until ``new_member_grace`` has passed: the shell
has only just opened its connection, and a probe then measures the connection's set-up."""

from __future__ import annotations

import collections
import dataclasses
import random

from llmnode.nodes.membership import Membership, MembershipConfig
from llmnode.nodes.membership.simulation import join_storm, node_id
from llmnode.schemas.membership import Ack, MemberSnapshot, Ping, PushPull

CONFIG = dataclasses.replace(MembershipConfig(), push_pull_interval=1e9, join_sync_rounds=0)


def machine_knowing(members: list[int], now: float, config: MembershipConfig) -> Membership:
    machine = Membership(
        node_id(0), "mem://0", config, rng=random.Random(0), verify_record=lambda record: True
    )
    view = [MemberSnapshot(node_id(i), f"mem://{i}", 0, "alive") for i in members]
    machine.receive(node_id(members[0]), PushPull(members=view), now)
    return machine


def pings_until(machine: Membership, start: float, until: float) -> list[tuple[float, bytes]]:
    """Tick at every deadline from ``start`` to ``until``, every member answering at once;
    (when, target) of each Ping sent."""
    pings: list[tuple[float, bytes]] = []
    now = start
    while now <= until:
        for out in machine.tick(now):
            if isinstance(out.message, Ping):
                pings.append((now, out.message.target))
                machine.receive(out.message.target, Ack(seq=out.message.seq), now)
        now = max(now + 1e-6, machine.next_deadline())
    return pings


def test_members_learned_less_than_the_grace_ago_are_probed_only_after_it() -> None:
    machine = machine_knowing([1, 2, 3], 10.0, CONFIG)
    pings = pings_until(machine, 10.0, 20.0)
    assert pings and pings[0][0] >= 10.0 + CONFIG.new_member_grace
    assert {target for _, target in pings[:3]} == {node_id(1), node_id(2), node_id(3)}


def test_a_new_member_is_probed_after_the_grace_within_one_round_of_the_order() -> None:
    machine = machine_knowing([1, 2, 3, 4], 0.0, CONFIG)
    pings_until(machine, 0.0, 1.5)  # the four are old now
    machine.receive(
        node_id(1), PushPull(members=[MemberSnapshot(node_id(5), "mem://5", 0, "alive")]), 1.5
    )
    pings = pings_until(machine, 1.6, 12.0)
    first_of_five = next(at for at, target in pings if target == node_id(5))
    grace_ends = 1.5 + CONFIG.new_member_grace
    assert grace_ends <= first_of_five <= grace_ends + 5 * CONFIG.probe_interval  # 5 members


def test_grace_zero_probes_a_new_member_at_once() -> None:
    machine = machine_knowing([1], 10.0, dataclasses.replace(CONFIG, new_member_grace=0.0))
    assert pings_until(machine, 10.0, 11.0)[0][1] == node_id(1)


def test_32_nodes_joining_at_once_suspect_nobody_despite_connection_set_up_drops() -> None:
    fast = MembershipConfig().scaled(2.0)
    took, graced = join_storm(fast, 32, 0, connect_delay=0.3)
    no_grace = dataclasses.replace(fast, new_member_grace=0.0)
    took_before, ungraced = join_storm(no_grace, 32, 0, connect_delay=0.3)
    assert took is not None and took_before is not None
    assert collections.Counter(e.event.kind for e in graced.events)["suspected"] == 0
    before = collections.Counter(e.event.kind for e in ungraced.events)
    assert before["suspected"] > 50 and before["dead"] == 0  # what it prevents: all refuted
