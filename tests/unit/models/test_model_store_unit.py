"""Model store bookkeeping, the sampler, source parsing and payload codecs (no models run)."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmnode.agents.models.export import parse_source
from llmnode.agents.models.sampling import choose_token, held_suffix
from llmnode.agents.models.store import ModelStore
from llmnode.errors import ModelError
from llmnode.schemas.inference import ChatMessage, GenerateRequest, TokenChunk


def stored(store: ModelStore, name: str = "demo", payload: bytes = b"graph") -> None:
    with store.writing(name) as temp:
        (temp / "model.onnx").write_bytes(payload)
        (temp / "tokenizer.json").write_text("{}")
        store.commit(
            temp,
            name=name,
            source="test",
            task="text-generation",
            precision="fp32",
            versions={"onnx": "1"},
        )


def test_a_committed_model_is_listed_verified_and_removable(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored(store)
    assert [m.name for m in store.list()] == ["demo"]
    assert {f.path for f in store.verify("demo").files} == {"model.onnx", "tokenizer.json"}
    store.remove("demo")
    assert store.list() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_recommitting_a_name_replaces_the_model(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored(store, payload=b"old")
    stored(store, payload=b"new graph")
    assert (store.path("demo") / "model.onnx").read_bytes() == b"new graph"
    assert store.verify("demo").files[0].size == len(b"new graph")


def test_a_modified_file_fails_verify_with_one_line(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored(store)
    (store.path("demo") / "model.onnx").write_bytes(b"grapH")
    store.get("demo")  # same size: only the hash can tell
    with pytest.raises(ModelError) as caught:
        store.verify("demo")
    assert str(caught.value) == (
        "model 'demo' is corrupt: file model.onnx sha256 mismatch; "
        "run `llmnode models rm demo` and pull it again"
    )


def test_a_missing_file_fails_get(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    stored(store)
    (store.path("demo") / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match=r"file tokenizer\.json is missing"):
        store.get("demo")


def test_an_unknown_model_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"run `llmnode models pull nope`"):
        ModelStore(tmp_path).get("nope")


def test_temp_folders_of_dead_processes_are_removed_on_open(tmp_path: Path) -> None:
    dead = tmp_path / ".tmp-demo-999999999-0123abcd"
    alive = tmp_path / f".tmp-demo-{os.getpid()}-0123abcd"
    dead.mkdir()
    alive.mkdir()
    ModelStore(tmp_path)
    assert not dead.exists()
    assert alive.exists()


def test_an_aborted_write_leaves_nothing(tmp_path: Path) -> None:
    store = ModelStore(tmp_path)
    with pytest.raises(RuntimeError), store.writing("demo") as temp:
        (temp / "model.onnx").write_bytes(b"half")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["", "../escape", "a/b", ".hidden", "x" * 200])
def test_invalid_names_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelError, match="invalid model name"):
        ModelStore(tmp_path).path(name)


def test_a_bare_word_that_is_not_a_default_or_a_path_is_refused() -> None:
    with pytest.raises(ModelError, match="is not a known model"):
        parse_source("no-such-model")


def test_greedy_choice_is_the_argmax() -> None:
    logits = np.array([0.1, 3.0, -1.0, 2.9], dtype=np.float32)
    assert choose_token(logits, GenerateRequest(), np.random.default_rng(0)) == 1


def test_top_k_of_one_samples_the_argmax() -> None:
    logits = np.random.default_rng(5).normal(size=100).astype(np.float32)
    request = GenerateRequest(temperature=1.5, top_k=1)
    picks = {choose_token(logits, request, np.random.default_rng(i)) for i in range(20)}
    assert picks == {int(np.argmax(logits))}


def test_sampling_with_the_same_seed_repeats() -> None:
    logits = np.random.default_rng(5).normal(size=1000).astype(np.float32)
    request = GenerateRequest(temperature=1.0, top_p=0.95)
    first, second = np.random.default_rng(42), np.random.default_rng(42)
    assert [choose_token(logits, request, first) for _ in range(50)] == [
        choose_token(logits, request, second) for _ in range(50)
    ]


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    request = GenerateRequest(temperature=1.0, top_p=0.7)
    picks = {choose_token(logits, request, np.random.default_rng(i)) for i in range(200)}
    assert picks == {0, 1}


def test_a_text_ending_in_the_start_of_a_stop_string_is_held() -> None:
    assert held_suffix("hello wor", ["world"]) == 3
    assert held_suffix("hello", ["world"]) == 0
    assert held_suffix("abc", []) == 0


@given(
    prompt=st.text(max_size=50),
    resume=st.lists(st.integers(min_value=0, max_value=2**31), max_size=10),
    temperature=st.floats(min_value=0, max_value=2),
)
def test_generate_requests_survive_msgpack(
    prompt: str, resume: list[int], temperature: float
) -> None:
    request = GenerateRequest(
        prompt=prompt,
        messages=[ChatMessage(role="user", content=prompt)],
        temperature=temperature,
        resume_token_ids=resume,
    )
    decoded = msgspec.msgpack.decode(msgspec.msgpack.encode(request), type=GenerateRequest)
    assert decoded == request


def test_token_chunks_default_to_no_finish_reason() -> None:
    chunk = msgspec.msgpack.decode(
        msgspec.msgpack.encode({"text": "a", "token_ids": [1]}), type=TokenChunk
    )
    assert chunk.finish_reason == ""
