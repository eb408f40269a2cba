"""Fuzzing Sealer.open and the codec: arbitrary bytes only ever raise Rejected."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.sealing import HEADER_BYTES, Sealer
from llmnode.errors import Rejected
from llmnode.schemas.messages import decode

NOW = 1_800_000_000.0
RING = MeshKeyRing.generate()
SENDER = Sealer(Identity.generate(), RING, epoch=1)
RECEIVER = Sealer(Identity.generate(), RING, epoch=1)
VALID = SENDER.seal(RECEIVER.node_id, b"\x81\xa4type\xa6Cancel", NOW)


def mutate(frame: bytes, edits: list[tuple[int, int]], cut: int) -> bytes:
    changed = bytearray(frame)
    for index, value in edits:
        changed[index % len(changed)] = value
    return bytes(changed[: max(0, len(changed) - cut)])


frames = st.one_of(
    st.binary(max_size=600),
    st.builds(
        mutate,
        st.just(VALID),
        st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
        st.integers(0, 40),
    ),
    st.builds(lambda tail: VALID[:HEADER_BYTES] + tail, st.binary(max_size=300)),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(frames)
def test_only_rejected_escapes_open_and_decode_of_arbitrary_frames(frame: bytes) -> None:
    try:
        decode(RECEIVER.open(frame, NOW).body)
    except Rejected as rejection:
        assert rejection.reason


@settings(max_examples=2_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=400))
def test_only_rejected_escapes_decode_of_validly_sealed_garbage(body: bytes) -> None:
    frame = SENDER.seal(RECEIVER.node_id, body, NOW)
    opened = RECEIVER.open(frame, NOW)
    assert opened.body == body
    try:
        decode(opened.body)
    except Rejected as rejection:
        assert rejection.reason in {"malformed", "invalid_message"}


def test_a_union_tag_that_is_not_utf8_is_rejected_not_raised() -> None:
    # found by benchmarks/fuzz.py (target "body"): msgspec raised UnicodeDecodeError
    body = bytes.fromhex("89a474797065a789a474797065a752657175657374a269526564c4")
    with pytest.raises(Rejected) as caught:
        decode(body)
    assert caught.value.reason == "malformed"
    frame = SENDER.seal(RECEIVER.node_id, body, NOW)
    with pytest.raises(Rejected):
        decode(RECEIVER.open(frame, NOW).body)
