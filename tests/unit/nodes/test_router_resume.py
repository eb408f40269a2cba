"""Resuming a generation stream on another node: the request it sends there (pure)."""

from __future__ import annotations

import msgspec

from llmnode.nodes.requests.streams import Delivered, merge_result, resume_payload
from llmnode.schemas.inference import GenerateRequest, GenerateResult


def test_resume_keeps_the_whole_stream_token_limit_and_appends_delivered_tokens() -> None:
    original = GenerateRequest(prompt="hi", max_tokens=40, resume_token_ids=[1, 2])
    delivered = Delivered(token_ids=[7, 8, 9], text=["a", "b"])
    resumed = msgspec.msgpack.decode(
        resume_payload(msgspec.msgpack.encode(original), delivered), type=GenerateRequest
    )
    # The runtime counts resumed tokens towards max_tokens, so the limit must not shrink.
    assert resumed.max_tokens == 40
    assert resumed.resume_token_ids == [1, 2, 7, 8, 9]
    assert resumed.prompt == "hi"


def test_merged_result_covers_every_chunk_of_every_attempt() -> None:
    delivered = Delivered(token_ids=[1, 2, 3], text=["Par", "is", "."])
    last = GenerateResult(
        text="is.", finish_reason="eos", prompt_tokens=5, completion_tokens=2, token_ids=[2, 3]
    )
    merged = msgspec.msgpack.decode(
        merge_result(msgspec.msgpack.encode(last), delivered), type=GenerateResult
    )
    assert merged.text == "Paris."
    assert merged.token_ids == [1, 2, 3]
    assert merged.completion_tokens == 3
    assert merged.finish_reason == "eos"
