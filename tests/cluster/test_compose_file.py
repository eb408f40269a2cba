"""docker-compose.yml, the Dockerfile and docker/client.sh agree with the CLI and each other."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

import compose
import pytest
import yaml

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

REPOSITORY = compose.REPOSITORY
# Environment variables llmnode reads (the CLI spec); cross-checked against llmnode.config below.
KNOWN_ENVIRONMENT = {
    "LLMNODE_MESH_KEY",
    "LLMNODE_DATA_DIR",
    "LLMNODE_NAME",
    "LLMNODE_JOIN",
    "LLMNODE_LISTEN",
    "LLMNODE_ADVERTISE",
    "LLMNODE_MODEL_STORE",
    "LLMNODE_LOG_LEVEL",
    "LLMNODE_ORT_SPIN",
}
# Read by docker/client.sh, not by llmnode.
CLIENT_SCRIPT_ENVIRONMENT = {"LLMNODE_WAIT_PEERS", "LLMNODE_WAIT_SECONDS"}


def llmnode_command() -> Any:
    import typer.main

    from llmnode.cli.main import app

    return typer.main.get_command(app)


def resolve_subcommand(argv: list[str]) -> tuple[Any, list[str]]:
    """The click command ``llmnode ARGV`` runs (groups followed), and the arguments left."""
    command = llmnode_command()
    rest = list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"`llmnode {name}`: no such command"
        command = command.commands[name]
    return command, rest


def unknown_flags(argv: list[str]) -> list[str]:
    command, rest = resolve_subcommand(argv)
    known = {option for param in command.params for option in (*param.opts, *param.secondary_opts)}
    flags = [token.partition("=")[0] for token in rest if token.startswith("-")]
    return [flag for flag in flags if flag not in known]


def llmnode_invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `llmnode`) for every llmnode command the compose setup runs."""
    found: list[tuple[str, list[str]]] = []
    for name, service in compose.load_services().items():
        if service.argv[:1] == ("llmnode",):
            found.append((f"service {name}", list(service.argv[1:])))
        if service.healthcheck and service.healthcheck[:1] == ("llmnode",):
            found.append((f"healthcheck of {name}", list(service.healthcheck[1:])))
    script = (REPOSITORY / "docker" / "client.sh").read_text()
    command_position = r"(?:^\s*|until |\$\()llmnode "
    words = r"((?:[a-z]+|--[a-z-]+)(?: (?:[a-z]+|--[a-z-]+))*)"
    for match in re.finditer(command_position + words, script, re.MULTILINE):
        found.append(("docker/client.sh", shlex.split(match.group(1))))
    return found


def test_every_llmnode_command_and_flag_exists_in_the_cli() -> None:
    invocations = llmnode_invocations()
    assert len(invocations) >= 8  # 4 nodes + 4 health checks, and client.sh's start/status/peers
    problems = {
        f"{where}: llmnode {' '.join(argv)}": unknown
        for where, argv in invocations
        if (unknown := unknown_flags(argv))
    }
    assert problems == {}


def test_service_environment_is_what_llmnode_reads() -> None:
    from llmnode import config

    read_by_llmnode = set(config.ENVIRONMENT) | set(config.OTHER_ENVIRONMENT)
    assert set() == KNOWN_ENVIRONMENT - read_by_llmnode
    for name, service in compose.load_services().items():
        unknown = set(service.environment) - KNOWN_ENVIRONMENT
        assert unknown == set(), f"service {name} sets variables llmnode does not read"


def test_env_example_documents_only_known_variables() -> None:
    text = (REPOSITORY / ".env.example").read_text()
    assigned = set(re.findall(r"^#? ?(LLMNODE_[A-Z_]+)=", text, re.MULTILINE))
    assert "LLMNODE_MESH_KEY" in assigned
    assert assigned <= KNOWN_ENVIRONMENT
    assert "llmnode init --print-mesh-key" in text


def test_every_node_reads_the_mesh_key_from_the_env_file() -> None:
    for name, service in compose.active(compose.load_services(), ["gpu"]).items():
        assert service.env_files == (".env",), f"service {name}"


def test_depends_on_names_existing_services_in_an_acyclic_order() -> None:
    services = compose.load_services()
    for name, service in services.items():
        assert set(service.depends_on) <= set(services), f"service {name}"
        assert set(service.depends_on.values()) <= {"service_started", "service_healthy"}
    order = compose.start_order(services)
    assert order.index("seed") < order.index("node2") < order.index("client")


def test_nodes_join_the_seed_by_service_name() -> None:
    services = compose.active(compose.load_services())
    for name in ("node2", "node3"):
        argv = list(services[name].argv)
        assert argv[argv.index("--join") + 1] == "seed:7946"
    assert services["client"].environment["LLMNODE_JOIN"] == "seed:7946"


def test_the_mesh_serves_both_default_models_and_both_agents() -> None:
    from llmnode.agents.models.sources import DEFAULTS

    services = compose.active(compose.load_services())
    every_argv = [list(service.argv) for service in services.values()]
    models = {argv[index + 1] for argv in every_argv for index in _flag_positions(argv, "--model")}
    agents = {argv[index + 1] for argv in every_argv for index in _flag_positions(argv, "--agent")}
    assert models == {"all-minilm-l6-v2", "smollm2-135m-instruct"}
    assert models <= set(DEFAULTS)
    assert agents == {"examples.qa_pipeline:Librarian", "examples.qa_pipeline:Writer"}


def test_client_script_and_example_app_exist() -> None:
    client = compose.load_services()["client"]
    script = REPOSITORY / client.argv[0]
    assert script.is_file()
    assert os.access(script, os.X_OK)
    assert (REPOSITORY / "examples" / "qa_pipeline.py").is_file()


def test_gpu_profile_reserves_an_nvidia_device() -> None:
    document = yaml.safe_load((REPOSITORY / "docker-compose.yml").read_text())
    gpu = document["services"]["gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["args"]["VARIANT"] == "gpu"


def test_dockerfile_entrypoint_matches_what_the_harness_assumes() -> None:
    dockerfile = (REPOSITORY / "Dockerfile").read_text()
    entrypoint = re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE)
    command = re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE)
    assert entrypoint is not None
    assert command is not None
    assert tuple(yaml.safe_load(entrypoint.group(1))) == compose.IMAGE_ENTRYPOINT
    assert tuple(yaml.safe_load(command.group(1))) == compose.IMAGE_COMMAND
    assert "HEALTHCHECK" in dockerfile and '["llmnode", "status"]' in dockerfile
    models = re.search(r'^ARG MODELS="([^"]*)"', dockerfile, re.MULTILINE)
    assert models is not None
    assert set(models.group(1).split()) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}


def _flag_positions(argv: list[str], flag: str) -> list[int]:
    return [index for index, token in enumerate(argv) if token == flag]


def test_compose_services_load_in_file_order() -> None:
    names = list(compose.load_services())
    assert names == ["seed", "node2", "node3", "client", "gpu"]
