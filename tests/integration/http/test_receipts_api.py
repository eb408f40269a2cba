"""Receipts through the real `openai` client on a two-node mesh: a plain chat, a stream and an
embedding each carry a receipt signed by the node that ran the model, which `llmnode receipt
verify` (run as a command) accepts, with the hashes of the request and of what the client got."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.integration.http.conftest import CHAT_MODEL, EMBED_MODEL, HttpNode
from tests.support.mesh import llmnode_command

pytestmark = [pytest.mark.slow, pytest.mark.models]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(node: HttpNode) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=120)


def verify(folder: Path, receipt: str, body: dict[str, Any], output: bytes, node: str) -> str:
    """`llmnode receipt verify` on the saved receipt, request body and output: its one line."""
    (folder / "receipt").write_text(receipt)
    (folder / "request.json").write_text(json.dumps(body))
    (folder / "output").write_bytes(output)
    run = subprocess.run(
        llmnode_command(
            "receipt", "verify", str(folder / "receipt"), "--request", str(folder / "request.json"),
            "--output", str(folder / "output"), "--node", node,
        ),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and "request and output match" in run.stdout
    return run.stdout


def test_a_plain_chat_has_a_receipt_of_the_node_that_served_it(
    api_mesh: dict[str, HttpNode], tmp_path: Path
) -> None:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 20,
    }
    raw = client(api_mesh["front"]).chat.completions.with_raw_response.create(**body)
    text = raw.parse().choices[0].message.content or ""
    assert "Paris" in text
    models = api_mesh["models"].process.node_id
    line = verify(tmp_path, raw.headers["X-Llmnode-Receipt"], body, text.encode(), models)
    assert line.startswith("valid: served by node models") and f"model {CHAT_MODEL}" in line

    # The response's JSON body is an output too; another text is not.
    (tmp_path / "output").write_bytes(raw.content)
    assert _verify_output(tmp_path).returncode == 0
    (tmp_path / "output").write_text(text + " ")
    failed = _verify_output(tmp_path)
    assert failed.returncode == 1 and "the output does not match" in failed.stderr
    assert failed.stderr.count("\n") == 1 and "Traceback" not in failed.stderr


def test_a_stream_carries_the_receipt_in_its_final_chunk(
    api_mesh: dict[str, HttpNode], tmp_path: Path
) -> None:
    body: dict[str, Any] = {
        "model": CHAT_MODEL,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 24,
    }
    stream = client(api_mesh["front"]).chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    receipts = [(c.model_extra or {}).get("llmnode_receipt") for c in chunks]
    assert receipts[:-1] == [None] * (len(chunks) - 1)  # only the final chunk has it
    receipt = receipts[-1]
    assert receipt is not None and receipt["node_name"] == "models"
    assert chunks[-1].usage is not None
    assert receipt["completion_tokens"] == chunks[-1].usage.completion_tokens
    models = api_mesh["models"].process.node_id
    assert receipt["node"] == models
    line = verify(tmp_path, json.dumps(receipt), body, text.encode(), models)
    assert line.startswith("valid: served by node models")


def test_an_embedding_has_a_receipt_over_its_vectors(
    api_mesh: dict[str, HttpNode], tmp_path: Path
) -> None:
    body: dict[str, Any] = {
        "model": EMBED_MODEL,
        "input": ["the cat sat", "quantum chromodynamics"],
    }
    raw = client(api_mesh["front"]).embeddings.with_raw_response.create(**body)  # base64
    assert len(raw.parse().data) == 2
    models = api_mesh["models"].process.node_id
    line = verify(tmp_path, raw.headers["X-Llmnode-Receipt"], body, raw.content, models)
    assert line.startswith("valid: served by node models") and "embed" in line
    floats = client(api_mesh["front"]).embeddings.with_raw_response.create(
        **body, encoding_format="float"
    )
    (tmp_path / "output").write_bytes(floats.content)  # the same vectors as JSON numbers
    assert _verify_output(tmp_path).returncode == 0


def _verify_output(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        llmnode_command(
            "receipt", "verify", str(folder / "receipt"), "--output", str(folder / "output")
        ),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
