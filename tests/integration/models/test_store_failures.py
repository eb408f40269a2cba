"""The store refuses corrupt models with one line and survives an export killed mid-way."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmnode.agents.models import GenerationRuntime, ModelStore, create_session, pull
from llmnode.agents.models.export import export
from llmnode.errors import ModelError


def copy_model(store: ModelStore, name: str, into: ModelStore) -> None:
    import shutil

    shutil.copytree(store.path(name), into.path(name))


def test_a_corrupt_model_file_is_refused_with_one_clear_line(
    tiny_store: tuple[ModelStore, dict[str, Path]], tmp_path: Path
) -> None:
    store, _ = tiny_store
    copy = ModelStore(tmp_path / "store")
    copy_model(store, "tiny-gpt2", copy)
    model_file = copy.path("tiny-gpt2") / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    with pytest.raises(ModelError) as caught:
        GenerationRuntime(copy, "tiny-gpt2")
    assert str(caught.value) == (
        "model 'tiny-gpt2' is corrupt: file model.onnx sha256 mismatch; "
        "run `llmnode models rm tiny-gpt2` and pull it again"
    )


def test_a_truncated_model_file_is_refused_without_hashing(
    tiny_store: tuple[ModelStore, dict[str, Path]], tmp_path: Path
) -> None:
    store, _ = tiny_store
    copy = ModelStore(tmp_path / "store")
    copy_model(store, "tiny-llama", copy)
    model_file = copy.path("tiny-llama") / "model.onnx"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    with pytest.raises(ModelError, match=r"file model\.onnx size mismatch"):
        copy.get("tiny-llama")
    assert [m.name for m in copy.list()] == ["tiny-llama"]  # refused, not deleted


def test_onnx_runtime_errors_on_garbage_bytes_become_model_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(b"not an onnx graph at all" * 10)
    with pytest.raises(ModelError, match=r"^cannot load ONNX model model.onnx: "):
        create_session(garbage)


def test_a_hub_id_fails_with_one_clear_line_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(ModelError) as caught:
        pull("HuggingFaceTB/SmolLM2-135M-Instruct", ModelStore(tmp_path), progress=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cannot fetch 'HuggingFaceTB/SmolLM2-135M-Instruct'")


def test_an_unknown_local_path_fails_with_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"^/nonexistent/model.gguf: no such file or directory$"):
        export("/nonexistent/model.gguf", ModelStore(tmp_path), progress=False)


@pytest.mark.slow
def test_an_export_killed_mid_way_leaves_the_store_consistent(
    tiny_store: tuple[ModelStore, dict[str, Path]], tmp_path: Path
) -> None:
    _, sources = tiny_store
    root = tmp_path / "store"
    store = ModelStore(root)
    script = (
        "import sys\n"
        "from llmnode.agents.models import ModelStore\n"
        "from llmnode.agents.models.export import export\n"
        "export(sys.argv[1], ModelStore(sys.argv[2]), task='text-generation', name='victim',"
        " progress=False)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(sources["gpt2"]), str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".tmp-victim") for p in root.iterdir()):
            assert child.poll() is None, "the export finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait()
    assert store.list() == []
    assert not store.exists("victim")
    reopened = ModelStore(root)
    assert [p.name for p in root.iterdir() if not p.name.startswith(".lock")] == []
    manifest = export(
        str(sources["gpt2"]), reopened, task="text-generation", name="victim", progress=False
    )
    assert reopened.verify("victim") == manifest
