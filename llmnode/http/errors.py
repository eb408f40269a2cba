"""Errors in OpenAI's shape; the one map from MeshError to HTTP statuses (no I/O).

Every error the HTTP face returns is ``{"error": {"message", "type", "param", "code"}}``. A
``MeshError`` from the mesh is translated here, once; nothing else chooses a status.
"""

from __future__ import annotations

import msgspec

from llmnode.errors import (
    AccessDenied,
    Busy,
    DeadlineExceeded,
    MeshError,
    ModelError,
    NoCapacity,
    UnknownAgent,
)

RETRY_AFTER_S = 1  # what a 429 asks the client to wait: a slot usually frees within a second

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",  # OpenAI's own 401 and 404 bodies say so
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


class HttpError(MeshError):
    """A request the HTTP face answers with ``status`` and an OpenAI-shaped error body."""

    code = "http"

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.error_code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": _TYPES.get(self.status, "server_error"),
                "param": self.param,
                "code": self.error_code,
            }
        }

    def json(self) -> bytes:
        return msgspec.json.encode(self.body())


def from_mesh_error(error: MeshError) -> HttpError:
    """The HTTP answer to an error raised in the mesh."""
    if isinstance(error, HttpError):
        return error
    message = str(error)
    if isinstance(error, UnknownAgent):
        return HttpError(404, message, param="model", code="model_not_found")
    if isinstance(error, NoCapacity | Busy):
        return HttpError(429, message, code="no_capacity", retry_after=RETRY_AFTER_S)
    if isinstance(error, DeadlineExceeded):
        return HttpError(504, message, code="deadline_exceeded")
    if isinstance(error, AccessDenied):
        return HttpError(403, message, code="access_denied")
    if isinstance(error, ModelError):
        return HttpError(500, message, code="model_error")
    return HttpError(500, message, code=error.code)
