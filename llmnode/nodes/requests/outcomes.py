"""How one try of a request ends, as the router's typed errors (pure, no I/O).

A try either answers, or fails in a way the retry policy judges (:class:`AttemptFailed`: the
node died, stalled or never answered), or ends in a typed refusal or error from the serving
node, rebuilt here from its wire fields.
"""

from __future__ import annotations

from llmnode.errors import (
    AgentLost,
    DeadlineExceeded,
    MeshError,
    NoCapacity,
    TransportError,
    error_from_code,
)
from llmnode.schemas.requests import ErrorReply, Refuse


class AttemptFailed(Exception):
    def __init__(self, reason: str, accepted: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.accepted = accepted

    @property
    def may_have_run(self) -> bool:
        """Whether the node may have run the request: it accepted it, or the request was sent
        and no answer settles it (a lost or late Accept, the node lost). Only a request never
        sent surely did not run; one not idempotent is retried only then."""
        return self.accepted or self.reason != "send_failed"


def at_deadline(last_error: MeshError | None, service: str, timeout: float) -> MeshError:
    if isinstance(last_error, NoCapacity):
        return last_error
    return DeadlineExceeded(f"no answer from {service!r} within {timeout:.1f} s")


def failed_error(service: str, failure: AttemptFailed, idempotent: bool) -> MeshError:
    """The error a failed attempt becomes when it is not retried: :class:`TransportError` for a
    request that never left, :class:`AgentLost` for one whose node went away or fell silent."""
    if failure.reason == "send_failed":
        return TransportError(f"could not send the request to a node serving {service!r}")
    if failure.may_have_run and not idempotent:
        return AgentLost(
            f"node serving {service!r} failed ({failure.reason}) after "
            f"{'accepting' if failure.accepted else 'it may have received'} "
            "a request that is not idempotent; not retried"
        )
    return AgentLost(f"node serving {service!r} failed ({failure.reason})")


def typed_error(message: Refuse | ErrorReply) -> MeshError:
    return error_from_code(
        message.code, message.message, remote_type=message.remote_type, reason=message.reason
    )
