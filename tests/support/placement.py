"""Helpers for the placement tests: a store with a small model, a Bus + ModelTransfer node."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from llmnode.agents.models.store import Manifest, ModelStore
from llmnode.agents.models.transfer import ModelTransfer
from llmnode.bus.bus import Bus

MODEL = "tiny-transfer"
MODEL_BYTES = 3 * 1024 * 1024 + 12345  # not a multiple of the chunk size


def store_with_model(root: Path, size: int = MODEL_BYTES) -> tuple[ModelStore, Manifest]:
    """A store holding a small model: a random 'model.onnx', a config and a nested file."""
    store = ModelStore(root)
    with store.writing(MODEL) as temp:
        (temp / "model.onnx").write_bytes(os.urandom(size))
        (temp / "config.json").write_text('{"num_hidden_layers": 2}')
        (temp / "tokenizer").mkdir()
        (temp / "tokenizer" / "vocab.txt").write_bytes(os.urandom(70_000))
        manifest = store.commit(
            temp, name=MODEL, source="test", task="text-generation", precision="fp32", versions={}
        )
    return store, manifest


def same_files(first: ModelStore, second: ModelStore, model: str = MODEL) -> bool:
    one, two = first.path(model), second.path(model)
    names = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    return names == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) and all(
        (one / name).read_bytes() == (two / name).read_bytes() for name in names
    )


@dataclass
class Node:
    """A bus and a transfer component, pumped like a node's dispatch would."""

    bus: Bus
    transfer: ModelTransfer
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.bus.close()


async def pump(bus: Bus, transfer: ModelTransfer) -> None:
    while True:
        inbound = await bus.receive()
        transfer.handle(inbound.sender, inbound.message)


StartNode = Callable[..., Awaitable[Node]]
