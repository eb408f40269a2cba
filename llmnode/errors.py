"""The one exception tree of llmnode (no I/O).

Every error a user or a caller can see derives from :class:`MeshError`; errors from zmq, nacl,
msgspec and onnxruntime are translated where those libraries are called (``raise ... from``)::

    MeshError
    ├── ConfigError              bad flags, files, keys or environment
    ├── ProtocolError            a frame or message that does not decode or validate
    │   └── Rejected             a frame refused by the bus (``reason`` says why)
    ├── CryptoError              a signature, a MAC or a key that does not verify
    ├── TransportError           sockets, addresses, a queue that is full
    │   └── NotRunning           no local node answers on the control socket
    ├── SchedulingError          routing a request
    │   ├── NoCapacity           no node can take the request before its deadline
    │   ├── Busy                 one node refused (its queue is full); the caller re-routes
    │   ├── DeadlineExceeded     the deadline passed before an answer
    │   └── Cancelled            the caller cancelled
    └── AgentError               an agent or its handler
        ├── UnknownAgent         no agent (or model) of that name in the mesh
        ├── AccessDenied         the caller's node key is not on the agent's allowlist
        ├── HandlerError         the remote handler raised; ``remote_type`` names its class
        ├── AgentLost            the agent's process went away while serving the request
        └── ModelError           model store, export or runtime
"""

from __future__ import annotations


class MeshError(Exception):
    """Root of every llmnode error. ``str(error)`` is one readable line."""

    code = "mesh_error"


class ConfigError(MeshError):
    code = "config"


class ProtocolError(MeshError):
    code = "protocol"


class Rejected(ProtocolError):
    """A frame the bus refused. ``reason`` is a stable snake_case counter name."""

    code = "rejected"

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"frame rejected: {reason}" + (f" ({detail})" if detail else ""))


class CryptoError(MeshError):
    code = "crypto"


class TransportError(MeshError):
    code = "transport"


class NotRunning(TransportError):
    code = "not_running"


class SchedulingError(MeshError):
    code = "scheduling"


class NoCapacity(SchedulingError):
    code = "no_capacity"


class Busy(SchedulingError):
    code = "busy"


class DeadlineExceeded(SchedulingError):
    code = "deadline"


class Cancelled(SchedulingError):
    code = "cancelled"


class AgentError(MeshError):
    code = "agent"


class UnknownAgent(AgentError):
    code = "unknown_agent"


class AgentLost(AgentError):
    """The process hosting the agent stopped or disconnected while serving the request. The
    router retries an idempotent request on another replica; others fail with this error."""

    code = "agent_lost"


class AccessDenied(AgentError):
    code = "access_denied"


class HandlerError(AgentError):
    code = "handler"

    def __init__(self, message: str, remote_type: str = "") -> None:
        self.remote_type = remote_type
        super().__init__(message)


class ModelError(AgentError):
    code = "model"


_BY_CODE: dict[str, type[MeshError]] = {}


def _register(cls: type[MeshError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(MeshError)


def error_from_code(
    code: str, message: str, *, remote_type: str = "", reason: str = ""
) -> MeshError:
    """Rebuild a typed error that crossed the wire as ``(code, message, remote_type, reason)``:
    the one decoder of errors for the bus, the control socket and the agent host alike."""
    cls = _BY_CODE.get(code, MeshError)
    if cls is Rejected:
        return Rejected(reason or "remote", message)
    if cls is HandlerError:
        return HandlerError(message, remote_type=remote_type)
    return cls(message)


def error_fields(error: MeshError) -> tuple[str, str, str, str]:
    """``(code, message, remote_type, reason)``: what a typed error becomes on the wire. A
    :class:`Rejected` travels as its detail, so the rebuilt error reads as the original."""
    if isinstance(error, Rejected):
        return error.code, error.detail, "", error.reason
    return error.code, str(error), getattr(error, "remote_type", ""), getattr(error, "reason", "")
