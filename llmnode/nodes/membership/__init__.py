"""SWIM membership with Lifeguard: a pure state machine and its configuration (no I/O).

See :mod:`llmnode.nodes.membership.machine` for how it works and how the modules divide it.
"""

from __future__ import annotations

from llmnode.nodes.membership.config import MembershipConfig
from llmnode.nodes.membership.machine import Membership
from llmnode.nodes.membership.members import Member, MemberEvent, Outbound

__all__ = ["Member", "MemberEvent", "Membership", "MembershipConfig", "Outbound"]
