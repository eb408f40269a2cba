"""Every way an attempt can fail ends, when it is not retried, in a typed error a caller can
act on — never the bare root :class:`MeshError` (the chaos benchmark counted two of those)."""

from __future__ import annotations

import pytest

from llmnode.errors import AgentLost, MeshError, TransportError
from llmnode.nodes.requests.outcomes import AttemptFailed, failed_error

GONE = ["agent_lost", "peer_down", "stalled", "no_answer"]


@pytest.mark.parametrize("reason", GONE)
@pytest.mark.parametrize("idempotent", [True, False])
def test_a_node_that_went_away_is_agent_lost(reason: str, idempotent: bool) -> None:
    error = failed_error("ledger", AttemptFailed(reason, accepted=True), idempotent)
    assert type(error) is AgentLost
    assert reason in str(error)
    if not idempotent:
        assert "not retried" in str(error)


def test_a_request_never_sent_is_a_transport_error() -> None:
    error = failed_error("ledger", AttemptFailed("send_failed", accepted=False), False)
    assert type(error) is TransportError


@pytest.mark.parametrize("reason", [*GONE, "send_failed"])
def test_no_failure_is_the_bare_root(reason: str) -> None:
    for accepted in (True, False):
        for idempotent in (True, False):
            error = failed_error("x", AttemptFailed(reason, accepted), idempotent)
            assert type(error) is not MeshError
