"""The on-disk model store: one folder per model with its ONNX files and a manifest (does I/O).

Layout (root defaults to ``~/.cache/llmnode/models``, or ``$LLMNODE_MODEL_STORE``)::

    ROOT/NAME/manifest.json      name, source, task, precision, files (sha256, size), versions
    ROOT/NAME/model.onnx ...     ONNX graph(s), config, tokenizer files, chat template
    ROOT/.tmp-NAME-PID-RANDOM/   a model being written; renamed into place when complete

Writes happen in a temp folder inside the root and are renamed into place at the end, so a
writer killed mid-way (even by SIGKILL) never leaves a half-written model; temp folders whose
process is gone are removed the next time the store is opened.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

from llmnode.agents.models.progress import Progress
from llmnode.errors import ModelError
from llmnode.log import get_logger

log = get_logger(__name__)

MANIFEST = "manifest.json"
TEMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TASKS = ("text-generation", "feature-extraction")
PRECISIONS = ("fp32", "int8", "int4", "fused")  # fused: the builder's fp32 graph


class FileEntry(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # relative to the model folder
    sha256: str
    size: int


class Manifest(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    source: str
    task: str  # "text-generation" or "feature-extraction"
    precision: str  # one of PRECISIONS
    files: list[FileEntry]
    versions: dict[str, str] = {}  # optimum, transformers, onnx, torch, onnxruntime
    created_at: float = 0.0
    model_file: str = "model.onnx"

    @property
    def size_bytes(self) -> int:
        return sum(entry.size for entry in self.files)


def default_root() -> Path:
    configured = os.environ.get("LLMNODE_MODEL_STORE")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "llmnode" / "models"


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise ModelError(
            f"invalid model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128)"
        )
    return name


def sha256_file(path: Path, chunk_bytes: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ModelStore:
    """A folder of exported models. Cheap to construct; safe to share between processes."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ModelError(f"cannot create model store {self.root}: {error.strerror}") from error
        self.clean_stale()

    def __repr__(self) -> str:
        return f"ModelStore({str(self.root)!r})"

    # -- reading ---------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / MANIFEST).is_file()

    def _read_manifest(self, name: str) -> Manifest:
        manifest_path = self.path(name) / MANIFEST
        try:
            data = manifest_path.read_bytes()
        except FileNotFoundError as error:
            known = ", ".join(m.name for m in self.list()) or "none"
            raise ModelError(
                f"model {name!r} is not in the store {self.root} (have: {known}); "
                f"run `llmnode models pull {name}`"
            ) from error
        try:
            return msgspec.json.decode(data, type=Manifest)
        except msgspec.DecodeError as error:
            raise ModelError(
                f"model {name!r} is corrupt: unreadable manifest.json; "
                f"run `llmnode models rm {name}` and pull it again"
            ) from error

    def list(self) -> list[Manifest]:
        manifests: list[Manifest] = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / MANIFEST).is_file():
                continue
            try:
                manifests.append(self._read_manifest(entry.name))
            except ModelError:
                log.warning("model_manifest_unreadable", model=entry.name)
        return manifests

    def get(self, name: str) -> Manifest:
        """The manifest, after checking every file is present with its recorded size."""
        manifest = self._read_manifest(name)
        folder = self.path(name)
        for entry in manifest.files:
            file_path = folder / entry.path
            if not file_path.is_file():
                raise ModelError(self._corrupt(name, f"file {entry.path} is missing"))
            if file_path.stat().st_size != entry.size:
                raise ModelError(self._corrupt(name, f"file {entry.path} size mismatch"))
        return manifest

    def verify(self, name: str) -> Manifest:
        """Like :meth:`get`, and also check every file's sha256 (run when a model loads)."""
        manifest = self.get(name)
        folder = self.path(name)
        for entry in manifest.files:
            if sha256_file(folder / entry.path) != entry.sha256:
                raise ModelError(self._corrupt(name, f"file {entry.path} sha256 mismatch"))
        return manifest

    @staticmethod
    def _corrupt(name: str, detail: str) -> str:
        return (
            f"model {name!r} is corrupt: {detail}; run `llmnode models rm {name}` and pull it again"
        )

    # -- writing ---------------------------------------------------------------------------

    def remove(self, name: str) -> None:
        folder = self.path(name)
        if not folder.exists():
            raise ModelError(f"model {name!r} is not in the store {self.root}")
        trash = self.root / f"{TRASH_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        log.info("model_removed", model=name)

    def clean_stale(self) -> None:
        """Remove temp and trash folders left by processes that no longer run."""
        for entry in self.root.iterdir():
            if not entry.name.startswith((TEMP_PREFIX, TRASH_PREFIX)):
                continue
            match = re.search(r"-(\d+)-[0-9a-f]{8}$", entry.name)
            if match and process_alive(int(match.group(1))) and entry.name.startswith(TEMP_PREFIX):
                continue
            shutil.rmtree(entry, ignore_errors=True)
            log.info("model_store_stale_removed", folder=entry.name)

    @contextlib.contextmanager
    def writing(self, name: str) -> Iterator[Path]:
        """A temp folder to write a model into; on clean exit call :meth:`commit` inside."""
        check_name(name)
        temp = self.root / f"{TEMP_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
        temp.mkdir()
        try:
            yield temp
        finally:
            shutil.rmtree(temp, ignore_errors=True)

    def commit(
        self,
        temp: Path,
        *,
        name: str,
        source: str,
        task: str,
        precision: str,
        versions: dict[str, str],
        model_file: str = "model.onnx",
        progress: bool = False,
    ) -> Manifest:
        """Hash the files of ``temp``, write the manifest, and rename it into place atomically."""
        if task not in TASKS:
            raise ModelError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
        if precision not in PRECISIONS:
            raise ModelError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
        files = sorted(p for p in temp.rglob("*") if p.is_file() and p.name != MANIFEST)
        entries: list[FileEntry] = []
        with Progress(f"hashing {name}", total=len(files), enabled=progress) as bar:
            for file_path in files:
                entries.append(
                    FileEntry(
                        path=file_path.relative_to(temp).as_posix(),
                        sha256=sha256_file(file_path),
                        size=file_path.stat().st_size,
                    )
                )
                bar.advance()
        if not (temp / model_file).is_file():
            raise ModelError(f"export of {name!r} produced no {model_file}")
        manifest = Manifest(
            name=name,
            source=source,
            task=task,
            precision=precision,
            files=entries,
            versions=versions,
            created_at=time.time(),
            model_file=model_file,
        )
        (temp / MANIFEST).write_bytes(msgspec.json.format(msgspec.json.encode(manifest)))
        self._move_into_place(temp, name)
        log.info(
            "model_stored",
            model=name,
            task=task,
            precision=precision,
            size_mb=round(manifest.size_bytes / 1e6, 1),
        )
        return manifest

    def install(self, folder: Path) -> Manifest:
        """Move ``folder`` (model files and their manifest.json, e.g. copied from a peer whose
        files were checked against that manifest) into place atomically, as :meth:`commit` does.
        ``folder`` must be inside the store's root, so the rename stays on one file system."""
        manifest = msgspec.json.decode((folder / MANIFEST).read_bytes(), type=Manifest)
        self._move_into_place(folder, check_name(manifest.name))
        log.info(
            "model_installed", model=manifest.name, size_mb=round(manifest.size_bytes / 1e6, 1)
        )
        return self.get(manifest.name)

    def _move_into_place(self, temp: Path, name: str) -> None:
        _fsync_tree(temp)
        final = self.path(name)
        if final.exists():
            trash = self.root / f"{TRASH_PREFIX}{name}-{os.getpid()}-{secrets.token_hex(4)}"
            final.rename(trash)
            temp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            temp.rename(final)


def _fsync_tree(folder: Path) -> None:
    for file_path in folder.rglob("*"):
        if file_path.is_file():
            with file_path.open("rb") as handle:
                os.fsync(handle.fileno())
