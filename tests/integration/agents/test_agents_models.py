"""The SDK and the example app against real default models served by real nodes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llmnode.agents.models import ModelStore, ensure_models
from tests.integration.agents.conftest import CLI, ROOT, Cluster, NodeProcess, model_store_root

pytestmark = [pytest.mark.slow, pytest.mark.models]

MODELS = ["smollm2-135m-instruct", "all-minilm-l6-v2"]


@pytest.fixture(scope="module")
def model_mesh(module_cluster: Cluster) -> dict[str, NodeProcess]:
    """Node "models" serves both models and the librarian; node "front" hosts the writer."""
    ensure_models(ModelStore(model_store_root()), MODELS)
    nodes = {
        "models": module_cluster.start(
            "models", models=MODELS, agents=["examples.qa_pipeline:Librarian"]
        ),
        "front": module_cluster.start("front", agents=["examples.qa_pipeline:Writer"]),
    }
    for node in nodes.values():
        module_cluster.wait_for(node, "model:smollm2-135m-instruct", 1, timeout=120)
        module_cluster.wait_for(node, "librarian", 1, timeout=120)
        module_cluster.wait_for(node, "writer", 1, timeout=60)
    return nodes


def _run_example(module: str, node: NodeProcess, *arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", module, "--data-dir", str(node.data_dir), *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=Cluster(ROOT, "").environment(),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_sdk_example_chats_with_smollm2_and_embeds_with_minilm_through_the_mesh(
    model_mesh: dict[str, NodeProcess],
) -> None:
    output = _run_example("examples.sdk_chat", model_mesh["front"])
    assert "Paris" in output.split("smollm2: ", 1)[1]
    assert "3 vectors of dimension 384" in output


def test_qa_pipeline_example_answers_with_passages_from_the_librarian(
    model_mesh: dict[str, NodeProcess],
) -> None:
    output = _run_example(
        "examples.qa_pipeline",
        model_mesh["front"],
        "--question",
        "Which river flows through Vienna?",
    )
    assert "qa-main -> writer: Ask(question='Which river flows through Vienna?')" in output
    assert f"writer on node front ({model_mesh['front'].node_id[:8]})" in output
    assert f"served on node models ({model_mesh['models'].node_id[:8]})" in output
    assert "passage: Vienna is the capital of Austria. The Danube flows through Vienna." in output
    answer = output.split("Answer(text=", 1)[1]
    assert len(answer.strip("')\n")) > 0


def test_cli_chat_one_shot_streams_the_answer(model_mesh: dict[str, NodeProcess]) -> None:
    result = subprocess.run(
        [*CLI, "chat", "smollm2-135m-instruct", "--message", "What is the capital of France?",
         "--max-tokens", "32", "--data-dir", str(model_mesh["front"].data_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_cli_embed_json_prints_one_vector_per_text(model_mesh: dict[str, NodeProcess]) -> None:
    result = subprocess.run(
        [*CLI, "embed", "all-minilm-l6-v2", "first text", "second text", "--json",
         "--data-dir", str(model_mesh["front"].data_dir)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    assert [len(vector) for vector in output["vectors"]] == [384, 384]
