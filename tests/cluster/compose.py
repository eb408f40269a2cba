"""docker-compose.yml run as namespace nodes (does I/O: reads the file, runs processes).

:func:`load_services` reads the compose file (PyYAML; ``<<`` merge keys work) into
:class:`Service` records: the argv the container would run (entrypoint + command, the image's
``ENTRYPOINT ["llmnode"]`` when the service sets none), its environment, ``depends_on`` with
conditions, its health check and profiles. :class:`ComposeMesh` then runs those services in a
:class:`netns.Cluster`, one namespace per service, the way ``docker compose up`` would:

- the same argv, unchanged: service names are resolved by a per-namespace ``/etc/hosts`` that
  maps every service name to its namespace's address (Docker's embedded DNS does the same), so
  ``--join seed:7946`` works as written and exercises the node's name resolution;
- the image's environment is mirrored (``PATH`` with this virtualenv first, ``PYTHONPATH`` = the
  repository, which is the image's ``/app``; the working directory is the repository root), each
  service gets its own ``LLMNODE_DATA_DIR`` (its volume), all share one ``LLMNODE_MODEL_STORE``
  (namespaces share the filesystem), and ``env_file`` values come from the caller (the test's
  mesh key) instead of a ``.env`` file;
- services start in ``depends_on`` order, and a dependency whose condition is
  ``service_healthy`` is waited for by running its health check in its namespace until it passes.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import netns
import yaml

REPOSITORY = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPOSITORY / "docker-compose.yml"
IMAGE_ENTRYPOINT = ("llmnode",)  # the Dockerfile's ENTRYPOINT
IMAGE_COMMAND = ("start",)  # the Dockerfile's CMD


class ComposeError(RuntimeError):
    """The compose file is inconsistent, or a service failed to start or become healthy."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    environment: dict[str, str]
    env_files: tuple[str, ...]
    depends_on: dict[str, str]  # service -> condition (service_started, service_healthy, ...)
    healthcheck: tuple[str, ...] | None  # an argv; CMD-SHELL becomes ``sh -c``
    profiles: tuple[str, ...]


def _as_argv(value: Any, *, field: str, service: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(shlex.split(value))
    if isinstance(value, list) and all(isinstance(item, str | int | float) for item in value):
        return tuple(str(item) for item in value)
    raise ComposeError(f"service {service}: {field} must be a string or a list of strings")


def _environment(value: Any, service: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(key): "" if item is None else str(item) for key, item in value.items()}
    if isinstance(value, list):
        pairs = [str(item).partition("=") for item in value]
        return {key: item for key, _, item in pairs}
    raise ComposeError(f"service {service}: environment must be a mapping or a list")


def _depends_on(value: Any, service: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return {str(name): "service_started" for name in value}
    if isinstance(value, dict):
        return {
            str(name): str((options or {}).get("condition", "service_started"))
            for name, options in value.items()
        }
    raise ComposeError(f"service {service}: depends_on must be a list or a mapping")


def _healthcheck(value: Any, service: str) -> tuple[str, ...] | None:
    if not value or value.get("disable"):
        return None
    test = value.get("test")
    if isinstance(test, str):
        return ("sh", "-c", test)
    argv = _as_argv(test, field="healthcheck.test", service=service)
    if argv[:1] == ("CMD",):
        return argv[1:]
    if argv[:1] == ("CMD-SHELL",):
        return ("sh", "-c", " ".join(argv[1:]))
    if argv[:1] == ("NONE",):
        return None
    raise ComposeError(f"service {service}: healthcheck.test must start with CMD or CMD-SHELL")


def load_services(path: Path = COMPOSE_FILE) -> dict[str, Service]:
    """Every service of the compose file, in file order."""
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("services"), dict):
        raise ComposeError(f"{path}: no `services` mapping")
    services: dict[str, Service] = {}
    for name, spec in document["services"].items():
        if not isinstance(spec, dict):
            raise ComposeError(f"service {name}: not a mapping")
        entrypoint = _as_argv(spec.get("entrypoint"), field="entrypoint", service=name)
        command = _as_argv(spec.get("command"), field="command", service=name)
        if not entrypoint:
            entrypoint = IMAGE_ENTRYPOINT
            command = command or IMAGE_COMMAND
        env_file = spec.get("env_file") or []
        services[name] = Service(
            name=name,
            argv=entrypoint + command,
            environment=_environment(spec.get("environment"), name),
            env_files=(env_file,) if isinstance(env_file, str) else tuple(env_file),
            depends_on=_depends_on(spec.get("depends_on"), name),
            healthcheck=_healthcheck(spec.get("healthcheck"), name),
            profiles=tuple(spec.get("profiles") or ()),
        )
    return services


def active(services: Mapping[str, Service], profiles: Sequence[str] = ()) -> dict[str, Service]:
    """The services ``docker compose up`` starts with these profiles enabled."""
    return {
        name: service
        for name, service in services.items()
        if not service.profiles or set(service.profiles) & set(profiles)
    }


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Service names with every dependency before its dependents (file order otherwise)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ComposeError(f"depends_on cycle through {name}")
        if name not in services:
            raise ComposeError(f"depends_on names an unknown service: {name}")
        visiting.add(name)
        for dependency in services[name].depends_on:
            visit(dependency)
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name)
    return order


def image_environment() -> dict[str, str]:
    """What the image's ENV gives every container, mapped onto this checkout."""
    virtualenv_bin = str(Path(sys.executable).parent)
    keep = {key: value for key, value in os.environ.items() if key in ("HOME", "LANG", "TMPDIR")}
    return {
        **keep,
        "PATH": f"{virtualenv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "PYTHONPATH": str(REPOSITORY),
        "PYTHONUNBUFFERED": "1",
    }


class ComposeMesh:
    """The compose services, each in its own namespace of ``cluster`` (named after the service)."""

    def __init__(
        self,
        cluster: netns.Cluster,
        services: Mapping[str, Service],
        *,
        work_dir: Path,
        env_file_values: Mapping[str, str],
        model_store: Path,
        extra_environment: Mapping[str, str] | None = None,
    ) -> None:
        missing = set(services) - set(cluster.nodes)
        if missing:
            raise ComposeError(f"the cluster has no namespace for services {sorted(missing)}")
        self.cluster = cluster
        self.services = dict(services)
        self.work_dir = work_dir
        self.env_file_values = dict(env_file_values)
        self.model_store = model_store
        self.extra_environment = dict(extra_environment or {})
        self.processes: dict[str, subprocess.Popen[Any]] = {}
        cluster.set_hosts({name: cluster.node(name).address for name in services})

    def environment(self, name: str) -> dict[str, str]:
        """The environment the service's process gets (image ENV < env_file < environment)."""
        service = self.services[name]
        data_dir = self.work_dir / name / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        environment = image_environment()
        environment["LLMNODE_DATA_DIR"] = str(data_dir)
        environment["LLMNODE_MODEL_STORE"] = str(self.model_store)
        if service.env_files:
            environment.update(self.env_file_values)
        environment.update(service.environment)
        environment.update(self.extra_environment)
        return environment

    def log_path(self, name: str) -> Path:
        return self.work_dir / name / "output.log"

    def start(self, name: str) -> subprocess.Popen[Any]:
        """Start one service in its namespace (not waiting for anything)."""
        process = self.cluster.run(
            name,
            self.services[name].argv,
            self.environment(name),
            cwd=REPOSITORY,
            log_path=self.log_path(name),
        )
        self.processes[name] = process
        return process

    def healthy(self, name: str) -> bool:
        """Whether the service's health check passes now (no check: whether it is running)."""
        check = self.services[name].healthcheck
        process = self.processes.get(name)
        if process is None or process.poll() is not None:
            return False
        if check is None:
            return True
        completed = self.cluster.execute(
            name, check, self.environment(name), cwd=REPOSITORY, timeout=30
        )
        return completed.returncode == 0

    def wait_healthy(self, name: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy(name):
            process = self.processes.get(name)
            if process is not None and process.poll() is not None:
                raise ComposeError(
                    f"service {name} exited with {process.returncode} before it was healthy\n"
                    + self.cluster.log_tails()
                )
            if time.monotonic() > deadline:
                raise ComposeError(
                    f"service {name} not healthy after {timeout:.0f}s\n" + self.cluster.log_tails()
                )
            time.sleep(0.5)

    def up(self, names: Sequence[str] | None = None, *, health_timeout: float = 120.0) -> None:
        """Start ``names`` (default: all) and their dependencies in order, honouring conditions."""
        needed = set(names) if names is not None else set(self.services)
        for name in list(needed):
            needed |= self._dependencies(name)
        for name in start_order(self.services):
            if name not in needed or name in self.processes:
                continue
            for dependency, condition in self.services[name].depends_on.items():
                if condition == "service_healthy":
                    self.wait_healthy(dependency, health_timeout)
            self.start(name)

    def _dependencies(self, name: str) -> set[str]:
        found: set[str] = set()
        pending = list(self.services[name].depends_on)
        while pending:
            dependency = pending.pop()
            if dependency not in found:
                found.add(dependency)
                pending.extend(self.services[dependency].depends_on)
        return found

    def wait(self, name: str, timeout: float) -> int:
        """Wait for a service that runs to completion (the client); returns its exit code."""
        try:
            return self.processes[name].wait(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            raise ComposeError(
                f"service {name} still running after {timeout:.0f}s\n" + self.cluster.log_tails()
            ) from error

    def output(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""
