"""The ``send``, ``request``, ``chat`` and ``embed`` commands (I/O: the local node, the terminal).

Each command is a plain function taking parsed arguments (usable from Python); :func:`register`
mounts them on the main Typer app. Agent messages are given as a JSON object; its ``"type"`` key,
if any, picks the receiving handler (see :mod:`llmnode.agents.agent`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO, TypeVar

import typer

from llmnode.cli.common import DataDir, guard
from llmnode.errors import ConfigError
from llmnode.schemas.inference import ChatMessage

if TYPE_CHECKING:
    from llmnode.client.sync import SyncMesh

T = TypeVar("T")


def parse_message(text: str) -> dict[str, Any]:
    """A JSON object given on the command line; ConfigError with the reason if it is not one."""
    try:
        message = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"the message is not valid JSON: {error}") from error
    if not isinstance(message, dict):
        raise ConfigError('the message must be a JSON object, e.g. {"type": "Ask", "text": "hi"}')
    return message


def _to_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def connect_sync(data_dir: Path | None, *, name: str) -> SyncMesh:
    """The client, imported when a command runs (not for every command: ``start`` needs none)."""
    from llmnode.client.sync import connect_sync as connect  # noqa: PLC0415

    return connect(data_dir, name=name)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def send(agent: str, message: str, *, data_dir: Path | None = None) -> None:
    """One-way message to ``agent``."""
    with connect_sync(data_dir, name="cli") as mesh:
        mesh.send(agent, parse_message(message))


def request(
    agent: str, message: str, *, timeout: float = 30.0, data_dir: Path | None = None
) -> Any:
    """Send ``message`` to ``agent`` and return its reply (plain data)."""
    with connect_sync(data_dir, name="cli") as mesh:
        return mesh.request(agent, parse_message(message), timeout=timeout)


def embed(model: str, texts: list[str], *, data_dir: Path | None = None) -> list[list[float]]:
    with connect_sync(data_dir, name="cli") as mesh:
        return mesh.embed(model, texts)


def chat_once(
    mesh: SyncMesh,
    model: str,
    history: list[ChatMessage],
    text: str,
    *,
    output: TextIO,
    **options: Any,
) -> str:
    """Ask ``text`` with ``history``, streaming the answer to ``output``; appends both turns."""
    history.append(ChatMessage(role="user", content=text))
    pieces: list[str] = []
    deltas: Iterator[str] = mesh.chat(model, list(history), stream=True, **options)
    for delta in deltas:
        pieces.append(delta)
        output.write(delta)
        output.flush()
    output.write("\n")
    answer = "".join(pieces)
    history.append(ChatMessage(role="assistant", content=answer))
    return answer


def chat(
    model: str,
    *,
    message: str | None = None,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    data_dir: Path | None = None,
    input_stream: TextIO | None = None,
    output: TextIO | None = None,
) -> None:
    """One-shot (``message``) or an interactive chat that keeps its history (empty line or
    ``/exit`` or end of input quits, ``/reset`` forgets the history)."""
    source = input_stream or sys.stdin
    sink = output or sys.stdout
    options = {"max_tokens": max_tokens, "temperature": temperature}
    with connect_sync(data_dir, name="cli") as mesh:
        history: list[ChatMessage] = []
        if system:
            history.append(ChatMessage(role="system", content=system))
        if message is not None:
            chat_once(mesh, model, history, message, output=sink, **options)
            return
        interactive = source.isatty()
        while True:
            if interactive:
                sink.write("> ")
                sink.flush()
            line = source.readline()
            text = line.strip()
            if not line or text in ("", "/exit", "/quit"):
                return
            if text == "/reset":
                del history[1 if system else 0 :]
                continue
            chat_once(mesh, model, history, text, output=sink, **options)


# ---- Typer ----------------------------------------------------------------------------------


def register(app: typer.Typer) -> None:
    """Add ``send``, ``request``, ``chat`` and ``embed`` to ``app``."""

    @app.command("send")
    def send_command(
        agent: Annotated[str, typer.Argument(help="Agent name, or name@node.")],
        message: Annotated[str, typer.Argument(help='JSON object, e.g. {"type": "Ask", ...}')],
        data_dir: DataDir = None,
    ) -> None:
        """Send a one-way message to an agent."""
        guard(lambda: send(agent, message, data_dir=data_dir))

    @app.command("request")
    def request_command(
        agent: Annotated[str, typer.Argument(help="Agent name, or name@node.")],
        message: Annotated[str, typer.Argument(help='JSON object, e.g. {"type": "Ask", ...}')],
        timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 30.0,
        data_dir: DataDir = None,
    ) -> None:
        """Send a request to an agent and print its reply as JSON."""
        reply = guard(lambda: request(agent, message, timeout=timeout, data_dir=data_dir))
        typer.echo(_to_json(reply))

    @app.command("chat")
    def chat_command(
        model: Annotated[str, typer.Argument(help="Model name, e.g. smollm2-135m-instruct.")],
        message: Annotated[
            str | None, typer.Option("--message", "-m", help="Ask once and exit.")
        ] = None,
        system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
        max_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 256,
        temperature: Annotated[float, typer.Option(help="0 is greedy.")] = 0.0,
        data_dir: DataDir = None,
    ) -> None:
        """Chat with a model through the mesh (streams the answer; keeps the history)."""
        guard(
            lambda: chat(
                model,
                message=message,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                data_dir=data_dir,
            )
        )

    @app.command("embed")
    def embed_command(
        model: Annotated[str, typer.Argument(help="Model name, e.g. all-minilm-l6-v2.")],
        texts: Annotated[list[str], typer.Argument(help="Texts to embed.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print the vectors as JSON.")] = False,
        data_dir: DataDir = None,
    ) -> None:
        """Embed texts with a model through the mesh."""
        vectors = guard(lambda: embed(model, texts, data_dir=data_dir))
        if as_json:
            typer.echo(_to_json({"model": model, "vectors": vectors}))
            return
        for text, vector in zip(texts, vectors, strict=True):
            preview = ", ".join(f"{value:+.4f}" for value in vector[:6])
            typer.echo(f"{text!r}: dim={len(vector)} [{preview}, ...]")
