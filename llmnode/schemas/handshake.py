"""Handshake messages: Hello to an address, HelloAck back to its sender (no I/O).

A node that knows only an address sends a Hello in a hello frame (keyed by the mesh key alone);
the receiver learns the sender's key and address and answers a HelloAck in a normal data frame
(keyed by both node keys and the mesh key), echoing the nonce. After it both sides know each
other's key and address, and each has proved it holds the mesh key.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from llmnode.schemas.base import PROTOCOL_VERSION, WireMessage

Address = Annotated[str, msgspec.Meta(max_length=512)]
Nonce = Annotated[bytes, msgspec.Meta(min_length=8, max_length=64)]
Name = Annotated[str, msgspec.Meta(max_length=256)]


class Hello(WireMessage, frozen=True):
    address: Address  # where the sender can be reached (its advertised address)
    nonce: Nonce  # random; echoed by the HelloAck
    name: Name = ""  # the sender's human name
    version: int = PROTOCOL_VERSION


class HelloAck(WireMessage, frozen=True):
    address: Address
    nonce: Nonce
    name: Name = ""
