"""Node configuration: defaults < TOML file < environment < flags (reads files and the environment).

Every field of :class:`~llmnode.schemas.config.NodeConfig` can be set in the TOML file; the
environment variables below cover what containers need; flags win over both.
"""

from __future__ import annotations

import fcntl
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from llmnode.errors import ConfigError
from llmnode.schemas.config import NodeConfig

# Environment variables llmnode reads, and the config field each sets.
ENVIRONMENT: dict[str, str] = {
    "LLMNODE_NAME": "name",
    "LLMNODE_DATA_DIR": "data_dir",
    "LLMNODE_LISTEN": "listen",
    "LLMNODE_ADVERTISE": "advertise",
    "LLMNODE_JOIN": "join",
    "LLMNODE_MODELS": "models",
    "LLMNODE_AGENTS": "agents",
    "LLMNODE_MODEL_STORE": "model_store",
    "LLMNODE_CONTROL": "control",
    "LLMNODE_LOG_LEVEL": "log_level",
    "LLMNODE_PROBE_INTERVAL": "probe_interval",
    "LLMNODE_NO_BEACON": "beacon",
}
# Read elsewhere (secrets and tuning), listed so tooling can check a compose file against them.
OTHER_ENVIRONMENT = (
    "LLMNODE_MESH_KEY", "LLMNODE_ORT_THREADS", "LLMNODE_ORT_SPIN", "LLMNODE_CONFIG",
)  # fmt: skip
_LIST_FIELDS = {"join", "models", "agents"}


def default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "llmnode"


def resolve_data_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """The data dir: the argument, else ``LLMNODE_DATA_DIR``, else ``~/.local/share/llmnode``."""
    if value:
        return Path(value).expanduser()
    env = os.environ.get("LLMNODE_DATA_DIR")
    return Path(env).expanduser() if env else default_data_dir()


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for variable, field in ENVIRONMENT.items():
        raw = environ.get(variable)
        if raw is None or raw == "":
            continue
        if field in _LIST_FIELDS:
            values[field] = [item.strip() for item in raw.split(",") if item.strip()]
        elif field == "beacon":
            values[field] = raw.strip().lower() not in ("1", "true", "yes", "on")
        else:
            values[field] = raw
    return values


def load_config(
    file: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> NodeConfig:
    """Build the config. ``overrides`` are flags: keys whose value is None are not set."""
    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    file = file or environ.get("LLMNODE_CONFIG")
    if file:
        path = Path(file).expanduser()
        try:
            merged.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as error:
            raise ConfigError(f"config file not found: {path}") from error
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"cannot read config file {path}: {error}") from error
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"config file {path} is not valid TOML: {error}") from error
    merged.update(_from_environment(environ))
    for key, value in (overrides or {}).items():
        if value is None or (key in _LIST_FIELDS and not value and key in merged):
            continue
        merged[key] = value
    try:
        config = msgspec.convert(merged, NodeConfig, strict=False)
    except msgspec.ValidationError as error:
        raise ConfigError(f"invalid configuration: {error}") from error
    if config.probe_interval <= 0:
        raise ConfigError("probe_interval must be positive")
    if not config.data_dir:
        config = msgspec.structs.replace(config, data_dir=str(resolve_data_dir()))
    return config


LOCK_FILE = "node.lock"  # in the data dir: held by the running node, names its pid
# In the data dir: the signed deployment records this node knows (``models deploy``), written
# on every change and read at start, so deployments survive a restart of every node.
DEPLOYMENTS_FILE = "deployments.json"


class DataDirLock:
    """An exclusive ``flock`` on ``DATA_DIR/node.lock``, held while the file stays open."""

    def __init__(self, descriptor: int, path: Path) -> None:
        self._descriptor: int | None = descriptor
        self.path = path

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing releases the lock
            self._descriptor = None


def lock_data_dir(data_dir: Path) -> DataDirLock:
    """Take the data dir for this process; ConfigError naming the pid of a node holding it.

    The lock is ``flock(LOCK_EX | LOCK_NB)``, so it dies with its process (a ``kill -9`` leaves
    no stale lock); the file keeps the holder's pid for the message.
    """
    path = data_dir / LOCK_FILE
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConfigError(f"cannot open {path}: {error.strerror or error}") from error
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(descriptor, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(descriptor)
        raise ConfigError(
            f"another node (pid {holder}) is running on data dir {data_dir}; "
            "stop it first or use another --data-dir"
        ) from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return DataDirLock(descriptor, path)
