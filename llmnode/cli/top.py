"""``llmnode top``: the dashboard's live view in the terminal, refreshing in place (I/O: the
control socket, HTTP and the terminal).

It asks the local node (control socket) where its HTTP server is, then reads the node's
``/dashboard/snapshot`` once a second: the very message the web dashboard draws, so both show
the same numbers. :func:`render` turns one snapshot (and the one before, for rates) into rich
renderables; it does no I/O and is what the tests check.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Annotated, Any

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from llmnode.cli.common import DataDir, fail
from llmnode.errors import ConfigError, MeshError, TransportError

REQUEST_COUNTERS = ("entered", "served", "in_flight", "failed", "rerouted", "retried", "resumed",
                    "hedged")  # fmt: skip
_STATE_STYLES = {"alive": "green", "suspect": "yellow", "dead": "red", "left": "dim"}
EVENTS_SHOWN = 8


def render(now: dict[str, Any], before: dict[str, Any] | None = None) -> RenderableType:
    """One screen of ``llmnode top`` from a dashboard snapshot (rates against ``before``)."""
    node = now["node"]
    alive = sum(1 for row in now["members"] if row["state"] == "alive")
    head = Text.assemble(
        ("llmnode top  ", "bold"),
        f"{node['name']}  up {node['uptime_s']:.0f} s  {alive}/{len(now['members'])} members alive"
        f"  {time.strftime('%H:%M:%S', time.localtime(now['time']))}",
    )
    return Group(head, _members(now), _requests(now), _models(now, before), _events(now))


def _members(now: dict[str, Any]) -> Table:
    table = Table(title="members", title_justify="left", expand=True)
    for column in ("node", "state", "GPUs", "RAM free MiB", "models", "agents", "running/waiting"):
        table.add_column(column)
    for row in now["members"]:
        gpus = ", ".join(
            f"{gpu['name']} {gpu['free_mb']}/{gpu['total_mb']} {gpu['util_pct']}%"
            for gpu in row.get("gpus", [])
        )
        load = row["load"].values()
        running = _total([item["running"] for item in load])
        waiting = _total([item["waiting"] for item in load])
        table.add_row(
            row["name"] + (" *" if row["self"] else ""),
            Text(row["state"], style=_STATE_STYLES.get(row["state"], "")),
            gpus or "-",
            str(row.get("ram_free_mb", "-")),
            ", ".join(row["models"]) or "-",
            ", ".join(row["agents"]) or "-",
            f"{running}/{waiting}",
        )
    return table


def _total(counts: list[int | None]) -> str:
    """The sum of the counts known; "?" when a peer's load was never seen (records carry none),
    "-" when there is nothing to count."""
    known = [count for count in counts if count is not None]
    if known:
        return str(sum(known))
    return "?" if counts else "-"


def _requests(now: dict[str, Any]) -> Text:
    requests = now["counters"]["requests"]
    parts = [f"{key} {requests[key]}" for key in REQUEST_COUNTERS]
    rejected = sum(now["counters"]["rejections"].values())
    return Text("requests  " + "  ".join(parts) + f"  rejections {rejected}")


def _models(now: dict[str, Any], before: dict[str, Any] | None) -> Table:
    table = Table(title="models served here", title_justify="left", expand=True)
    for column in ("model", "requests", "req/s", "mean TTFT ms", "tokens", "tokens/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    span = now["time"] - before["time"] if before else 0.0
    for model, figures in sorted(now["models"].items()):
        requests = int(figures.get("e2e_request_latency_seconds_count", 0))
        tokens = int(figures.get("request_generation_tokens_sum", 0))
        count = figures.get("time_to_first_token_seconds_count", 0)
        ttft = 1000 * figures.get("time_to_first_token_seconds_sum", 0) / count if count else 0
        old = before["models"].get(model, {}) if before else {}
        rate = tokens_rate = 0.0
        if span > 0:
            rate = (requests - old.get("e2e_request_latency_seconds_count", 0)) / span
            tokens_rate = (tokens - old.get("request_generation_tokens_sum", 0)) / span
        table.add_row(
            model, str(requests), f"{rate:.1f}", f"{ttft:.1f}", str(tokens), f"{tokens_rate:.1f}"
        )
    return table


def _events(now: dict[str, Any]) -> Text:
    lines = [
        time.strftime("%H:%M:%S ", time.localtime(event["time"])) + event["text"]
        for event in now.get("events", [])[-EVENTS_SHOWN:]
    ]
    return Text("events\n" + ("\n".join(reversed(lines)) or "  none yet"))


async def _snapshots(url: str, key: str, interval: float, console: Console) -> None:
    import aiohttp  # noqa: PLC0415 - only top speaks HTTP from the CLI

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    before: dict[str, Any] | None = None
    async with aiohttp.ClientSession(headers=headers) as session:
        with Live(console=console, auto_refresh=False, screen=False) as live:
            while True:
                try:
                    async with session.get(url + "/dashboard/snapshot") as response:
                        if response.status == 401:
                            raise ConfigError("the node wants an API key: pass --key or set "
                                              "LLMNODE_API_KEY")  # fmt: skip
                        response.raise_for_status()
                        now = await response.json()
                except aiohttp.ClientError as error:
                    raise TransportError(f"cannot read {url}: {error}") from None
                live.update(render(now, before), refresh=True)
                before = now
                await asyncio.sleep(interval)


async def _http_address(data_dir: Any) -> str:
    from llmnode.cli.node import _control_call  # noqa: PLC0415

    status = await _control_call(data_dir, "status")
    address = str(status.get("http") or "")
    if not address:
        raise ConfigError("this node serves no HTTP (started with --http off?): pass --url")
    return "http://" + address


def top(
    data_dir: DataDir = None,
    url: Annotated[
        str | None,
        typer.Option(help="A node's HTTP address (http://HOST:PORT) [default: the local node's]."),
    ] = None,
    key: Annotated[
        str | None, typer.Option(help="API key, needed off loopback [env LLMNODE_API_KEY].")
    ] = None,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 1.0,
) -> None:
    """Live view of the mesh in the terminal: members, load, requests, models, events.

    The same numbers as the web dashboard at the node's HTTP address, `llmnode status` and
    GET /metrics. Ctrl-C leaves."""
    console = Console()

    async def main() -> None:
        base = (url or await _http_address(data_dir)).rstrip("/")
        await _snapshots(base, key or os.environ.get("LLMNODE_API_KEY", ""), interval, console)

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        if not console.is_terminal:  # piped: the last frame ends without a line break
            console.line()
        console.print("top: stopped")
    except MeshError as error:
        fail(str(error))
