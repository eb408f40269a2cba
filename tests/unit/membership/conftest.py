"""Fixtures for membership tests: real Ed25519 record signing (nacl, as the node shell will)."""

from __future__ import annotations

import nacl.exceptions
import nacl.signing
import pytest

from llmnode.schemas.membership import SignedRecord, signed_record_content


class Signer:
    """A node identity that signs its state records, and the verifier a shell would inject."""

    def __init__(self) -> None:
        self.key = nacl.signing.SigningKey.generate()
        self.node = bytes(self.key.verify_key)

    def record(self, version: int, payload: bytes) -> SignedRecord:
        content = signed_record_content(self.node, version, payload)
        return SignedRecord(self.node, version, payload, self.key.sign(content).signature)

    @staticmethod
    def verify(record: SignedRecord) -> bool:
        try:
            nacl.signing.VerifyKey(record.origin).verify(record.signed_content(), record.signature)
        except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
            return False
        return True


@pytest.fixture
def signers() -> list[Signer]:
    return [Signer() for _ in range(4)]
