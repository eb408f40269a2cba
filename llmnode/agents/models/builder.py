"""Export a causal LM to the fused graph of ONNX Runtime GenAI's model builder (does I/O).

The builder (``python -m onnxruntime_genai.models.builder``, from the ``onnxruntime-genai``
package, installed ``--no-deps``) emits the graph ONNX Runtime runs fastest on CPU:
``GroupQueryAttention`` with rotary embeddings inside, fused ``SkipSimplifiedLayerNormalization``,
one packed QKV projection and, for ``int4``, ``MatMulNBits`` for every projection including the
output layer. llmnode then slices the hidden state of the last position before the output layer
(sampling needs no other logits). Its KV cache is shared between past and present (written in
place), which :class:`llmnode.agents.models.decoding.SharedBufferBatch` serves. The builder
reads a Hugging Face folder, so a GGUF or hub source is first loaded with transformers and saved
as one. It runs in a subprocess: its memory is returned when it ends, and a crash is one readable
error.

Precisions: ``int8`` (the fp32 graph, then every projection including the output layer turned
into 8-bit ``MatMulNBits`` by ONNX Runtime's weight-only quantiser: asymmetric, block size 32,
accuracy level 4), ``int4`` (the builder's own: block size 32, accuracy level 4) and ``fused``
(the graph in fp32, the reference for both). Chosen by measurement, see BENCHMARKS.md.
"""

# Heavy libraries (transformers, torch) are imported inside the functions that need them.
# ruff: noqa: PLC0415

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmnode.agents.models.progress import Progress
from llmnode.agents.models.store import Manifest, ModelStore
from llmnode.errors import ModelError
from llmnode.log import get_logger

log = get_logger(__name__)

BUILDER_PRECISIONS = {"int4": "int4", "int8": "fp32", "fused": "fp32"}  # ours -> builder's -p
INT4_OPTIONS = ("int4_block_size=32", "int4_accuracy_level=4")
# onnxruntime.quantization.matmul_nbits_quantizer's command line, for int8 (asymmetric).
INT8_OPTIONS: tuple[str, ...] = ("--bits", "8", "--block_size", "32", "--accuracy_level", "4")
INT8_OPTIONS += ("--symmetric", "False")
_KEPT_FROM_SOURCE = ("config.json", "generation_config.json")
_INSTALL_HINT = "pip install --no-deps onnxruntime-genai==0.11.4 && pip install onnx-ir"


LoadPretrained = Callable[[str, str], tuple[Any, Any]]


def builder_available() -> bool:
    return importlib.util.find_spec("onnxruntime_genai") is not None


def _huggingface_folder(
    source_kind: str, location: str, scratch: Path, load: LoadPretrained
) -> Path:
    """A Hugging Face folder for the builder: a directory as it is, anything else saved as one."""
    if source_kind == "directory":
        return Path(location)
    model, tokenizer = load(source_kind, location)
    folder = scratch / "huggingface"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def run_builder(folder: Path, output: Path, precision: str, cache: Path) -> None:
    """Run the model builder on ``folder`` into ``output``; ModelError with its last line."""
    command = [
        sys.executable,
        "-m",
        "onnxruntime_genai.models.builder",
        "-i",
        str(folder),
        "-o",
        str(output),
        "-p",
        BUILDER_PRECISIONS[precision],
        "-e",
        "cpu",
        "-c",
        str(cache),
    ]
    if precision == "int4":
        command += ["--extra_options", *INT4_OPTIONS]
    _run(command, "the ONNX Runtime GenAI model builder")


def _run(command: list[str], what: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        lines = [line for line in completed.stderr.strip().splitlines() if line.strip()]
        raise ModelError(f"{what} failed: {lines[-1][:300] if lines else '?'}")


def quantize_int8(folder: Path, scratch: Path) -> None:
    """Turn every fp32 ``MatMul`` of ``folder/model.onnx`` (the builder's fp32 graph) into an
    8-bit ``MatMulNBits``, with ONNX Runtime's weight-only quantiser in a subprocess."""
    output = scratch / "int8"
    output.mkdir()
    command = [
        sys.executable,
        "-m",
        "onnxruntime.quantization.matmul_nbits_quantizer",
        "--input_model",
        str(folder / "model.onnx"),
        "--output_model",
        str(output / "model.onnx"),
        *INT8_OPTIONS,
    ]
    _run(command, "ONNX Runtime's 8-bit weight quantiser")
    for name in ("model.onnx", "model.onnx.data"):
        (output / name).replace(folder / name)


def logits_of_the_last_position(model_path: Path) -> None:
    """Make the graph compute logits for the last position only (a ``Slice`` before the output
    layer): a prompt of n tokens then costs one output projection instead of n. Decoding feeds
    one token per row, so it is unchanged. Only the graph file is rewritten; the weights stay
    in their external data file."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path), load_external_data=False)
    nodes = model.graph.node
    head = next(
        (i for i, n in enumerate(nodes) if n.name.startswith("/lm_head/") and "logits" in n.output),
        None,
    )
    if head is None:
        raise ModelError("the builder's graph has no /lm_head node producing logits")
    hidden = nodes[head].input[0]
    last = f"{hidden}/last_position"
    constants = {"starts": -1, "ends": 2**62, "axes": 1}
    for key, value in constants.items():
        model.graph.initializer.append(
            helper.make_tensor(f"/llmnode/last_position/{key}", TensorProto.INT64, [1], [value])
        )
    inputs = [hidden, *(f"/llmnode/last_position/{key}" for key in constants)]
    nodes.insert(head, helper.make_node("Slice", inputs, [last], name="/llmnode/last_position"))
    nodes[head + 1].input[0] = last
    for output in model.graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].Clear()
            output.type.tensor_type.shape.dim[1].dim_value = 1
    onnx.save(model, str(model_path))


def build(
    source_kind: str,
    location: str,
    store: ModelStore,
    *,
    name: str,
    precision: str,
    source_label: str,
    versions: dict[str, str],
    load: LoadPretrained,
    progress: bool = True,
) -> Manifest:
    """Export a causal LM source (kind "directory", "gguf" or "hub") with the model builder;
    ``load(kind, location)`` gives the transformers model and tokenizer of a non-folder source
    (the exporter's loader, passed in so the two modules do not import each other)."""
    if precision not in BUILDER_PRECISIONS:
        raise ModelError(f"unknown builder precision {precision!r}")
    if not builder_available():
        raise ModelError(f"{precision} export needs ONNX Runtime GenAI's builder: {_INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="llmnode-build-") as scratch_name:
        scratch = Path(scratch_name)
        with Progress(f"loading {source_label}", enabled=progress):
            folder = _huggingface_folder(source_kind, location, scratch, load)
        with store.writing(name) as temp:
            with Progress(f"building the {precision} graph of {name}", enabled=progress):
                run_builder(folder, temp, precision, scratch / "cache")
                if precision == "int8":
                    quantize_int8(temp, scratch)
                logits_of_the_last_position(temp / "model.onnx")
            for kept in _KEPT_FROM_SOURCE:
                if (folder / kept).is_file():
                    shutil.copyfile(folder / kept, temp / kept)
            log.info("model_built", model=name, precision=precision)
            return store.commit(
                temp,
                name=name,
                source=source_label,
                task="text-generation",
                precision=precision,
                versions=versions,
                progress=progress,
            )
