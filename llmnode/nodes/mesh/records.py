"""Origin-signed node state records (no I/O): sign our own, verify and decode others'.

A record travels through third parties (gossip relays, push-pull); the Ed25519 signature of its
origin over (domain, origin, version, payload) means no relay can forge or alter it.
"""

from __future__ import annotations

import math
import struct
import time

import msgspec

from llmnode.bus import crypto
from llmnode.bus.identity import Identity
from llmnode.errors import Rejected
from llmnode.schemas.membership import SignedRecord
from llmnode.schemas.state import NodeState, ServiceLoad

_DOMAIN = b"llmnode/state-record/v1"
_decoder = msgspec.msgpack.Decoder(NodeState)
_encoder = msgspec.msgpack.Encoder()


def _signed_bytes(domain: bytes, origin: bytes, version: int, payload: bytes) -> bytes:
    return domain + origin + struct.pack("!Q", version) + payload


def sign_by_origin(identity: Identity, domain: bytes, version: int, payload: bytes) -> bytes:
    """The origin's signature of a versioned record that travels through third parties (node
    state, deployments): over a domain tag (so one kind never verifies as another), the origin,
    the version and the payload."""
    return crypto.sign(
        _signed_bytes(domain, identity.node_id, version, payload), identity.secret_key
    )


def verify_by_origin(
    domain: bytes, origin: bytes, version: int, payload: bytes, signature: bytes
) -> bool:
    """True when ``payload`` at ``version`` was signed by ``origin`` under ``domain``, unaltered."""
    return crypto.verify(_signed_bytes(domain, origin, version, payload), signature, origin)


def sign_record(identity: Identity, version: int, state: NodeState) -> SignedRecord:
    payload = _encoder.encode(state)
    signature = sign_by_origin(identity, _DOMAIN, version, payload)
    return SignedRecord(
        origin=identity.node_id, version=version, payload=payload, signature=signature
    )


def verify_record(record: SignedRecord) -> bool:
    """True when ``record`` was signed by its origin node, unaltered."""
    return verify_by_origin(
        _DOMAIN, record.origin, record.version, record.payload, record.signature
    )


def decode_state(record: SignedRecord) -> NodeState:
    try:
        return _decoder.decode(record.payload)
    except msgspec.DecodeError as error:  # ValidationError derives from DecodeError
        raise Rejected("bad_record", str(error)[:200]) from error


MEMORY_STEP = 1.1  # memory for models: a change of a tenth is gossiped


def memory_class(memory_mb: int) -> int:
    """Which band of width ×1.1 the memory for models falls in (0: none). It follows free RAM,
    which moves all the time; placement needs it roughly, so only a band change is gossiped."""
    if memory_mb <= 0:
        return 0
    return 1 + math.floor(math.log(memory_mb) / math.log(MEMORY_STEP))


def capability_key(state: NodeState) -> bytes:
    """What of ``state`` is gossiped as a change: everything but the fast-changing figures (each
    service's queue, in-flight count and counters; free memory and utilisation; requests
    served), which travel on replies and :class:`LoadReport` instead. So does a service's
    time per request: only its first measurement is news (callers weigh nodes they have never
    heard from by the record's figure); after that it travels with the load, since an average
    of a few requests' times crosses any band's edge several times a second under load. The
    memory for models counts by its band (:func:`memory_class`)."""
    services = [
        msgspec.structs.replace(
            info,
            load=ServiceLoad(
                slots=info.load.slots,
                queue_limit=info.load.queue_limit,
                memory_mb=info.load.memory_mb,
                ewma_service_ms=1.0 if info.load.ewma_service_ms > 0.0 else 0.0,
            ),
        )
        for info in state.services
    ]
    gpus = [
        msgspec.structs.replace(gpu, memory_free_mb=0, utilization_pct=0)
        for gpu in state.resources.gpus
    ]
    resources = msgspec.structs.replace(state.resources, ram_free_mb=0, gpus=gpus)
    steady = msgspec.structs.replace(
        state,
        services=services,
        resources=resources,
        requests_served=0,
        model_memory_mb=memory_class(state.model_memory_mb),
    )
    return _encoder.encode(steady)


def needs_signing(
    state: NodeState, published: tuple[NodeState | None, float], refresh_s: float
) -> bool:
    """True when ``state``'s capabilities differ from those last signed (``published``: that
    state and when), or the last record is ``refresh_s`` old."""
    last, signed_at = published
    if last is None or time.time() - signed_at >= refresh_s:
        return True
    if capability_key(state) == capability_key(last):
        return False
    # Free RAM wobbling across a band's edge is not news: the memory for models counts as
    # changed only once it is a band's width (a tenth) away from the value last signed. (32
    # nodes on one busy machine re-signed together up to 7 times a minute: 3x the bytes.)
    others = msgspec.structs.replace(state, model_memory_mb=last.model_memory_mb)
    return capability_key(others) != capability_key(last) or moved(
        last.model_memory_mb, state.model_memory_mb, MEMORY_STEP
    )


def moved(signed: float, now: float, step: float) -> bool:
    """Whether a figure moved a band's width (×``step``) from the value last signed (from
    nothing to something always counts)."""
    low, high = sorted((signed, now))
    if low <= 0:
        return high > 0
    return high >= step * low
