"""The model side of placement: the store, peer-to-peer transfer, loading and unloading (does I/O).

:class:`StoreModels` implements :class:`llmnode.nodes.placement.host.ModelSide` for the composition
root: it answers what this node stores and has loaded, estimates footprints from manifests
(:func:`~llmnode.nodes.placement.memory.expected_footprint_mb`), moves model files with
:class:`~llmnode.agents.models.transfer.ModelTransfer`, and loads a model as a
:class:`~llmnode.agents.model_service.ModelService` into the node's request server. A model is
added to the server (so advertised in the next state record) only once it is loaded and has
answered one warm-up call, so no request ever waits for a session to open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any

from llmnode.agents.model_service import EMBEDDING_TASK, ModelService
from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import ModelTransfer, Send, manifest_digest
from llmnode.errors import MeshError, ModelError
from llmnode.log import get_logger
from llmnode.nodes.placement.memory import expected_footprint_mb
from llmnode.nodes.requests.receipts import ReceiptSigner
from llmnode.nodes.requests.service import Service
from llmnode.schemas.base import WireMessage
from llmnode.schemas.inference import GenerateRequest

log = get_logger(__name__)

MODEL_PREFIX = "model:"
DEFAULT_SLOTS = 8  # the runtimes' default batch size
CONFIG = "config.json"  # the model's Hugging Face config: its KV cache's shape


class StoreModels:
    """See the module docstring. ``services`` is the node's request server's service table."""

    def __init__(
        self,
        store: ModelStore,
        send: Send,
        services: MutableMapping[str, Service],
        changed: Callable[[], None],
        *,
        slots: int = 0,
        queue_limit: int = 64,
        transfer: ModelTransfer | None = None,
        signer: ReceiptSigner | None = None,
    ) -> None:
        self.store, self.services, self.changed = store, services, changed
        self.signer = signer  # signs a receipt for every result of the models loaded here
        self.slots, self.queue_limit = slots, queue_limit
        self.transfer = transfer or ModelTransfer(store, send)
        self._stored: tuple[int, frozenset[str]] = (-1, frozenset())
        self._footprints: dict[str, tuple[int, str]] = {}

    # -- what is here ----------------------------------------------------------------------

    def stored(self) -> frozenset[str]:
        """Models complete in the store (re-listed when the store folder changes)."""
        try:
            stamp = self.store.root.stat().st_mtime_ns
        except OSError:
            return frozenset()
        if stamp != self._stored[0]:
            self._stored = (stamp, frozenset(m.name for m in self.store.list()))
        return self._stored[1]

    def loaded_mb(self) -> dict[str, int]:
        return {
            name.removeprefix(MODEL_PREFIX): self.footprint(name.removeprefix(MODEL_PREFIX))[0]
            for name in self.services
            if name.startswith(MODEL_PREFIX)
        }

    def footprint(self, model: str) -> tuple[int, str]:
        """Expected footprint (MiB) at this node's slots and the model's context, and the
        sha256 of its manifest; (0, "") when the model is not in the store."""
        cached = self._footprints.get(model)
        if cached is not None:
            return cached
        try:
            manifest = self.store.get(model)
            folder = self.store.path(model)
            digest = manifest_digest((folder / "manifest.json").read_bytes())
            config_path = folder / CONFIG
            config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        except (MeshError, OSError, ValueError):
            return (0, "")
        found = (expected_footprint_mb(manifest, config, slots=self.slots or DEFAULT_SLOTS), digest)
        self._footprints[model] = found
        return found

    async def remote_footprint(self, model: str, holder: bytes) -> tuple[int, str]:
        data, manifest = await self.transfer.fetch_manifest(model, holder)
        config: dict[str, Any] = {}
        if any(entry.path == CONFIG for entry in manifest.files):  # the KV cache's shape
            try:
                config = json.loads(await self.transfer.fetch_bytes(model, holder, CONFIG))
            except ValueError as error:
                raise ModelError(f"the holder's {CONFIG} of {model!r} is not JSON") from error
        slots = self.slots or DEFAULT_SLOTS
        return expected_footprint_mb(manifest, config, slots=slots), manifest_digest(data)

    # -- transfer ----------------------------------------------------------------------------

    async def fetch(self, model: str, holders: Sequence[bytes], manifest_sha256: str) -> None:
        self._footprints.pop(model, None)
        await self.transfer.pull(model, holders, manifest_sha256=manifest_sha256)
        self.changed()  # the record says we hold it now

    def handle(self, sender: bytes, message: WireMessage) -> bool:
        return self.transfer.handle(sender, message)

    async def run(self) -> None:
        await self.transfer.run()

    # -- runtimes ----------------------------------------------------------------------------

    async def load(self, model: str) -> None:
        name = MODEL_PREFIX + model
        if name in self.services:
            return
        options: dict[str, Any] = {"queue_limit": self.queue_limit, "signer": self.signer}
        if self.slots:
            options["slots"] = self.slots
        service = await ModelService.open(self.store, model, **options)
        try:
            await warm(service)
        except BaseException:
            await service.close()
            raise
        self.services[name] = service
        self.changed()
        log.info("model_loaded", model=model)

    async def unload(self, model: str) -> None:
        service = self.services.pop(MODEL_PREFIX + model, None)
        if service is None:
            return
        self.changed()
        await service.close()
        log.info("model_unloaded", model=model)


async def warm(service: ModelService) -> None:
    """One small call through the runtime, so the first request finds it warm."""
    try:
        if service.task == EMBEDDING_TASK:
            await service.runtime.embed(["warm up"])
        else:
            await service.runtime.generate(GenerateRequest(prompt="Hello", max_tokens=1))
    except MeshError as error:
        raise ModelError(f"model {service.name!r} failed its warm-up call: {error}") from error
    service.runtime.forget_warm_up()
