"""Framing and addresses of the control socket (pure)."""

from __future__ import annotations

import pytest

from llmnode.errors import ConfigError, Rejected
from llmnode.nodes.control.wire import FrameReader, frame, parse_address


def test_frames_split_anywhere_and_joined_come_out_whole_and_in_order() -> None:
    bodies = [b"a", b"hello" * 100, b"\x00\x01\x02", b"z" * 70_000]
    stream = b"".join(frame(body) for body in bodies)
    for step in (1, 3, 7, 4096, len(stream)):
        reader = FrameReader()
        out: list[bytes] = []
        for start in range(0, len(stream), step):
            out += reader.feed(stream[start : start + step])
        assert out == bodies


def test_an_empty_frame_is_bad_framing_and_an_oversized_one_too_large() -> None:
    with pytest.raises(Rejected) as empty:
        FrameReader().feed(b"\x00\x00\x00\x00")
    assert empty.value.reason == "bad_framing"
    with pytest.raises(Rejected) as huge:
        FrameReader(limit=1024).feed(frame(b"x" * 1025)[:8])  # refused from the header alone
    assert huge.value.reason == "too_large"


@pytest.mark.parametrize(
    ("text", "unix", "host", "port"),
    [
        ("ipc:///run/llmnode/control.sock", True, "", 0),
        ("tcp://127.0.0.1:7600", False, "127.0.0.1", 7600),
        ("tcp://localhost:0", False, "localhost", 0),
        ("tcp://[::1]:7600", False, "::1", 7600),
    ],
)
def test_local_addresses_parse(text: str, unix: bool, host: str, port: int) -> None:
    address = parse_address(text)
    assert address.is_unix == unix
    assert (address.host, address.port) == (host, port)


@pytest.mark.parametrize(
    "text",
    [
        "tcp://0.0.0.0:7600",  # not loopback: any host could reach it
        "tcp://10.0.0.5:7600",
        "tcp://127.0.0.1",  # no port
        "tcp://127.0.0.1:99999",
        "ipc://",
        "ipc:///" + "x" * 200,  # longer than a Unix socket path can be
        "udp://127.0.0.1:7600",
        "control.sock",
    ],
)
def test_anything_else_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_address(text)
