"""A model whose only node is down for a moment is not "unknown": the HTTP face routes it like the
SDK does (the router waits for a node until the deadline) instead of answering 404 at once.
Found by benchmarks/chaos.py: one embed through HTTP got a 404 during a partition."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.http.conftest import EMBED_MODEL, start_http_node
from tests.support.mesh import LocalMesh, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.models]


def test_a_model_whose_node_is_down_for_a_moment_is_served_when_it_returns(
    tmp_path: Path,
) -> None:
    mesh = LocalMesh(tmp_path, probe_interval=0.2)
    try:
        front = start_http_node(mesh, "front", [])
        server = start_http_node(mesh, "server", [EMBED_MODEL])
        wait_for(lambda: EMBED_MODEL in front.model_ids(), timeout=120, what="model listed")
        process = server.process.process
        assert process is not None
        process.send_signal(signal.SIGSTOP)
        try:
            # The front node no longer counts the server as live: the model leaves /v1/models.
            wait_for(lambda: EMBED_MODEL not in front.model_ids(), timeout=60, what="server down")
            threading.Timer(1.5, process.send_signal, args=(signal.SIGCONT,)).start()
            body = json.dumps({"model": EMBED_MODEL, "input": "back again"}).encode()
            request = urllib.request.Request(
                f"{front.base_url}/embeddings",
                data=body,
                headers={"Content-Type": "application/json", "X-Llmnode-Timeout": "30"},
            )
            started = time.monotonic()
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    status, answer = response.status, json.loads(response.read())
            except urllib.error.HTTPError as error:
                status, answer = error.code, json.loads(error.read())
        finally:
            process.send_signal(signal.SIGCONT)
        assert status == 200, answer
        assert len(answer["data"][0]["embedding"]) == 384
        assert time.monotonic() - started > 1.0  # it waited for the node, as the SDK does
    finally:
        mesh.close()
