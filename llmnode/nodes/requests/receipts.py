"""Signing receipts on the serving node and verifying them anywhere (no I/O).

A receipt (:mod:`llmnode.schemas.receipts`) is signed like every record that travels through
third parties, with :func:`~llmnode.nodes.mesh.records.sign_by_origin`: Ed25519 over the receipt
domain tag, the node id, the receipt's version and its canonical bytes. The node id is the
node's public key, so a receipt verifies on its own; whether that node is one you trust is
yours to check (:func:`verify_receipt`'s ``node``).
"""

from __future__ import annotations

import time
from typing import Any

from llmnode.bus.identity import Identity, node_id_from_text, node_id_to_text
from llmnode.errors import CryptoError, ProtocolError
from llmnode.nodes.mesh.records import sign_by_origin, verify_by_origin
from llmnode.schemas.receipts import (
    RECEIPT_DOMAIN,
    Receipt,
    SignedReceipt,
    decode_signed,
    receipt_bytes,
    signed_bytes,
)

MIN_PREFIX = 8  # a shorter prefix of a node id names too many possible nodes


class ReceiptSigner:
    """Signs the receipts of one node (its identity and the name it gives itself)."""

    def __init__(self, identity: Identity, node_name: str = "") -> None:
        self._identity = identity
        self.node_name = node_name or identity.name[:8]

    def sign(self, **fields: Any) -> bytes:
        """The signed receipt's bytes for ``fields`` (every :class:`Receipt` field but ``node``,
        ``node_name`` and ``issued_at``, which the signer fills in)."""
        receipt = Receipt(
            node=self._identity.node_id,
            node_name=self.node_name,
            issued_at=round(time.time(), 3),
            **fields,
        )
        content = receipt_bytes(receipt)
        signature = sign_by_origin(self._identity, RECEIPT_DOMAIN, receipt.version, content)
        return signed_bytes(SignedReceipt(content, signature))


def verify_receipt(data: bytes, node: str = "") -> Receipt:
    """The receipt in ``data`` if its node's signature holds (and, given ``node``, it is that
    node's: its printed id or a prefix of at least 8 characters); else :class:`CryptoError`, or
    :class:`ProtocolError` for bytes that are no receipt."""
    signed, receipt = decode_signed(data)
    if not verify_by_origin(
        RECEIPT_DOMAIN, receipt.node, receipt.version, signed.receipt, signed.signature
    ):
        raise CryptoError(
            f"invalid receipt: the signature of node {node_id_to_text(receipt.node)} does not "
            "verify (altered, or not signed by that node)"
        )
    if node:
        signer = node_id_to_text(receipt.node)
        wanted = node.strip().lower()
        if len(wanted) >= len(signer):
            matches = node_id_from_text(wanted) == receipt.node
        else:
            matches = len(wanted) >= MIN_PREFIX and signer.startswith(wanted)
        if not matches:
            raise CryptoError(f"the receipt is signed by node {signer}, not {node}")
    return receipt


def check_hash(what: str, expected: str, actual: str) -> None:
    """:class:`CryptoError` when the sha256 of the user's copy differs from the receipt's."""
    if not expected:
        raise ProtocolError(f"the receipt has no {what} hash to check against")
    if expected != actual:
        raise CryptoError(
            f"the {what} does not match the receipt (sha256 {actual[:16]}…, "
            f"receipt says {expected[:16]}…)"
        )
