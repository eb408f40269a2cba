"""Sealing: round trips, and every rejection reason of Sealer.open."""

from __future__ import annotations

import pytest

from llmnode.bus import crypto
from llmnode.bus.identity import Identity
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.sealing import (
    DATA,
    HEADER,
    HEADER_BYTES,
    HELLO,
    MAGIC,
    OVERHEAD,
    Sealer,
)
from llmnode.errors import Rejected
from llmnode.schemas.base import MAX_FRAME_BYTES, PROTOCOL_VERSION

NOW = 1_800_000_000.0


@pytest.fixture
def ring() -> MeshKeyRing:
    return MeshKeyRing.generate()


@pytest.fixture
def alice(ring: MeshKeyRing) -> Sealer:
    return Sealer(Identity.generate(), ring, epoch=7)


@pytest.fixture
def bob(ring: MeshKeyRing) -> Sealer:
    return Sealer(Identity.generate(), ring, epoch=9)


def reason_of(sealer: Sealer, frame: bytes, now: float = NOW) -> str:
    with pytest.raises(Rejected) as caught:
        sealer.open(frame, now)
    return caught.value.reason


def flip(frame: bytes, index: int) -> bytes:
    changed = bytearray(frame)
    changed[index] ^= 0x01
    return bytes(changed)


def test_sealed_frame_opens_to_the_same_body_sender_and_header(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"hello bob", NOW)
    opened = bob.open(frame, NOW + 1)
    assert opened.body == b"hello bob"
    assert opened.sender == alice.node_id
    assert (opened.epoch, opened.seq, opened.kind) == (7, 1, DATA)
    assert opened.timestamp == pytest.approx(NOW, abs=0.001)
    assert len(frame) == OVERHEAD + len(b"hello bob")


def test_body_never_appears_in_the_frame(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"distinctive-marker-XYZZY" * 4, NOW)
    assert b"XYZZY" not in frame


def test_sequence_numbers_increase_per_frame(alice: Sealer, bob: Sealer) -> None:
    seqs = [bob.open(alice.seal(bob.node_id, b"x", NOW), NOW).seq for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]


def test_hello_frame_opens_for_any_holder_of_the_mesh_key(
    alice: Sealer, bob: Sealer, ring: MeshKeyRing
) -> None:
    frame = alice.seal(bob.node_id, b"hi", NOW, kind=HELLO)
    third = Sealer(Identity.generate(), ring, epoch=1)
    assert third.open(frame, NOW).kind == HELLO
    assert bob.open(frame, NOW).body == b"hi"


def test_too_short_and_too_large(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"x", NOW)
    assert reason_of(bob, frame[: OVERHEAD - 1]) == "too_short"
    assert reason_of(bob, b"") == "too_short"
    assert reason_of(bob, bytes(MAX_FRAME_BYTES + 1)) == "too_large"


def test_bad_version_and_bad_magic(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"x", NOW)
    assert reason_of(bob, flip(frame, 2)) == "bad_version"  # version byte
    assert reason_of(bob, flip(frame, 0)) == "bad_version"  # magic


def test_unknown_frame_kind_is_malformed(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"x", NOW)
    changed = bytearray(frame)
    changed[3] = 9
    assert reason_of(bob, bytes(changed)) == "malformed"


def test_frame_for_another_node_is_wrong_recipient(
    alice: Sealer, bob: Sealer, ring: MeshKeyRing
) -> None:
    carol = Sealer(Identity.generate(), ring, epoch=1)
    assert reason_of(bob, alice.seal(carol.node_id, b"x", NOW)) == "wrong_recipient"


def test_frame_under_another_mesh_key_is_unknown_key(bob: Sealer) -> None:
    outsider = Sealer(Identity.generate(), MeshKeyRing.generate(), epoch=1)
    assert reason_of(bob, outsider.seal(bob.node_id, b"x", NOW)) == "unknown_key"
    assert reason_of(bob, outsider.seal(b"", b"x", NOW, kind=HELLO)) == "unknown_key"


def test_timestamps_outside_the_window_are_stale_or_future(alice: Sealer, bob: Sealer) -> None:
    assert reason_of(bob, alice.seal(bob.node_id, b"x", NOW - 61)) == "stale"
    assert reason_of(bob, alice.seal(bob.node_id, b"x", NOW + 61)) == "future"
    bob.timestamp_window_s = 120.0
    assert bob.open(alice.seal(bob.node_id, b"x", NOW - 61), NOW).body == b"x"


def test_sender_outside_the_allowlist_is_unknown_sender(alice: Sealer, ring: MeshKeyRing) -> None:
    guarded = Sealer(Identity.generate(), ring, epoch=1, allowlist=[b"o" * 32])
    assert reason_of(guarded, alice.seal(guarded.node_id, b"x", NOW)) == "unknown_sender"
    guarded.allowlist = frozenset({alice.node_id})
    assert guarded.open(alice.seal(guarded.node_id, b"x", NOW), NOW).body == b"x"


def test_a_frame_opens_once_then_is_a_replay(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"x", NOW)
    bob.open(frame, NOW)
    assert reason_of(bob, frame) == "replay"


@pytest.mark.parametrize(
    "where",
    [
        "sender_epoch",  # header fields the cheap checks do not look at
        "sequence",
        "timestamp_low_bit",
        "nonce",
        "ciphertext",
        "tag",
        "signature",
    ],
)
def test_one_flipped_bit_is_bad_signature(alice: Sealer, bob: Sealer, where: str) -> None:
    body = b"a body of some length"
    frame = alice.seal(bob.node_id, body, NOW)
    index = {
        "sender_epoch": HEADER_BYTES - 20,
        "sequence": HEADER_BYTES - 9,
        "timestamp_low_bit": HEADER_BYTES - 1,
        "nonce": HEADER_BYTES + 3,
        "ciphertext": HEADER_BYTES + 24 + 2,
        "tag": len(frame) - 64 - 1,
        "signature": len(frame) - 5,
    }[where]
    assert reason_of(bob, flip(frame, index)) == "bad_signature"
    assert bob.open(frame, NOW).body == body  # the genuine frame still opens afterwards


def test_flipped_sender_bit_is_bad_signature(alice: Sealer, bob: Sealer) -> None:
    frame = alice.seal(bob.node_id, b"x", NOW)
    assert reason_of(bob, flip(frame, 8 + 5)) == "bad_signature"


def test_forged_frame_does_not_advance_the_replay_window(alice: Sealer, bob: Sealer) -> None:
    genuine = alice.seal(bob.node_id, b"x", NOW)
    forged = bytearray(genuine)
    # a huge sequence number with a broken signature must not push the window past genuine
    forged[HEADER_BYTES - 16 : HEADER_BYTES - 8] = (2**63).to_bytes(8, "big")
    assert reason_of(bob, bytes(forged)) == "bad_signature"
    assert bob.open(genuine, NOW).body == b"x"


def test_validly_signed_frame_under_the_wrong_aead_key_is_decrypt_failed(
    bob: Sealer, ring: MeshKeyRing
) -> None:
    mallory = Identity.generate()
    header = HEADER.pack(
        MAGIC,
        PROTOCOL_VERSION,
        DATA,
        ring.primary_id,
        mallory.node_id,
        bob.node_id,
        1,
        1,
        int(NOW * 1000),
    )
    nonce = crypto.random_bytes(24)
    signed = header + nonce + crypto.encrypt(b"x", header, nonce, bytes(32))
    frame = signed + crypto.sign(signed, mallory.secret_key)
    assert reason_of(bob, frame) == "decrypt_failed"


def test_rotated_primary_is_used_on_the_next_frame_and_old_key_still_opens(
    alice: Sealer, bob: Sealer, ring: MeshKeyRing
) -> None:
    old_frame = alice.seal(bob.node_id, b"old", NOW)
    new_key = MeshKeyRing.generate_key()
    ring.add(new_key)
    ring.use(new_key)
    new_frame = alice.seal(bob.node_id, b"new", NOW)
    assert new_frame[4:8] == ring.primary_id
    assert bob.open(old_frame, NOW).body == b"old"
    assert bob.open(new_frame, NOW).body == b"new"
    retired_key_frame = alice.seal(bob.node_id, b"z", NOW)
    ring.use(ring.keys[1])  # back to the old key, then retire the new one
    ring.remove(new_key)
    assert reason_of(bob, retired_key_frame) == "unknown_key"
