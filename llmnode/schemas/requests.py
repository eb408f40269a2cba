"""Request path messages between nodes: request, accept/busy, chunks, result, error, cancel.

No I/O. Every request has an id, a deadline (unix seconds) and an idempotency flag; payloads
are msgpack bytes of the service's own message types.
"""

from __future__ import annotations

from llmnode.schemas.base import WireMessage

SEND_METHOD = "send"  # an agent request answered once a handler has taken the message


class Request(WireMessage, frozen=True):
    id: bytes  # 16 random bytes
    service: str  # "model:NAME" or agent name
    method: str  # "generate", "chat", "embed", "request", "send"
    payload: bytes
    deadline: float
    idempotent: bool = True
    stream: bool = False
    caller: str = ""  # agent or client name at the origin, for logs and access control


class Accept(WireMessage, frozen=True):
    """Taken (and, repeated, still running). Carries the service's load right now, fresher than
    gossip, for the caller's scheduler; -1 means unknown."""

    id: bytes
    queue_depth: int = -1
    in_flight: int = -1
    ewma_service_ms: float = 0.0  # the service's smoothed time per request; 0 means unknown


class Refuse(WireMessage, frozen=True):
    """The serving node will not take the request: Busy (queue full) or unknown service."""

    id: bytes
    code: str  # "busy", "unknown_agent", "access_denied", "deadline"
    message: str = ""
    queue_depth: int = 0
    remote_type: str = ""  # see ErrorReply
    reason: str = ""


class Chunk(WireMessage, frozen=True):
    id: bytes
    seq: int
    data: bytes


class Result(WireMessage, frozen=True):
    id: bytes
    data: bytes
    chunks: int = 0  # how many chunks preceded it, so the caller can detect a gap
    queue_depth: int = -1  # the service's load as this request finished (see Accept)
    in_flight: int = -1
    ewma_service_ms: float = 0.0


class ErrorReply(WireMessage, frozen=True):
    id: bytes
    code: str  # an llmnode.errors code
    message: str
    # Placed last with defaults, so older nodes interoperate: the class a remote handler raised
    # (HandlerError), and a rejection's reason (Rejected). See llmnode.errors.error_fields.
    remote_type: str = ""
    reason: str = ""


class Cancel(WireMessage, frozen=True):
    id: bytes


class OneWay(WireMessage, frozen=True):
    """A fire-and-forget message to an agent, or a publication on a topic."""

    service: str  # agent name, or "topic:NAME"
    payload: bytes
    caller: str = ""
    message_id: bytes = b""  # dedup of publications delivered by more than one path


class LoadQuery(WireMessage, frozen=True):
    """What is ``service``'s load on you now? Sent by a caller whose knowledge of a sampled
    candidate is stale, just before it chooses (load is not gossiped: see ``LoadReport``)."""

    id: bytes  # 16 random bytes, echoed
    service: str


class LoadReport(WireMessage, frozen=True):
    """The answer to :class:`LoadQuery`: the service's load now; -1 means not served here."""

    id: bytes
    service: str
    queue_depth: int = -1
    in_flight: int = -1
    ewma_service_ms: float = 0.0
