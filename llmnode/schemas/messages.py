"""The one union of wire messages, and its msgpack codec (no I/O).

Every :class:`~llmnode.schemas.base.WireMessage` subclass defined in the schema modules below
is a member of the union; the tag (class name) selects the type on decode.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Union

import msgspec

from llmnode.errors import Rejected
from llmnode.schemas import (  # noqa: F401 - registers
    control,
    handshake,
    membership,
    placement,
    requests,
)
from llmnode.schemas.base import WireMessage


def _subclasses(cls: type[WireMessage]) -> list[type[WireMessage]]:
    found: list[type[WireMessage]] = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def message_types() -> list[type[WireMessage]]:
    """Every concrete wire message type, sorted by tag."""
    return sorted(_subclasses(WireMessage), key=lambda c: c.__name__)


@cache
def _codec() -> tuple[msgspec.msgpack.Encoder, msgspec.msgpack.Decoder[Any]]:
    union: Any = Union[tuple(message_types())]  # noqa: UP007 - built at run time
    return msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder(union)


def encode(message: WireMessage) -> bytes:
    return _codec()[0].encode(message)


def decode(data: bytes) -> WireMessage:
    """Decode one message; anything malformed raises :class:`Rejected` (``malformed``)."""
    try:
        message: WireMessage = _codec()[1].decode(data)
    except msgspec.ValidationError as error:
        raise Rejected("invalid_message", str(error)[:200]) from error
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        # msgspec raises UnicodeDecodeError for a union tag that is not UTF-8 (found by
        # benchmarks/fuzz.py): it must not escape, or one bad body stops the bus's pump
        raise Rejected("malformed", str(error)[:200]) from error
    return message
