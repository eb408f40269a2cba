"""Streams through the HTTP face: a client that leaves frees the slot; a serving node killed
mid-stream is replaced without the client noticing (one id, the same greedy text, and a receipt
of the node that finished it for the whole text)."""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
from collections.abc import Iterator

import openai
import pytest

from tests.integration.http.conftest import CHAT_MODEL, HttpNode, start_http_node
from tests.support.mesh import LocalMesh, llmnode_command, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.models]

STORY = [{"role": "user", "content": "Tell me a long story about a fox and a crow."}]
SLOW = ["--model-slots", "1", "--fault-slow-ms", "150"]  # one stream at a time, ~6 tokens/s


@pytest.fixture(scope="module")
def stream_mesh(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalMesh, dict[str, HttpNode]]]:
    mesh = LocalMesh(tmp_path_factory.mktemp("stream-mesh"), probe_interval=0.2)
    try:
        nodes = {
            "entry": start_http_node(mesh, "entry", []),
            "s1": start_http_node(mesh, "s1", [CHAT_MODEL], SLOW),
        }
        wait_for(lambda: CHAT_MODEL in nodes["entry"].model_ids(), timeout=180, what="model listed")
        yield mesh, nodes
    finally:
        mesh.close()


def in_flight(node: HttpNode) -> int:
    status = node.get("/llmnode/v1/status")
    return int(status["counters"]["requests"]["in_flight"])


def test_a_client_that_disconnects_frees_the_serving_slot(
    stream_mesh: tuple[LocalMesh, dict[str, HttpNode]],
) -> None:
    _, nodes = stream_mesh
    body = {"model": CHAT_MODEL, "messages": STORY, "max_tokens": 300, "stream": True}
    connection = http.client.HTTPConnection("127.0.0.1", nodes["entry"].port, timeout=60)
    connection.request("POST", "/v1/chat/completions", json.dumps(body))
    response = connection.getresponse()
    assert response.status == 200
    seen = b""
    while seen.count(b"\n\n") < 3:  # the opening chunk and two tokens
        seen += response.read1(4096)
    assert in_flight(nodes["s1"]) == 1
    connection.close()  # 300 tokens at ~6/s would hold the only slot for most of a minute
    wait_for(lambda: in_flight(nodes["s1"]) == 0, timeout=5, what="the slot to be freed")
    quick = openai.OpenAI(base_url=nodes["entry"].base_url, api_key="-", max_retries=0)
    reply = quick.chat.completions.create(
        model=CHAT_MODEL,
        messages=STORY,  # type: ignore[arg-type]
        max_tokens=3,
        extra_headers={"X-Llmnode-Timeout": "10"},
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3


def test_killing_the_serving_node_mid_stream_keeps_one_id_and_the_greedy_text(
    stream_mesh: tuple[LocalMesh, dict[str, HttpNode]],
) -> None:
    mesh, nodes = stream_mesh
    nodes["s2"] = start_http_node(mesh, "s2", [CHAT_MODEL], SLOW)
    wait_for(
        lambda: len(nodes["entry"].get(f"/v1/models/{CHAT_MODEL}")["llmnode"]["nodes"]) == 2,
        timeout=180,
        what="both serving nodes listed",
    )
    api = openai.OpenAI(base_url=nodes["entry"].base_url, api_key="-", max_retries=0, timeout=300)
    options = {"model": CHAT_MODEL, "messages": STORY, "temperature": 0, "max_tokens": 40}
    expected = api.chat.completions.create(**options).choices[0].message.content  # type: ignore[call-overload]
    stream = api.chat.completions.create(**options, stream=True)  # type: ignore[call-overload]
    ids, pieces, killed = set(), [], ""
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if len(pieces) == 5 and not killed:
            serving = [name for name in ("s1", "s2") if in_flight(nodes[name]) == 1]
            assert len(serving) == 1
            killed = serving[0]
            nodes[killed].process.kill()
        last = chunk
    assert killed
    assert len(ids) == 1
    assert "".join(pieces) == expected
    resumed = nodes["entry"].get("/llmnode/v1/status")["counters"]["requests"]["resumed"]
    assert resumed >= 1
    receipt = (last.model_extra or {})["llmnode_receipt"]
    assert receipt["node_name"] == ({"s1", "s2"} - {killed}).pop()
    assert receipt["resumed_tokens"] >= 5  # signed by the node that finished, for all of it
    assert receipt["output_sha256"] == hashlib.sha256("".join(pieces).encode()).hexdigest()
    verified = subprocess.run(
        llmnode_command("receipt", "verify", "-"),
        input=json.dumps(receipt), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert verified.returncode == 0 and "resumed from another node" in verified.stdout
