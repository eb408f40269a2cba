"""SWIM membership with Lifeguard: a pure state machine and its configuration (no I/O).

See :mod:`llmnode.nodes.membership.machine` for how it works.
"""

from __future__ import annotations

from llmnode.nodes.membership.config import MembershipConfig
from llmnode.nodes.membership.machine import Member, MemberEvent, Membership, Outbound

__all__ = ["Member", "MemberEvent", "Membership", "MembershipConfig", "Outbound"]
