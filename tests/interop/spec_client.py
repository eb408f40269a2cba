"""A minimal llmnode client written from docs/PROTOCOL.md alone (does network I/O).

It uses only pynacl, pyzmq and msgpack, and never imports llmnode: it is the proof that the
specification is enough to talk to a node. Section numbers refer to docs/PROTOCOL.md.
Not for production: its own ROUTER admits any CurveZMQ client.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from typing import Any

import msgpack
import nacl.bindings as sodium
import nacl.signing
import zmq

HEADER = struct.Struct("!2sBB4s32s32sIQQ")  # section 3
DATA, HELLO = 1, 2
NO_RECIPIENT = bytes(32)


def blake2b(message: bytes, key: bytes, person: bytes, size: int) -> bytes:
    return hashlib.blake2b(message, key=key, person=person, digest_size=size).digest()


def key_id(mesh_key: bytes) -> bytes:
    return blake2b(mesh_key, b"", b"llmnode-kid-v1\0\0", 4)


def hello_key(mesh_key: bytes) -> bytes:
    return blake2b(b"", mesh_key, b"llmnode-helo-v1\0", 32)


def pair_key(our_secret: bytes, their_id: bytes, mesh_key: bytes) -> bytes:
    ours = sodium.crypto_sign_ed25519_sk_to_curve25519(our_secret)
    theirs = sodium.crypto_sign_ed25519_pk_to_curve25519(their_id)
    return blake2b(sodium.crypto_box_beforenm(theirs, ours), mesh_key, b"llmnode-pair-v1\0", 32)


def curve_server_pair() -> tuple[bytes, bytes]:
    secret = blake2b(b"", b"", b"llmnode-csrv-v1\0", 32)
    return sodium.crypto_scalarmult_base(secret), secret


def curve_client_pair(mesh_key: bytes) -> tuple[bytes, bytes]:
    secret = blake2b(b"", mesh_key, b"llmnode-curv-v1\0", 32)
    return sodium.crypto_scalarmult_base(secret), secret


class SpecClient:
    """Handshakes with one node and sends it requests (section 4)."""

    def __init__(self, mesh_key: bytes) -> None:
        self.mesh_key = mesh_key
        signing = nacl.signing.SigningKey(os.urandom(32))
        self.node_id = bytes(signing.verify_key)
        self.secret = bytes(signing) + self.node_id  # libsodium's 64-byte secret key
        self.epoch = int(time.time()) & 0xFFFFFFFF
        self.sequence = time.time_ns() // 1000
        self.context = zmq.Context()
        server_public, server_secret = curve_server_pair()
        self.router = self.context.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        self.router.setsockopt(zmq.CURVE_SERVER, 1)
        self.router.setsockopt(zmq.CURVE_SECRETKEY, server_secret)
        self.router.bind("tcp://127.0.0.1:*")
        self.address = self.router.getsockopt_string(zmq.LAST_ENDPOINT)
        client_public, client_secret = curve_client_pair(mesh_key)
        self.dealer = self.context.socket(zmq.DEALER)
        self.dealer.setsockopt(zmq.LINGER, 0)
        self.dealer.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        self.dealer.setsockopt(zmq.CURVE_PUBLICKEY, client_public)
        self.dealer.setsockopt(zmq.CURVE_SECRETKEY, client_secret)
        self.dealer.setsockopt(zmq.ROUTING_ID, self.address.encode())
        self.peer = b""

    def close(self) -> None:
        self.dealer.close()
        self.router.close()
        self.context.term()

    def seal(self, kind: int, recipient: bytes, key: bytes, body: bytes) -> bytes:
        self.sequence += 1
        header = HEADER.pack(
            b"LN", 1, kind, key_id(self.mesh_key), self.node_id, recipient,
            self.epoch, self.sequence, int(time.time() * 1000),
        )  # fmt: skip
        nonce = os.urandom(24)
        sealed = header + nonce
        sealed += sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(body, header, nonce, key)
        return sealed + sodium.crypto_sign(sealed, self.secret)[:64]

    def open(self, frame: bytes) -> tuple[bytes, dict[str, Any]]:
        """(sender, message) of a DATA frame to us; ValueError if it does not verify."""
        magic, version, kind, kid, sender, recipient, _, _, _ = HEADER.unpack_from(frame)
        if (magic, version, kind, recipient) != (b"LN", 1, DATA, self.node_id):
            raise ValueError("not a DATA frame to us")
        if kid != key_id(self.mesh_key):
            raise ValueError("unknown key id")
        signed, signature = frame[:-64], frame[-64:]
        sodium.crypto_sign_open(signature + signed, sender)  # raises if forged
        body = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
            frame[116:-64], frame[:92], frame[92:116], pair_key(self.secret, sender, self.mesh_key)
        )
        return sender, msgpack.unpackb(body)

    def receive(self, timeout: float) -> tuple[bytes, dict[str, Any]] | None:
        if not self.router.poll(int(timeout * 1000)):
            return None
        parts = self.router.recv_multipart()
        return self.open(parts[-1])

    def handshake(self, address: str, timeout: float = 30.0) -> bytes:
        """Hello until the HelloAck; the node's id (section 4, steps 1-3)."""
        self.dealer.connect(address)
        nonce = os.urandom(16)
        hello = msgpack.packb(
            {"type": "Hello", "address": self.address, "nonce": nonce, "name": "interop",
             "version": 1}
        )  # fmt: skip
        deadline, interval = time.monotonic() + timeout, 0.01
        while time.monotonic() < deadline:
            frame = self.seal(HELLO, NO_RECIPIENT, hello_key(self.mesh_key), hello)
            with contextlib.suppress(zmq.Again):  # not connected yet
                self.dealer.send(frame, zmq.NOBLOCK)
            answer = self.receive(interval)
            if answer is not None:
                sender, message = answer
                if message.get("type") == "HelloAck" and message.get("nonce") == nonce:
                    self.peer = sender
                    return sender
            interval = min(interval * 2, 0.25)
        raise TimeoutError(f"no HelloAck from {address}")

    def request(
        self, service: str, method: str, payload: bytes, timeout: float = 60.0
    ) -> list[dict[str, Any]]:
        """Send a Request; every reply with its id up to the Result/ErrorReply/Refuse."""
        request_id = os.urandom(16)
        body = msgpack.packb(
            {"type": "Request", "id": request_id, "service": service, "method": method,
             "payload": payload, "deadline": time.time() + timeout, "idempotent": True,
             "stream": False, "caller": "interop"}
        )  # fmt: skip
        self.dealer.send(
            self.seal(DATA, self.peer, pair_key(self.secret, self.peer, self.mesh_key), body)
        )
        replies: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.receive(deadline - time.monotonic())
            if answer is None:
                break
            _, message = answer
            if message.get("id") != request_id:
                continue
            replies.append(message)
            if message["type"] in ("Result", "ErrorReply", "Refuse"):
                return replies
        raise TimeoutError(f"no final reply to {service} in {timeout} s: {replies}")
