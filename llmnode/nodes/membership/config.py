"""Membership timings (memberlist LAN defaults) and the formulas that scale them (no I/O).

Every timing is in seconds. :meth:`MembershipConfig.scaled` divides them all by a factor so
tests over real time run 10–50× faster; the simulation runs on a virtual clock and needs none.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

PUSH_PULL_SCALE_THRESHOLD = 32


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_multiplier: int = 4
    suspicion_max_timeout_multiplier: int = 6
    suspicion_confirmations: int = 3  # Lifeguard's K (memberlist uses suspicion_multiplier - 2)
    awareness_max_multiplier: int = 8
    retransmit_multiplier: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    # Push-pulls with a random member after a join, 1, 2 and 4 probe intervals apart: members
    # that joined at the same time (whose Alive gossip this node was not yet known to receive)
    # are learned in seconds instead of at the next periodic push-pull. 0 turns them off.
    join_sync_rounds: int = 3
    # A member learned this recently is not probed yet: its connection is still being set up
    # (see probing). 0 probes it at once.
    new_member_grace: float = 1.0
    tombstone_timeout: float = 300.0  # dead and left members are forgotten after this
    max_gossip_bytes: int = 4096  # piggyback budget of one Ping, Ack or Gossip message
    max_broadcast_queue: int = 4096
    # Both True: records are announced and pulled, push-pull compares digests. False gives the
    # earlier design (records pushed whole, whole views exchanged): the benchmarks' baseline.
    lazy_records: bool = True
    digest_push_pull: bool = True

    def scaled(self, factor: float) -> MembershipConfig:
        """The same configuration with every timing divided by ``factor``."""
        return dataclasses.replace(
            self,
            probe_interval=self.probe_interval / factor,
            probe_timeout=self.probe_timeout / factor,
            gossip_interval=self.gossip_interval / factor,
            gossip_to_the_dead_time=self.gossip_to_the_dead_time / factor,
            push_pull_interval=self.push_pull_interval / factor,
            new_member_grace=self.new_member_grace / factor,
            tombstone_timeout=self.tombstone_timeout / factor,
        )


def join_sync_delay(probe_interval: float, round_index: int) -> float:
    """Seconds from a join (``round_index`` 0) or the previous sync round to the next one."""
    return probe_interval * (1 << round_index)


def retransmit_limit(multiplier: int, members: int) -> int:
    """How many times each gossip item is sent on: multiplier × ceil(log10(members + 1))."""
    return multiplier * math.ceil(math.log10(members + 1))


def suspicion_timeout(multiplier: int, members: int, probe_interval: float) -> float:
    """The minimum suspicion timeout: multiplier × max(1, log10(members)) × probe interval."""
    return multiplier * max(1.0, math.log10(max(1, members))) * probe_interval


def push_pull_scale(interval: float, members: int) -> float:
    """Push-pull interval stretched for large meshes (memberlist's pushPullScale)."""
    if members <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(members) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return interval * multiplier


def remaining_suspicion(confirmations: int, expected: int, minimum: float, maximum: float) -> float:
    """Lifeguard's dynamic suspicion timeout: from ``maximum`` down to ``minimum`` as
    independent confirmations arrive (log-scaled, reaching the minimum at ``expected``)."""
    if expected < 1:
        return minimum
    fraction = math.log(confirmations + 1.0) / math.log(expected + 1.0)
    return max(minimum, maximum - fraction * (maximum - minimum))
