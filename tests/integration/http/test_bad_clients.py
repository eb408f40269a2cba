"""Bad HTTP input gets its status or is closed; a well-behaved client loses nothing meanwhile."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.http.conftest import EMBED_MODEL, HttpNode, start_http_node
from tests.support.mesh import LocalMesh, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.models]

IDLE_CLOSE_S = 15.0 + 10.0  # the server's idle timeout (llmnode.http.app), plus slack


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpNode]:
    mesh = LocalMesh(tmp_path_factory.mktemp("bad-clients"), probe_interval=0.2)
    try:
        served = start_http_node(mesh, "solo", [EMBED_MODEL])
        wait_for(lambda: EMBED_MODEL in served.model_ids(), timeout=120, what="model listed")
        yield served
    finally:
        mesh.close()


def post(
    node: HttpNode, body: bytes, path: str = "/v1/embeddings"
) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{node.port}{path}", data=body, method="POST",
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def raw(node: HttpNode, data: bytes, wait_s: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server sends back before closing."""
    with socket.create_connection(("127.0.0.1", node.port), timeout=wait_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "all-minilm-l6-v2", "input": ', None),
        (b'{"model": "all-minilm-l6-v2", "input": 3}', "input"),
        (
            b'{"model": "all-minilm-l6-v2", "input": "a", "encoding_format": "hex"}',
            "encoding_format",
        ),
        (b'{"model": "all-minilm-l6-v2", "input": "a", "colour": "red"}', "colour"),
        (b'{"input": "a"}', "model"),
        (b"[1, 2]", None),
    ],
)
def test_bad_bodies_are_a_400_naming_the_param(
    node: HttpNode, body: bytes, param: str | None
) -> None:
    status, answer = post(node, body)
    assert status == 400
    error = answer["error"]
    assert isinstance(error, dict)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_a_huge_body_is_a_413(node: HttpNode) -> None:
    body = b'{"model": "all-minilm-l6-v2", "input": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    try:
        status, answer = post(node, body)
    except (ConnectionError, urllib.error.URLError):
        return  # closed before the client finished sending: also acceptable
    assert status == 413
    assert isinstance(answer["error"], dict) and answer["error"]["type"] == "invalid_request_error"


def test_ten_thousand_headers_are_refused(node: HttpNode) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    answer = raw(node, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert answer == b"" or answer.split(b" ", 2)[1] in (b"400", b"431")


def test_a_slow_loris_is_closed(node: HttpNode) -> None:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=IDLE_CLOSE_S) as sock:
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n")
        closed = False
        while time.monotonic() - started < IDLE_CLOSE_S:
            try:
                sock.sendall(b"X")  # one byte of a header that never ends
                sock.settimeout(1.0)
                if sock.recv(1024) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except ConnectionError:
                closed = True
                break
    assert closed


def test_a_good_client_loses_nothing_while_bad_ones_attack(node: HttpNode) -> None:
    idle = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(1000)]
    attackers = [
        threading.Thread(target=test_a_slow_loris_is_closed, args=(node,)),
        threading.Thread(target=test_ten_thousand_headers_are_refused, args=(node,)),
        threading.Thread(target=test_a_huge_body_is_a_413, args=(node,)),
    ]
    for thread in attackers:
        thread.start()
    try:
        body = json.dumps({"model": EMBED_MODEL, "input": ["good", "client"]}).encode()
        answers = [post(node, body) for _ in range(30)]
        assert [status for status, _ in answers] == [200] * 30
        first = answers[0][1]["data"]
        assert all(answer["data"] == first for _, answer in answers)
    finally:
        for thread in attackers:
            thread.join(60)
        closed = 0
        for sock in idle:
            sock.settimeout(IDLE_CLOSE_S)
            with contextlib.suppress(TimeoutError, ConnectionError):
                closed += sock.recv(1) == b""
            sock.close()
    assert closed == 1000  # the idle connections were closed by the server, not kept forever
