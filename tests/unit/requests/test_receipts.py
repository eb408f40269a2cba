"""Signed receipts: what a node signs verifies, and any change to it, another key or garbage
does not (with one readable line from ``llmnode receipt verify``)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from llmnode.bus.identity import Identity
from llmnode.cli.main import app
from llmnode.errors import CryptoError, ProtocolError
from llmnode.http.receipt_check import check_fields, output_digest, read_saved, request_digest
from llmnode.http.receipts import RECEIPT_FIELD, header_value, stream_field
from llmnode.nodes.mesh.records import sign_by_origin
from llmnode.nodes.requests.receipts import ReceiptSigner, verify_receipt
from llmnode.schemas.inference import GenerateRequest
from llmnode.schemas.receipts import (
    RECEIPT_DOMAIN,
    SignedReceipt,
    decode_signed,
    request_sha256,
    signed_bytes,
    text_sha256,
)

NODE = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(32, 64)))
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
REQUEST = GenerateRequest(messages=[], prompt="", max_tokens=4)


def _signed(identity: Identity = NODE, text: str = "Paris.") -> bytes:
    return ReceiptSigner(identity, "models").sign(
        model="m",
        manifest_sha256="ab" * 32,
        method="chat",
        request_sha256=request_digest("chat", json.dumps(BODY).encode()),
        output_sha256=text_sha256(text),
        prompt_tokens=12,
        completion_tokens=32,
        queued_ms=1.5,
        ttft_ms=20.25,
        total_ms=300.0,
    )


def test_a_signed_receipt_verifies_and_names_its_node() -> None:
    receipt = verify_receipt(_signed())
    assert (receipt.node, receipt.node_name, receipt.model) == (NODE.node_id, "models", "m")
    assert (receipt.prompt_tokens, receipt.completion_tokens) == (12, 32)
    assert verify_receipt(_signed(), NODE.name).node == NODE.node_id
    assert verify_receipt(_signed(), NODE.name[:8]).node == NODE.node_id


def test_flipping_any_byte_makes_it_invalid() -> None:
    signed = _signed()
    for index in range(len(signed)):
        tampered = bytearray(signed)
        tampered[index] ^= 0x01
        with pytest.raises((CryptoError, ProtocolError)):
            verify_receipt(bytes(tampered))


def test_a_receipt_signed_by_another_key_is_invalid() -> None:
    signed, _ = decode_signed(_signed())
    forged = sign_by_origin(OTHER, RECEIPT_DOMAIN, 1, signed.receipt)  # claims NODE, OTHER signs
    with pytest.raises(CryptoError, match="does not verify"):
        verify_receipt(signed_bytes(SignedReceipt(signed.receipt, forged)))


def test_a_receipt_of_another_node_than_required_is_refused() -> None:
    with pytest.raises(CryptoError, match="signed by node"):
        verify_receipt(_signed(OTHER), NODE.name)


def test_garbage_is_a_protocol_error() -> None:
    for garbage in (b"", b"hello", b"\x92\xc4\x01a\xc4\x01b", bytes(5000)):
        with pytest.raises(ProtocolError):
            verify_receipt(garbage)


def test_the_request_hash_ignores_resumed_tokens() -> None:
    resumed = msgspec.structs.replace(REQUEST, resume_token_ids=[1, 2, 3])
    assert request_sha256(resumed) == request_sha256(REQUEST)
    other = msgspec.structs.replace(REQUEST, max_tokens=5)
    assert request_sha256(other) != request_sha256(REQUEST)


def test_every_saved_form_reads_back_the_same_receipt() -> None:
    signed = _signed()
    value = header_value(signed)
    field = stream_field(signed)
    assert field is not None and field["node"] == NODE.name and field["signed"] == value
    chunk = {"id": "x", "choices": [], RECEIPT_FIELD: field}
    forms = [
        value,
        f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-llmnode-receipt: {value}\r\n",
        json.dumps(field),
        json.dumps(chunk),
        f"data: {{}}\n\ndata: {json.dumps(chunk)}\n\ndata: [DONE]\n\n",
    ]
    for form in forms:
        assert read_saved(form)[0] == signed


def test_an_altered_readable_field_is_invalid() -> None:
    signed = _signed()
    field = stream_field(signed)
    assert field is not None
    check_fields(verify_receipt(signed), signed, field)
    with pytest.raises(CryptoError, match="'completion_tokens' differs"):
        check_fields(verify_receipt(signed), signed, {**field, "completion_tokens": 3})


def test_the_output_hash_reads_a_response_or_the_bare_text() -> None:
    answer = {"object": "chat.completion", "choices": [{"message": {"content": "Paris."}}]}
    assert output_digest("chat", json.dumps(answer).encode()) == text_sha256("Paris.")
    assert output_digest("chat", b"Paris.") == text_sha256("Paris.")


def _verify(*arguments: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["receipt", "verify", *arguments])
    return result.exit_code, result.output


def test_the_cli_prints_one_line_for_valid_and_for_invalid(tmp_path: Path) -> None:
    receipt = tmp_path / "receipt"
    receipt.write_text(header_value(_signed()))
    body = tmp_path / "body.json"
    body.write_text(json.dumps(BODY))
    output = tmp_path / "output.txt"
    output.write_text("Paris.")
    code, text = _verify(str(receipt), "--request", str(body), "--output", str(output))
    assert code == 0, text
    assert text.startswith("valid: served by node models") and "12+32 tokens" in text
    assert text.count("\n") == 1 and "request and output match" in text

    output.write_text("Lyon.")
    code, text = _verify(str(receipt), "--output", str(output))
    assert (code, text.count("\n")) == (1, 1) and "the output does not match" in text

    for garbage in ("hello!", "{not json", "data: [DONE]", ""):
        receipt.write_text(garbage)
        code, text = _verify(str(receipt))
        assert code == 1 and text.count("\n") == 1 and "Traceback" not in text, text

    receipt.write_text(header_value(_signed()))
    code, text = _verify(str(receipt), "--json")
    report = json.loads(text)
    assert code == 0 and report["valid"] and report["receipt"]["node"] == NODE.name
