"""Cryptographic primitives of the bus: the one module that imports nacl (no I/O).

Everything here is a thin, typed wrapper over libsodium through ``nacl.bindings`` (the
high-level PyNaCl classes copy and validate more than the hot path can afford):

- Ed25519 signing keys: the node identity; its public key is the node id.
- X25519 keys derived from the Ed25519 ones, for the pair key of two nodes.
- Pair key = BLAKE2b keyed by the mesh key over the X25519 shared key of the two nodes, so a
  frame can only be made or read by a node that holds both a node key and the mesh key.
- XChaCha20-Poly1305 AEAD for every frame body, with the frame header as associated data.

Library errors are translated to :class:`llmnode.errors.CryptoError` here.
"""

from __future__ import annotations

import os

import nacl.bindings as sodium
import nacl.exceptions

from llmnode.errors import CryptoError

PUBLIC_KEY_BYTES = 32
SECRET_KEY_BYTES = 64  # libsodium's Ed25519 secret key: seed || public key
SEED_BYTES = 32
SIGNATURE_BYTES = 64
NONCE_BYTES = 24
TAG_BYTES = 16
MESH_KEY_BYTES = 32
KEY_ID_BYTES = 4

_PAIR_PERSON = b"llmnode-pair-v1\x00"
_HELLO_PERSON = b"llmnode-helo-v1\x00"
_KEY_ID_PERSON = b"llmnode-kid-v1\x00\x00"
_CURVE_CLIENT_PERSON = b"llmnode-curv-v1\x00"
_CURVE_SERVER_PERSON = b"llmnode-csrv-v1\x00"

_aead_encrypt = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt
_aead_decrypt = sodium.crypto_aead_xchacha20poly1305_ietf_decrypt
_sign = sodium.crypto_sign
_sign_open = sodium.crypto_sign_open
_blake2b = sodium.crypto_generichash_blake2b_salt_personal


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the operating system's CSPRNG."""
    return os.urandom(size)


def signing_key_pair(seed: bytes | None = None) -> tuple[bytes, bytes]:
    """An Ed25519 ``(public 32 bytes, secret 64 bytes)`` pair, from ``seed`` or a fresh one."""
    if seed is None:
        seed = random_bytes(SEED_BYTES)
    if len(seed) != SEED_BYTES:
        raise CryptoError(f"an Ed25519 seed is {SEED_BYTES} bytes, got {len(seed)}")
    public, secret = sodium.crypto_sign_seed_keypair(seed)
    return bytes(public), bytes(secret)


def seed_of(secret: bytes) -> bytes:
    """The 32-byte seed a 64-byte Ed25519 secret key was made from."""
    return bytes(secret[:SEED_BYTES])


def sign(message: bytes, secret: bytes) -> bytes:
    """The 64-byte detached Ed25519 signature of ``message``."""
    return _sign(message, secret)[:SIGNATURE_BYTES]


def verify(message: bytes, signature: bytes, public: bytes) -> bool:
    """Whether ``signature`` is ``public``'s signature of ``message``. Never raises."""
    try:
        _sign_open(signature + message, public)
    except (nacl.exceptions.CryptoError, ValueError, TypeError, RuntimeError):
        return False
    return True


def pair_key(our_secret: bytes, peer_public: bytes, mesh_key: bytes) -> bytes:
    """The symmetric AEAD key two nodes share under one mesh key (the same on both sides)."""
    try:
        our_x25519 = sodium.crypto_sign_ed25519_sk_to_curve25519(our_secret)
        peer_x25519 = sodium.crypto_sign_ed25519_pk_to_curve25519(peer_public)
        shared = sodium.crypto_box_beforenm(peer_x25519, our_x25519)
    except (nacl.exceptions.CryptoError, ValueError, TypeError, RuntimeError) as error:
        raise CryptoError(f"cannot derive a pair key: {error}") from error
    return _blake2b(shared, digest_size=32, key=mesh_key, person=_PAIR_PERSON)


def hello_key(mesh_key: bytes) -> bytes:
    """The AEAD key of hello frames, which go to nodes whose key we do not know yet."""
    return _blake2b(b"", digest_size=32, key=mesh_key, person=_HELLO_PERSON)


def key_id(mesh_key: bytes) -> bytes:
    """A 4-byte public name of a mesh key (a hash; says nothing about the key)."""
    return _blake2b(mesh_key, digest_size=KEY_ID_BYTES, person=_KEY_ID_PERSON)


def curve_client_keys(mesh_key: bytes) -> tuple[bytes, bytes]:
    """The CurveZMQ ``(public, secret)`` client pair of a mesh key; only its holders derive it."""
    secret = _blake2b(b"", digest_size=32, key=mesh_key, person=_CURVE_CLIENT_PERSON)
    return bytes(sodium.crypto_scalarmult_base(secret)), secret


def curve_server_keys() -> tuple[bytes, bytes]:
    """The CurveZMQ ``(public, secret)`` server pair every node uses: a published constant.

    It authenticates nothing (admission rests on the client pair); CurveZMQ's short-term keys
    still keep the link private from a passive observer.
    """
    secret = _blake2b(b"", digest_size=32, person=_CURVE_SERVER_PERSON)
    return bytes(sodium.crypto_scalarmult_base(secret)), secret


def encrypt(plaintext: bytes, associated: bytes, nonce: bytes, key: bytes) -> bytes:
    """XChaCha20-Poly1305: ciphertext with its 16-byte tag appended."""
    return _aead_encrypt(plaintext, associated, nonce, key)


def decrypt(ciphertext: bytes, associated: bytes, nonce: bytes, key: bytes) -> bytes:
    """The plaintext, or :class:`CryptoError` if the tag does not verify."""
    try:
        return _aead_decrypt(ciphertext, associated, nonce, key)
    except (nacl.exceptions.CryptoError, ValueError, TypeError, RuntimeError) as error:
        raise CryptoError("decryption failed") from error
