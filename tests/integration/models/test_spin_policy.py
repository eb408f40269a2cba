"""LLMNODE_ORT_SPIN chooses how ONNX Runtime's idle threads wait; every policy runs a real model
to the same greedy tokens, and a wrong value is one clear line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from llmnode.agents.models import ModelStore, create_session
from llmnode.agents.models.decoding import open_batch
from llmnode.agents.models.providers import spin_policy
from llmnode.errors import ConfigError


def test_the_default_spins_within_a_run_and_stops_when_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("LLMNODE_ORT_SPIN", raising=False)
    assert spin_policy() == {"session.force_spinning_stop": "1"}
    monkeypatch.setenv("LLMNODE_ORT_SPIN", "0")
    assert spin_policy() == {"session.intra_op.allow_spinning": "0"}
    monkeypatch.setenv("LLMNODE_ORT_SPIN", "1")
    assert spin_policy() == {}


def test_an_unknown_spin_policy_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMNODE_ORT_SPIN", "fast")
    with pytest.raises(
        ConfigError, match=r"^LLMNODE_ORT_SPIN must be one of run, 0, 1, not 'fast'$"
    ):
        spin_policy()


def _greedy_tokens(model: Path) -> list[int]:
    """Nine greedy tokens after a fixed prompt, from a session made under the current policy."""
    session, _ = create_session(model, prefer_gpu=False, threads=2)
    batch = open_batch(session, shared_buffer=True, slots=1, max_positions=64)
    tokens = [int(np.argmax(batch.prefill([5, 6, 7, 8])))]
    for _ in range(8):
        tokens.append(int(np.argmax(batch.step([tokens[-1]])[0])))
    return tokens


@pytest.mark.parametrize("policy", ["run", "0", "1"])
def test_every_policy_decodes_the_same_tokens(
    policy: str,
    monkeypatch: pytest.MonkeyPatch,
    tiny_store: tuple[ModelStore, dict[str, Path]],
) -> None:
    store, _ = tiny_store
    model = store.path("tiny-llama-fused") / "model.onnx"
    monkeypatch.setenv("LLMNODE_ORT_SPIN", policy)
    tokens = _greedy_tokens(model)
    monkeypatch.setenv("LLMNODE_ORT_SPIN", "0")
    assert tokens == _greedy_tokens(model)
