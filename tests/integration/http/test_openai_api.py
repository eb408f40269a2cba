"""The OpenAI API of every node, through the real `openai` client (sync and async) and raw HTTP."""

from __future__ import annotations

import http.client
import json
import math
import urllib.request

import openai
import pytest

from llmnode.agents.models import ModelStore
from llmnode.agents.models.tokenizer import TextTokenizer
from tests.integration.http.conftest import CHAT_MODEL, EMBED_MODEL, HttpNode, store_root

pytestmark = [pytest.mark.slow, pytest.mark.models]

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def client(node: HttpNode) -> openai.OpenAI:
    return openai.OpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=120)


def async_client(node: HttpNode) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=node.base_url, api_key="unused", max_retries=0, timeout=120)


def test_every_node_lists_every_model_of_the_mesh(api_mesh: dict[str, HttpNode]) -> None:
    for node in api_mesh.values():
        models = {model.id: model for model in client(node).models.list()}
        assert set(models) == {CHAT_MODEL, EMBED_MODEL}
        assert models[CHAT_MODEL].owned_by == "llmnode"
        assert client(node).models.retrieve(EMBED_MODEL).id == EMBED_MODEL


def test_chat_through_a_node_without_models_answers_with_usage(
    api_mesh: dict[str, HttpNode],
) -> None:
    raw = client(api_mesh["front"]).chat.completions.with_raw_response.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=20,  # type: ignore[arg-type]
    )
    assert raw.headers["X-Llmnode-Node"] == "models"  # it served the request
    assert raw.headers["X-Llmnode-Entry"] == "front"  # it took the request in
    reply = raw.parse()
    assert reply.id.startswith("chatcmpl-")
    assert reply.object == "chat.completion"
    assert "Paris" in (reply.choices[0].message.content or "")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert reply.usage.completion_tokens > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


async def test_async_stream_has_one_id_the_unstreamed_text_and_a_usage_chunk(
    api_mesh: dict[str, HttpNode],
) -> None:
    front = async_client(api_mesh["front"])
    plain = await front.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,
        temperature=0,
        max_tokens=24,  # type: ignore[arg-type]
    )
    stream = await front.chat.completions.create(
        model=CHAT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        temperature=0,
        max_tokens=24,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    await front.close()
    assert len({chunk.id for chunk in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and not any(finishes[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None and plain.usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_legacy_completion_continues_a_prompt(api_mesh: dict[str, HttpNode]) -> None:
    reply = client(api_mesh["models"]).completions.create(
        model=CHAT_MODEL, prompt="The capital of France is", max_tokens=5, temperature=0
    )
    assert reply.object == "text_completion"
    assert reply.choices[0].text.strip()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage is not None and reply.usage.completion_tokens <= 5


def test_embeddings_in_float_and_base64_are_the_same_vectors(
    api_mesh: dict[str, HttpNode],
) -> None:
    texts = ["the cat sat", "quantum chromodynamics"]
    api = client(api_mesh["front"])
    as_floats = api.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    default = api.embeddings.create(model=EMBED_MODEL, input=texts)  # the client asks base64
    assert [row.index for row in as_floats.data] == [0, 1]
    for plain, decoded in zip(as_floats.data, default.data, strict=True):
        assert len(plain.embedding) == 384
        assert plain.embedding == pytest.approx(decoded.embedding, abs=1e-6)
        assert math.isclose(sum(v * v for v in plain.embedding), 1.0, rel_tol=1e-3)
    single = api.embeddings.create(model=EMBED_MODEL, input="the cat sat", encoding_format="float")
    assert single.data[0].embedding == pytest.approx(as_floats.data[0].embedding, abs=1e-6)


def test_token_id_arrays_embed_as_their_text(api_mesh: dict[str, HttpNode]) -> None:
    """Ids of the model's own tokenizer, with or without its special tokens, through the real
    client (lists of ids) and raw HTTP (one flat list), give the vectors of the text."""
    tokenizer = TextTokenizer(ModelStore(store_root()).path(EMBED_MODEL))
    texts = ["the cat sat", "quantum chromodynamics"]
    ids = [tokenizer.encode(text, add_special_tokens=False) for text in texts]
    api = client(api_mesh["front"])
    expected = api.embeddings.create(model=EMBED_MODEL, input=texts, encoding_format="float")
    from_ids = api.embeddings.create(model=EMBED_MODEL, input=ids, encoding_format="float")
    assert from_ids.usage.prompt_tokens == sum(len(row) for row in ids)
    for plain, decoded in zip(expected.data, from_ids.data, strict=True):
        assert decoded.embedding == pytest.approx(plain.embedding, abs=1e-5)
    with_specials = tokenizer.encode(texts[0])  # [CLS] ... [SEP]
    request = urllib.request.Request(
        f"http://127.0.0.1:{api_mesh['models'].port}/v1/embeddings",
        data=json.dumps({"model": EMBED_MODEL, "input": with_specials}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        raw = json.loads(response.read())
    assert raw["data"][0]["embedding"] == pytest.approx(expected.data[0].embedding, abs=1e-5)


def test_seeded_sampling_is_reproducible(api_mesh: dict[str, HttpNode]) -> None:
    def sample(node: HttpNode, seed: int) -> str:
        reply = client(node).chat.completions.create(
            model=CHAT_MODEL,
            messages=[{"role": "user", "content": "Tell me a story about a fox."}],
            temperature=1.0,
            max_tokens=16,
            seed=seed,
        )
        return reply.choices[0].message.content or ""

    first = sample(api_mesh["models"], 7)
    assert sample(api_mesh["front"], 7) == first
    assert first


def _error_body(error: openai.APIStatusError) -> dict[str, object]:
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def test_unsupported_n_is_a_400_naming_the_param(api_mesh: dict[str, HttpNode]) -> None:
    for extra in ({"n": 2}, {"response_format": {"type": "xml"}}):
        with pytest.raises(openai.BadRequestError) as caught:
            client(api_mesh["front"]).chat.completions.create(
                model=CHAT_MODEL,
                messages=QUESTION,
                **extra,  # type: ignore[arg-type]
            )
        error = _error_body(caught.value)
        assert error["param"] == next(iter(extra))
        assert error["type"] == "invalid_request_error"


def test_unknown_model_is_a_404(api_mesh: dict[str, HttpNode]) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(api_mesh["front"]).chat.completions.create(model="gpt-17", messages=QUESTION)  # type: ignore[arg-type]
    error = _error_body(caught.value)
    assert error["code"] == "model_not_found" and error["param"] == "model"


def test_deadline_is_a_504(api_mesh: dict[str, HttpNode]) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        client(api_mesh["front"]).chat.completions.create(
            model=CHAT_MODEL,
            messages=QUESTION,  # type: ignore[arg-type]
            max_tokens=400,
            extra_headers={"X-Llmnode-Timeout": "0.05"},
        )
    assert caught.value.status_code == 504
    assert _error_body(caught.value)["type"] == "timeout_error"


def test_sse_framing_is_exactly_openais(api_mesh: dict[str, HttpNode]) -> None:
    body = {
        "model": CHAT_MODEL,
        "messages": QUESTION,
        "temperature": 0,
        "max_tokens": 12,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    connection = http.client.HTTPConnection("127.0.0.1", api_mesh["front"].port, timeout=120)
    connection.request(
        "POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"}
    )
    response = connection.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/event-stream"
    raw = response.read()
    connection.close()
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = raw.split(b"\n\n")
    assert events[-1] == b"" and events[-2] == b"data: [DONE]"
    chunks = []
    for event in events[:-2]:
        assert event.startswith(b"data: {") and b"\n" not in event
        chunk = json.loads(event.removeprefix(b"data: "))
        # compact JSON, OpenAI's key order, byte for byte
        assert event == b"data: " + json.dumps(chunk, separators=(",", ":")).encode()
        keys = ["id", "object", "created", "model", "choices", "usage"]
        final = event is events[-3]
        assert list(chunk) == ([*keys, "llmnode", "llmnode_receipt"] if final else keys)
        chunks.append(chunk)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["usage"] is None for c in chunks[:-1])
    finish = chunks[-2]["choices"][0]
    assert finish["delta"] == {} and finish["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[-1]["llmnode"] == {"node": "models"}  # the node that served the stream
    assert chunks[-1]["llmnode_receipt"]["node_name"] == "models"  # and signed its receipt
