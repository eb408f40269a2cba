"""Origin-signed node state records (no I/O): sign our own, verify and decode others'.

A record travels through third parties (gossip relays, push-pull); the Ed25519 signature of its
origin over (domain, origin, version, payload) means no relay can forge or alter it.
"""

from __future__ import annotations

import struct

import msgspec

from llmnode.bus import crypto
from llmnode.bus.identity import Identity
from llmnode.errors import Rejected
from llmnode.schemas.membership import SignedRecord
from llmnode.schemas.state import NodeState

_DOMAIN = b"llmnode/state-record/v1"
_decoder = msgspec.msgpack.Decoder(NodeState)
_encoder = msgspec.msgpack.Encoder()


def _signed_bytes(origin: bytes, version: int, payload: bytes) -> bytes:
    return _DOMAIN + origin + struct.pack("!Q", version) + payload


def sign_record(identity: Identity, version: int, state: NodeState) -> SignedRecord:
    payload = _encoder.encode(state)
    signature = crypto.sign(_signed_bytes(identity.node_id, version, payload), identity.secret_key)
    return SignedRecord(
        origin=identity.node_id, version=version, payload=payload, signature=signature
    )


def verify_record(record: SignedRecord) -> bool:
    """True when ``record`` was signed by its origin node, unaltered."""
    return crypto.verify(
        _signed_bytes(record.origin, record.version, record.payload),
        record.signature,
        record.origin,
    )


def decode_state(record: SignedRecord) -> NodeState:
    try:
        return _decoder.decode(record.payload)
    except msgspec.DecodeError as error:  # ValidationError derives from DecodeError
        raise Rejected("bad_record", str(error)[:200]) from error
