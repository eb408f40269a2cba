"""Push-pulls soon after a join: a node that joins while others join learns them in seconds.

Machines called directly on explicit time, and whole meshes on the memory network, where
frames to a peer the sender has only just learned are dropped while its connection comes up
(as ZeroMQ drops them with IMMEDIATE): the condition that left 32 real nodes waiting for the
periodic push-pull.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from llmnode.nodes.membership import Membership, MembershipConfig
from llmnode.nodes.membership.simulation import join_storm, node_id
from llmnode.schemas.membership import MemberSnapshot, PushPull

# The timings of the 32-node run (probe interval 0.5 s), periodic push-pull every 15 s.
FAST = MembershipConfig().scaled(2.0)
NO_PERIODIC = dataclasses.replace(MembershipConfig(), push_pull_interval=1e9)


def joiner(config: MembershipConfig) -> Membership:
    return Membership(
        node_id(1), "mem://1", config, rng=random.Random(1), verify_record=lambda record: True
    )


def seed_view(members: int) -> PushPull:
    snapshot = [MemberSnapshot(node_id(i), f"mem://{i}", 0, "alive") for i in range(members)]
    return PushPull(members=[m for m in snapshot if m.node != node_id(1)])


def push_pulls_until(machine: Membership, until: float) -> list[tuple[float, PushPull]]:
    """Tick ``machine`` at its deadlines until ``until``; the push-pulls it sent, when."""
    sent: list[tuple[float, PushPull]] = []
    now = 0.0
    while True:
        now = max(now, machine.next_deadline())
        if now > until:
            return sent
        sent.extend((now, o.message) for o in machine.tick(now) if isinstance(o.message, PushPull))


def test_a_joined_node_push_pulls_after_one_two_and_four_probe_intervals_and_then_stops() -> None:
    machine = joiner(NO_PERIODIC)
    (join,) = machine.join([(node_id(0), "mem://0")], 0.0)
    assert isinstance(join.message, PushPull) and join.message.join
    machine.receive(node_id(0), seed_view(8), 0.01)
    sent = push_pulls_until(machine, 600.0)
    probe = NO_PERIODIC.probe_interval
    assert [round(at / probe, 6) for at, _ in sent] == [1.0, 3.0, 7.0]
    assert all(message.digest and message.reply and not message.join for _, message in sent)


def test_no_sync_rounds_when_turned_off() -> None:
    machine = joiner(dataclasses.replace(NO_PERIODIC, join_sync_rounds=0))
    machine.join([(node_id(0), "mem://0")], 0.0)
    machine.receive(node_id(0), seed_view(8), 0.01)
    assert push_pulls_until(machine, 600.0) == []


def test_a_join_whose_answer_was_lost_is_retried_at_the_first_sync_round() -> None:
    machine = joiner(NO_PERIODIC)
    machine.join([(node_id(0), "mem://0")], 0.0)  # the seed's answer never comes
    sent = push_pulls_until(machine, NO_PERIODIC.probe_interval)
    assert [(at, message.join) for at, message in sent] == [(NO_PERIODIC.probe_interval, True)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_32_nodes_joining_one_seed_at_once_all_see_32_alive_within_two_seconds(seed: int) -> None:
    took, _ = join_storm(FAST, 32, seed, connect_delay=0.3)
    assert took is not None and took <= 2.0


def test_without_sync_rounds_the_same_join_waits_for_the_periodic_push_pull() -> None:
    no_sync = dataclasses.replace(FAST, join_sync_rounds=0)
    took, _ = join_storm(no_sync, 32, 0, connect_delay=0.3)
    assert took is not None and took > 5.0


def test_join_storm_with_loss_converges_within_two_seconds() -> None:
    took, _ = join_storm(FAST, 32, 5, loss=0.05)
    assert took is not None and took <= 2.0
