"""The scheduler prefers, other things equal, a node whose prefix cache holds the request's
system prompt; it does not send a request to a much busier node for it (pure)."""

from __future__ import annotations

import random

import msgspec

from llmnode.nodes.requests.scheduler import Candidate, InFlightLedger, choose
from llmnode.schemas.inference import (
    ChatMessage,
    GenerateRequest,
    payload_prefix_key,
    prefix_key,
)

SYSTEM = "You are the librarian. " * 20
KEY = prefix_key(GenerateRequest(messages=[ChatMessage(role="system", content=SYSTEM)]))


def node(number: int) -> bytes:
    return bytes([number]) * 32


def candidate(number: int, *, holds: bool = False, queue: int = 0) -> Candidate:
    return Candidate(
        node=node(number), service="model:m", ewma_service_ms=100.0, rtt_ms=0.5,
        gossip_queue_depth=queue, slots=1, prefixes=frozenset({KEY} if holds and KEY else set()),
    )  # fmt: skip


def test_among_equally_loaded_nodes_the_one_holding_the_prefix_is_chosen() -> None:
    for holder in (1, 2, 3):
        pool = [candidate(number, holds=number == holder) for number in (1, 2, 3)]
        choice = choose(pool, InFlightLedger(), 0.0, random.Random(0), prefix=KEY)
        assert choice.node == node(holder)


def test_a_much_busier_holder_is_not_chosen() -> None:
    pool = [candidate(1, holds=True, queue=3), candidate(2)]
    assert choose(pool, InFlightLedger(), 0.0, random.Random(0), prefix=KEY).node == node(2)


def test_the_prefix_key_names_a_long_system_prompt_of_a_chat_payload_only() -> None:
    chat = GenerateRequest(
        messages=[ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content="q")]
    )
    payload = msgspec.msgpack.encode(chat)
    assert KEY is not None and payload_prefix_key("chat", payload) == KEY
    assert payload_prefix_key("generate", payload) is None
    assert payload_prefix_key("chat", b"\x01garbage") is None
    short = GenerateRequest(messages=[ChatMessage(role="system", content="Be brief.")])
    assert prefix_key(short) is None
