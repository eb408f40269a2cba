"""The test vectors of docs/PROTOCOL.md, recomputed from the code and compared with the doc.

Run as a script to print the vectors as JSON (what the doc's block holds).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from llmnode.bus import crypto
from llmnode.bus.identity import Identity, node_id_to_text
from llmnode.bus.keyring import MeshKeyRing
from llmnode.bus.sealing import DATA, HEADER, HELLO, MAGIC, NO_RECIPIENT, Sealer
from llmnode.nodes.discovery.beacon import decode_beacon, encode_beacon
from llmnode.nodes.membership.digests import digest
from llmnode.nodes.mesh.records import sign_by_origin
from llmnode.nodes.requests.receipts import verify_receipt
from llmnode.schemas.base import PROTOCOL_VERSION
from llmnode.schemas.handshake import Hello
from llmnode.schemas.membership import Gossip, RecordVersion, signed_record_content
from llmnode.schemas.messages import decode, encode
from llmnode.schemas.receipts import (
    RECEIPT_DOMAIN,
    Receipt,
    SignedReceipt,
    receipt_bytes,
    signed_bytes,
)
from llmnode.schemas.requests import Request

DOC = Path(__file__).parents[3] / "docs" / "PROTOCOL.md"
SEED_A = bytes(range(32))
SEED_B = bytes(range(32, 64))
MESH_KEY = bytes(range(64, 96))
NONCE = bytes(range(100, 124))
EPOCH = 1
TIMESTAMP_MS = 1_700_000_000_000
ADDRESS = "tcp://127.0.0.1:7946"


def frame(
    kind: int, sender: Identity, recipient: bytes, key: bytes, seq: int, body: bytes
) -> bytes:
    header = HEADER.pack(
        MAGIC, PROTOCOL_VERSION, kind, crypto.key_id(MESH_KEY), sender.node_id, recipient,
        EPOCH, seq, TIMESTAMP_MS,
    )  # fmt: skip
    signed = header + NONCE + crypto.encrypt(body, header, NONCE, key)
    return signed + crypto.sign(signed, sender.secret_key)


def signed_receipt(a: Identity) -> bytes:
    empty = hashlib.sha256(b"").hexdigest()
    receipt = Receipt(
        node=a.node_id, node_name="a", model="m", method="chat", request_sha256=empty,
        output_sha256=empty, prompt_tokens=1, completion_tokens=2, issued_at=1.7e9,
    )  # fmt: skip
    content = receipt_bytes(receipt)
    return signed_bytes(SignedReceipt(content, sign_by_origin(a, RECEIPT_DOMAIN, 1, content)))


def compute() -> dict[str, Any]:
    a, b = Identity(SEED_A), Identity(SEED_B)
    hello = encode(Hello(address=ADDRESS, nonce=bytes(16), name="a"))
    request = encode(
        Request(id=bytes(16), service="echo", method="request", payload=b"hi", deadline=1.7e9)
    )
    hello_frame = frame(HELLO, a, NO_RECIPIENT, crypto.hello_key(MESH_KEY), 1, hello)
    pair = crypto.pair_key(a.secret_key, b.node_id, MESH_KEY)
    data_frame = frame(DATA, a, b.node_id, pair, 2, request)
    record_content = signed_record_content(a.node_id, 3, b"state")
    view = [(a.node_id, 1, "alive", 3), (b.node_id, 0, "suspect", 0)]
    return {
        "seed_a": SEED_A.hex(),
        "seed_b": SEED_B.hex(),
        "mesh_key": MESH_KEY.hex(),
        "mesh_key_text": MeshKeyRing.key_to_text(MESH_KEY),
        "node_id_a": a.node_id.hex(),
        "node_id_a_text": node_id_to_text(a.node_id),
        "node_id_b": b.node_id.hex(),
        "key_id": crypto.key_id(MESH_KEY).hex(),
        "hello_key": crypto.hello_key(MESH_KEY).hex(),
        "pair_key_ab": pair.hex(),
        "curve_server_public": crypto.curve_server_keys()[0].hex(),
        "curve_server_secret": crypto.curve_server_keys()[1].hex(),
        "curve_client_public": crypto.curve_client_keys(MESH_KEY)[0].hex(),
        "curve_client_secret": crypto.curve_client_keys(MESH_KEY)[1].hex(),
        "nonce": NONCE.hex(),
        "hello_body": hello.hex(),
        "hello_frame": hello_frame.hex(),
        "request_body": request.hex(),
        "data_frame_a_to_b": data_frame.hex(),
        "beacon": encode_beacon(MESH_KEY, crypto.key_id(MESH_KEY), a.node_id, ADDRESS).hex(),
        "record_signed_content": record_content.hex(),
        "record_signature": crypto.sign(record_content, a.secret_key).hex(),
        "announce_body": encode(Gossip(announce=[RecordVersion(a.node_id, 3)])).hex(),
        "digest_a1_alive_v3_b0_suspect_4_buckets": [f"{d:016x}" for d in digest(view, 4)],
        "receipt_signed": signed_receipt(a).hex(),
    }


def documented() -> dict[str, Any]:
    match = re.search(r"<!-- vectors -->\s*```json\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, "docs/PROTOCOL.md has no vectors block"
    vectors: dict[str, Any] = json.loads(match.group(1))
    return vectors


def test_the_documented_vectors_are_what_the_code_computes() -> None:
    assert documented() == compute()


def test_the_documented_frames_open_with_the_code() -> None:
    vectors = documented()
    a, b = Identity(SEED_A), Identity(SEED_B)
    now = TIMESTAMP_MS / 1000
    receiver = Sealer(b, MeshKeyRing(MESH_KEY), epoch=9)
    hello = receiver.open(bytes.fromhex(vectors["hello_frame"]), now)
    assert (hello.kind, hello.sender, hello.seq) == (HELLO, a.node_id, 1)
    assert decode(hello.body) == Hello(address=ADDRESS, nonce=bytes(16), name="a")
    data = receiver.open(bytes.fromhex(vectors["data_frame_a_to_b"]), now)
    assert (data.kind, data.sender, data.epoch, data.seq) == (DATA, a.node_id, EPOCH, 2)
    assert isinstance(decode(data.body), Request)
    beacon = decode_beacon(bytes.fromhex(vectors["beacon"]), {crypto.key_id(MESH_KEY): MESH_KEY})
    assert beacon == (a.node_id, ADDRESS)
    assert crypto.verify(
        bytes.fromhex(vectors["record_signed_content"]),
        bytes.fromhex(vectors["record_signature"]),
        a.node_id,
    )
    receipt = verify_receipt(bytes.fromhex(vectors["receipt_signed"]))
    assert (receipt.node, receipt.completion_tokens) == (a.node_id, 2)


if __name__ == "__main__":
    print(json.dumps(compute(), indent=2))
