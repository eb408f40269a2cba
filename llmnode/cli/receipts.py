"""``llmnode receipt verify``: check a receipt a serving node signed (I/O: files, stdout).

No node is needed: a receipt carries its node's id, which is the key that verifies it. The
command reads what a client saved (:func:`llmnode.http.receipt_check.read_saved`), checks the
signature and, given the user's copies, the hashes of the request and the output; it prints one
line (or one JSON object with ``--json``) and exits 0, or 1 with one line when anything fails.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from llmnode.cli.common import JsonFlag, fail
from llmnode.errors import ConfigError, MeshError, ProtocolError
from llmnode.http.receipt_check import check_fields, output_digest, read_saved, request_digest
from llmnode.nodes.requests.receipts import check_hash, verify_receipt
from llmnode.schemas.receipts import Receipt, to_json

receipt_app = typer.Typer(
    no_args_is_help=True, help="Check the signed receipts nodes give for what they served."
)

MAX_INPUT_BYTES = 64 * 1024 * 1024


@receipt_app.command()
def verify(
    source: Annotated[
        str,
        typer.Argument(
            help="File holding the receipt: the X-Llmnode-Receipt header value, a header dump "
            "(curl -D), the llmnode_receipt JSON object, a stream's final chunk or the saved "
            "stream; '-' reads stdin.",
        ),
    ] = "-",
    request: Annotated[
        Path | None,
        typer.Option(
            "--request", help="The request's JSON body as sent: check it is the one signed for."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="The response's JSON body, or the output itself (its text; float32 bytes for "
            "embeddings): check it is the one signed for.",
        ),
    ] = None,
    node: Annotated[
        str,
        typer.Option(
            "--node", help="Require this signer: a node id, or a prefix of 8 or more characters."
        ),
    ] = "",
    json_output: JsonFlag = False,
) -> None:
    """Check a receipt: its node's signature and, optionally, the request and output hashes."""
    try:
        receipt, signed, checked = _verify(source, request, output, node)
    except MeshError as error:
        if json_output:
            typer.echo(json.dumps({"valid": False, "error": str(error)}))
            raise typer.Exit(1) from None
        fail(f"invalid: {error}" if not str(error).startswith("invalid") else str(error))
    if json_output:
        report = {"valid": True, "checked": checked, "receipt": to_json(receipt, signed)}
        typer.echo(json.dumps(report))
        return
    typer.echo(summary(receipt, checked))


def _verify(
    source: str, request: Path | None, output: Path | None, node: str
) -> tuple[Receipt, bytes, list[str]]:
    try:
        text = _read(source).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("not an llmnode receipt (not text)") from None
    signed, fields = read_saved(text)
    receipt = verify_receipt(signed, node)
    check_fields(receipt, signed, fields)
    checked = ["signature"]
    if node:
        checked.append("node")
    if request is not None:
        body = _read(str(request))
        check_hash("request", receipt.request_sha256, request_digest(receipt.method, body))
        checked.append("request")
    if output is not None:
        data = _read(str(output))
        check_hash("output", receipt.output_sha256, output_digest(receipt.method, data))
        checked.append("output")
    return receipt, signed, checked


def summary(receipt: Receipt, checked: list[str]) -> str:
    """The one line a valid receipt prints."""
    fields: dict[str, Any] = to_json(receipt, b"")
    name = receipt.node_name or fields["node"][:8]
    manifest = receipt.manifest_sha256[:12] or "unknown"
    tokens = f"{receipt.prompt_tokens}+{receipt.completion_tokens} tokens"
    if receipt.resumed_tokens:
        tokens += f" ({receipt.resumed_tokens} resumed from another node)"
    extra = [what for what in checked if what in ("request", "output")]
    matched = f"; {' and '.join(extra)} match" if extra else ""
    return (
        f"valid: served by node {name} ({fields['node'][:16]}…), model {receipt.model} "
        f"(manifest sha256 {manifest}…), {receipt.method}, {tokens}, "
        f"{receipt.total_ms:.0f} ms{matched}"
    )


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read(MAX_INPUT_BYTES)
    path = Path(source)
    try:
        with path.open("rb") as file:
            return file.read(MAX_INPUT_BYTES)
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
