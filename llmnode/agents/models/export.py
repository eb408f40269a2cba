"""Export a model to ONNX into the store (does I/O).

Sources: a local Hugging Face directory, a GGUF file, or a Hugging Face hub id. Which exporter:
- optimum, the exporter of record for fp32 and for embeddings: the model and its
  tokenizer (with its chat template) are loaded with transformers, exported with optimum
  (``text-generation-with-past`` for causal LMs, so the graph takes ``past_key_values`` and
  returns ``present``; ``feature-extraction`` for embeddings); an embedding model in ``int8`` is
  quantised with ONNX Runtime's dynamic quantisation (QInt8 weights);
- ONNX Runtime GenAI's model builder for ``int8``, ``int4`` and ``fused`` (fp32) causal LMs:
  the fused graph, with ``MatMulNBits`` when quantised (:mod:`llmnode.agents.models.builder`).
Either way the result is committed to the store atomically.
"""

# Heavy libraries (onnxruntime, optimum, transformers, torch, tqdm) are imported inside the
# functions that need them, so `import llmnode` stays fast.
# ruff: noqa: PLC0415

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmnode.agents.models.builder import BUILDER_PRECISIONS, build
from llmnode.agents.models.progress import Progress
from llmnode.agents.models.store import Manifest, ModelStore, check_name
from llmnode.errors import ModelError
from llmnode.log import get_logger

log = get_logger(__name__)

QUANTIZATIONS = (None, *BUILDER_PRECISIONS)
OPTIMUM_TASKS = {
    "text-generation": "text-generation-with-past",
    "feature-extraction": "feature-extraction",
}


@dataclass(frozen=True)
class Source:
    """Where a model comes from. ``kind`` is "directory", "gguf" or "hub"."""

    kind: str
    location: str  # the directory, the .gguf path, or the hub id

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.location}"


def parse_source(text: str) -> Source:
    path = Path(text).expanduser()
    if path.is_dir():
        return Source("directory", str(path.resolve()))
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{text}: a model file must be a .gguf (or pass a model directory)")
        return Source("gguf", str(path.resolve()))
    if text.endswith(".gguf") or text.startswith((".", "/", "~")):
        raise ModelError(f"{text}: no such file or directory")
    if text.count("/") != 1:
        raise ModelError(
            f"{text!r} is not a known model, a local directory, a .gguf file or a hub id (org/name)"
        )
    return Source("hub", text)


def infer_task(source: Source) -> str:
    """``text-generation`` unless a local config names a non-causal architecture."""
    if source.kind == "directory":
        config_path = Path(source.location) / "config.json"
        if config_path.is_file():
            architectures = json.loads(config_path.read_text()).get("architectures") or []
            if architectures and not any(a.endswith("ForCausalLM") for a in architectures):
                return "feature-extraction"
    return "text-generation"


def default_name(source: Source, quantize: str | None) -> str:
    base = Path(source.location).name if source.kind != "hub" else source.location.split("/")[-1]
    base = base.removesuffix(".gguf").removesuffix(".GGUF").lower()
    base = "".join(c if c.isalnum() or c in "._-" else "-" for c in base).strip("-.") or "model"
    return f"{base}-{quantize}" if quantize else base


def _check_hub_reachable(hub_id: str) -> None:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urllib.parse.urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        raise ModelError(
            f"cannot fetch {hub_id!r}: the Hugging Face Hub ({host}) is unreachable "
            f"({error.strerror or error}); pass a local directory or .gguf file instead"
        ) from error


def load_pretrained(source: Source, task: str) -> tuple[Any, Any]:
    """(model, tokenizer) loaded with transformers on CPU in fp32."""
    import transformers

    model_class = (
        transformers.AutoModelForCausalLM if task == "text-generation" else transformers.AutoModel
    )
    kwargs: dict[str, Any] = {}
    location = source.location
    if source.kind == "gguf":
        location, kwargs["gguf_file"] = str(Path(location).parent), Path(location).name
    try:
        if source.kind == "hub":
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(  # type: ignore[no-untyped-call]
                    location, local_files_only=True
                )
                model = model_class.from_pretrained(location, local_files_only=True)
                return model, tokenizer
            except OSError:
                _check_hub_reachable(location)
        tokenizer = transformers.AutoTokenizer.from_pretrained(location, **kwargs)  # type: ignore[no-untyped-call]
        model = model_class.from_pretrained(location, **kwargs)
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise ModelError(f"cannot load {source.label}: {first_line[:300]}") from error
    model.eval()
    return model, tokenizer


def quantize_int8(model_path: Path, progress: bool = True) -> None:
    """Replace ``model_path`` by its dynamically quantised (QInt8 weights) version."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = model_path.with_name(model_path.stem + ".int8.onnx")
    with Progress("quantising to int8", enabled=progress):
        try:
            quantize_dynamic(str(model_path), str(quantized), weight_type=QuantType.QInt8)
        except Exception as error:  # onnxruntime raises bare Exceptions of many kinds
            raise ModelError(f"int8 quantisation failed: {str(error)[:300]}") from error
    for leftover in model_path.parent.glob("*.onnx_data"):
        leftover.unlink()
    quantized.replace(model_path)


def export_versions() -> dict[str, str]:
    import importlib.metadata

    versions: dict[str, str] = {}
    for package in (
        "optimum-onnx",
        "optimum",
        "transformers",
        "onnx",
        "torch",
        "onnxruntime-gpu",
        "onnxruntime",
        "onnxruntime-genai",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def export_loaded(
    model: Any,
    tokenizer: Any,
    store: ModelStore,
    *,
    name: str,
    source_label: str,
    task: str,
    quantize: str | None = None,
    progress: bool = True,
) -> Manifest:
    """Export an already loaded transformers model (and tokenizer) into the store."""
    from optimum.exporters.onnx import onnx_export_from_model

    if task not in OPTIMUM_TASKS:
        raise ModelError(f"unknown task {task!r}: use one of {', '.join(OPTIMUM_TASKS)}")
    if quantize not in (None, "int8"):
        raise ModelError(f"optimum exports fp32 or int8, not {quantize!r}")
    with store.writing(name) as temp:
        with Progress(f"exporting {name} to ONNX", enabled=progress):
            try:
                onnx_export_from_model(model, temp, task=OPTIMUM_TASKS[task], do_validation=False)
            except Exception as error:  # optimum/torch.onnx raise many unrelated types
                raise ModelError(
                    f"ONNX export of {source_label} failed: {str(error)[:300]}"
                ) from error
        tokenizer.save_pretrained(temp)
        if task == "text-generation" and getattr(tokenizer, "chat_template", None):
            (temp / "chat_template.jinja").write_text(tokenizer.chat_template)
        if quantize == "int8":
            quantize_int8(temp / "model.onnx", progress=progress)
        return store.commit(
            temp,
            name=name,
            source=source_label,
            task=task,
            precision="int8" if quantize == "int8" else "fp32",
            versions=export_versions(),
            progress=progress,
        )


def export(
    source: str | Source,
    store: ModelStore,
    *,
    task: str | None = None,
    name: str | None = None,
    quantize: str | None = None,
    progress: bool = True,
    source_label: str | None = None,
) -> Manifest:
    """Load ``source`` with transformers, export it to ONNX and store it under ``name``."""
    parsed = source if isinstance(source, Source) else parse_source(source)
    task = task or infer_task(parsed)
    if task not in OPTIMUM_TASKS:
        raise ModelError(f"unknown task {task!r}: use one of {', '.join(OPTIMUM_TASKS)}")
    if quantize not in QUANTIZATIONS:
        choices = ", ".join(q for q in QUANTIZATIONS if q)
        raise ModelError(f"unknown quantisation {quantize!r}: use {choices}")
    name = check_name(name or default_name(parsed, quantize))
    if quantize not in (None, "int8") and task != "text-generation":
        raise ModelError(f"{quantize} applies to text-generation models only")
    if quantize in BUILDER_PRECISIONS and task == "text-generation":
        return build(
            parsed.kind,
            parsed.location,
            store,
            name=name,
            precision=quantize,
            source_label=source_label or parsed.label,
            versions=export_versions(),
            load=lambda kind, location: load_pretrained(Source(kind, location), "text-generation"),
            progress=progress,
        )
    with Progress(f"loading {parsed.label}", enabled=progress):
        model, tokenizer = load_pretrained(parsed, task)
    log.info("model_export_started", model=name, source=parsed.label, task=task)
    return export_loaded(
        model,
        tokenizer,
        store,
        name=name,
        source_label=source_label or parsed.label,
        task=task,
        quantize=quantize,
        progress=progress,
    )
