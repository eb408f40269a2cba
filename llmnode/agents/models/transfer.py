"""Peer-to-peer model transfer over the bus: serve store files to peers, fetch them (does I/O).

:class:`ModelTransfer` is one component with two roles, driven by the node's message dispatch
(:meth:`ModelTransfer.handle`) and its task group (:meth:`ModelTransfer.run`):

- holder: answers a manifest request with the model's ``manifest.json`` and chunk requests with
  byte ranges of the files that manifest lists (nothing else is readable), paced by a token
  bucket so uploads never take more than ``rate_bytes_per_s`` from serving traffic;
- fetcher: :meth:`ModelTransfer.pull` asks a holder for the manifest, then pulls each file in
  chunks with a window of requests in flight, writes them in order to ``ROOT/.partial-NAME/``
  and checks each file's sha256 against the manifest. The finished folder is renamed into the
  store (:meth:`ModelStore.install`).

Every chunk is an ordinary bus frame, so it is encrypted to the fetcher and signed by the holder;
a frame altered on the way fails its MAC at the bus and never arrives, and the chunk is asked
for again when its request times out. A holder whose bytes do not match the manifest's sha256
is refused (that file starts over from another holder). A transfer broken mid-way (holder gone,
process killed) leaves the partial folder; the next pull of the same manifest resumes from the
bytes already written, re-hashing them first, so only the rest crosses the network.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import msgspec

from llmnode.agents.models.partial import (
    append,
    hash_prefix,
    partial_lock,
    prepare_partial,
    read_range,
    safe_path,
)
from llmnode.agents.models.store import MANIFEST, Manifest, ModelStore, check_name
from llmnode.bus import crypto
from llmnode.bus.identity import node_id_to_text
from llmnode.errors import ModelError, TransportError
from llmnode.log import get_logger
from llmnode.schemas.base import WireMessage
from llmnode.schemas.placement import (
    MAX_CHUNK_BYTES,
    ModelChunk,
    ModelChunkRequest,
    ModelManifestReply,
    ModelManifestRequest,
)

log = get_logger(__name__)

CHUNK_BYTES = 256 * 1024
WINDOW = 8  # chunk requests in flight per pull
RATE_BYTES_PER_S = 100e6  # default pace of uploads and downloads, each way
SERVE_QUEUE = 256  # requests waiting to be served; beyond, dropped (the fetcher asks again)
# The message types the node's dispatch hands to ModelTransfer.handle.
MESSAGES = (ModelManifestRequest, ModelManifestReply, ModelChunkRequest, ModelChunk)
Send = Callable[[bytes, WireMessage], bool]


class TokenBucket:
    """Bytes per second with a burst allowance, on an explicit clock (pure)."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._tokens, self._updated = burst, 0.0

    def take(self, amount: int, now: float) -> float:
        """Spend ``amount`` tokens (going into debt if need be); seconds to wait before use."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


def manifest_digest(data: bytes) -> str:
    """The sha256 of a manifest.json, as a deployment record names the copy to serve."""
    return hashlib.sha256(data).hexdigest()


class ModelTransfer:
    """Serves this node's store to peers and fetches models from them (see module docstring)."""

    def __init__(
        self,
        store: ModelStore,
        send: Send,
        *,
        rate_bytes_per_s: float = RATE_BYTES_PER_S,
        chunk_bytes: int = CHUNK_BYTES,
        window: int = WINDOW,
        chunk_timeout_s: float = 2.0,
        max_stalls: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 1 <= chunk_bytes <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk_bytes must be 1..{MAX_CHUNK_BYTES}")
        self.store, self._send, self._clock = store, send, clock
        self.chunk_bytes, self.window = chunk_bytes, max(1, window)
        self.chunk_timeout_s, self.max_stalls = chunk_timeout_s, max_stalls
        burst = max(float(chunk_bytes * self.window), rate_bytes_per_s / 10)
        self._upload = TokenBucket(rate_bytes_per_s, burst)
        self._download = TokenBucket(rate_bytes_per_s, burst)
        self._requests: asyncio.Queue[tuple[bytes, WireMessage]] = asyncio.Queue(SERVE_QUEUE)
        # transfer id -> (the holder asked, its replies): bounded, and only from that holder
        self._replies: dict[bytes, tuple[bytes, asyncio.Queue[WireMessage]]] = {}
        self._manifests: dict[str, tuple[float, bytes, Manifest]] = {}
        self.stats: dict[str, int] = {
            "bytes_served": 0,
            "bytes_fetched": 0,
            "bytes_resumed": 0,
            "chunks_requested": 0,
            "chunks_retried": 0,
            "files_rejected": 0,
            "requests_dropped": 0,
            "requests_refused": 0,
        }

    # -- dispatch ---------------------------------------------------------------------------

    def handle(self, sender: bytes, message: WireMessage) -> bool:
        """Take a transfer message from the bus (False: not one of ours). Never waits."""
        if isinstance(message, ModelChunk | ModelManifestReply):
            waiting = self._replies.get(message.transfer)
            if waiting is not None and waiting[0] == sender and not waiting[1].full():
                waiting[1].put_nowait(message)
            return True
        if isinstance(message, ModelChunkRequest | ModelManifestRequest):
            try:
                self._requests.put_nowait((sender, message))
            except asyncio.QueueFull:
                self.stats["requests_dropped"] += 1
            return True
        return False

    # -- holder -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Serve manifest and chunk requests until cancelled (run it in the node's task group)."""
        while True:
            sender, request = await self._requests.get()
            if isinstance(request, ModelManifestRequest):
                self._send(sender, self._manifest_reply(request))
            elif isinstance(request, ModelChunkRequest):
                await asyncio.sleep(self._upload.take(request.length, self._clock()))
                self._send(sender, await self._chunk_reply(request))

    def _served_manifest(self, model: str) -> tuple[bytes, Manifest] | None:
        """The manifest bytes and files of a complete model in the store (cached by mtime)."""
        try:
            path = self.store.path(model) / MANIFEST
            mtime = path.stat().st_mtime
        except (ModelError, OSError):
            return None
        cached = self._manifests.get(model)
        if cached is not None and cached[0] == mtime:
            return cached[1], cached[2]
        try:
            self.store.get(model)  # every file present at its size
            data = path.read_bytes()
            manifest = msgspec.json.decode(data, type=Manifest)
        except (ModelError, OSError, msgspec.DecodeError):
            return None
        self._manifests[model] = (mtime, data, manifest)
        return data, manifest

    def _manifest_reply(self, request: ModelManifestRequest) -> ModelManifestReply:
        served = self._served_manifest(request.model)
        if served is None:
            self.stats["requests_refused"] += 1
            return ModelManifestReply(
                transfer=request.transfer, model=request.model, error="not_found"
            )
        return ModelManifestReply(
            transfer=request.transfer, model=request.model, manifest=served[0]
        )

    async def _chunk_reply(self, request: ModelChunkRequest) -> ModelChunk:
        served = self._served_manifest(request.model)
        entry = None
        if served is not None:
            entry = next((f for f in served[1].files if f.path == request.path), None)
        if entry is None or request.offset >= entry.size:
            self.stats["requests_refused"] += 1
            return ModelChunk(
                transfer=request.transfer,
                path=request.path,
                offset=request.offset,
                error="no_such_range",
            )
        file_path = self.store.path(request.model) / entry.path
        length = min(request.length, entry.size - request.offset)
        try:
            data = await asyncio.to_thread(read_range, file_path, request.offset, length)
        except OSError as error:
            return ModelChunk(
                transfer=request.transfer,
                path=request.path,
                offset=request.offset,
                error=f"unreadable: {error.strerror}",
            )
        self.stats["bytes_served"] += len(data)
        return ModelChunk(
            transfer=request.transfer, path=request.path, offset=request.offset, data=data
        )

    # -- fetcher ----------------------------------------------------------------------------

    async def pull(
        self,
        model: str,
        holders: Sequence[bytes],
        *,
        manifest_sha256: str = "",
        manifest_timeout_s: float = 5.0,
    ) -> Manifest:
        """Copy ``model`` into the store from the first of ``holders`` that can serve it.

        Raises ModelError when no holder has a copy matching ``manifest_sha256`` (when given)
        or every copy fails its sha256, TransportError when holders stop answering (the bytes
        received so far are kept: the next pull resumes from them).
        """
        check_name(model)
        failures: list[str] = []
        broken_off = True  # every holder failed by not answering (not by bad content)
        with partial_lock(self.store, model):
            for holder in holders:
                peer = node_id_to_text(holder)[:12]
                try:
                    data, manifest = await self.fetch_manifest(
                        model, holder, manifest_sha256, manifest_timeout_s
                    )
                    folder = prepare_partial(self.store, model, data)
                    for entry in manifest.files:
                        await self._fetch_file(
                            model, holder, folder, entry.path, entry.size, entry.sha256
                        )
                except TransportError as error:
                    failures.append(f"{peer}: {error}")
                    continue
                except ModelError as error:
                    broken_off = False
                    failures.append(f"{peer}: {error}")
                    continue
                installed = self.store.install(folder)
                log.info("model_pulled", model=model, holder=peer, stats=self.stats)
                return installed
        detail = "; ".join(failures) or "no holder given"
        if failures and broken_off:
            raise TransportError(f"pull of {model!r} broke off ({detail}); pull again to resume")
        raise ModelError(f"cannot pull {model!r} from the mesh: {detail}")

    def _request(self, holder: bytes, message: WireMessage) -> None:
        if not self._send(holder, message):
            raise TransportError("the holder is unreachable (unknown peer or full queue)")

    async def fetch_manifest(
        self, model: str, holder: bytes, expected: str = "", timeout: float = 5.0
    ) -> tuple[bytes, Manifest]:
        """A holder's manifest.json bytes and decoded manifest (for ``models deploy`` on a
        node without the model: its footprint and ``manifest_digest`` go in the record)."""
        transfer = crypto.random_bytes(16)
        queue: asyncio.Queue[WireMessage] = asyncio.Queue(2)
        self._replies[transfer] = (holder, queue)
        try:
            self._request(holder, ModelManifestRequest(transfer=transfer, model=model))
            try:
                reply = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError as error:
                raise TransportError(f"no manifest within {timeout:g} s") from error
        finally:
            del self._replies[transfer]
        assert isinstance(reply, ModelManifestReply)
        if reply.error:
            raise ModelError(f"the holder answered {reply.error}")
        if expected and manifest_digest(reply.manifest) != expected:
            raise ModelError("its manifest is not the deployed one (sha256 differs)")
        try:
            manifest = msgspec.json.decode(reply.manifest, type=Manifest)
        except msgspec.DecodeError as error:
            raise ModelError("its manifest does not decode") from error
        if manifest.name != model or not all(safe_path(f.path) for f in manifest.files):
            raise ModelError("its manifest names another model or unsafe paths")
        return reply.manifest, manifest

    async def fetch_bytes(self, model: str, holder: bytes, path: str) -> bytes:
        """One small file (at most a chunk) of a holder's model, in memory, sha256-checked."""
        _, manifest = await self.fetch_manifest(model, holder)
        entry = next((f for f in manifest.files if f.path == path), None)
        if entry is None or entry.size > MAX_CHUNK_BYTES:
            raise ModelError(f"the holder's {model!r} has no small file {path}")
        transfer, buffer, digest = crypto.random_bytes(16), io.BytesIO(), hashlib.sha256()
        queue: asyncio.Queue[WireMessage] = asyncio.Queue(4 * self.window)
        self._replies[transfer] = (holder, queue)
        try:
            await self._receive_chunks(
                transfer, queue, model, holder, path, 0, entry.size, buffer, digest
            )
        finally:
            del self._replies[transfer]
        if digest.hexdigest() != entry.sha256:
            raise ModelError(f"file {path} does not match the manifest's sha256")
        return buffer.getvalue()

    async def _fetch_file(
        self, model: str, holder: bytes, folder: Path, path: str, size: int, sha256: str
    ) -> None:
        target = folder / path
        target.parent.mkdir(parents=True, exist_ok=True)
        have = target.stat().st_size if target.exists() else 0
        if have > size:
            target.unlink()
            have = 0
        digest = hashlib.sha256()
        if have:  # resume: hash what is already there, fetch only the rest
            await asyncio.to_thread(hash_prefix, target, digest)
            self.stats["bytes_resumed"] += have
        if have == size and digest.hexdigest() == sha256:
            return
        transfer = crypto.random_bytes(16)
        queue: asyncio.Queue[WireMessage] = asyncio.Queue(4 * self.window)
        self._replies[transfer] = (holder, queue)
        try:
            with target.open("ab") as handle:
                await self._receive_chunks(
                    transfer, queue, model, holder, path, have, size, handle, digest
                )
        finally:
            del self._replies[transfer]
        if digest.hexdigest() != sha256:
            target.unlink(missing_ok=True)
            self.stats["files_rejected"] += 1
            raise ModelError(f"file {path} does not match the manifest's sha256")

    async def _receive_chunks(
        self,
        transfer: bytes,
        queue: asyncio.Queue[WireMessage],
        model: str,
        holder: bytes,
        path: str,
        start: int,
        size: int,
        handle: IO[bytes],
        digest: Any,
    ) -> None:
        requested = written = start
        outstanding: dict[int, int] = {}  # offset -> length
        arrived: dict[int, bytes] = {}
        stalls = 0

        async def ask(offset: int, length: int) -> None:
            await asyncio.sleep(self._download.take(length, self._clock()))
            self.stats["chunks_requested"] += 1
            request = ModelChunkRequest(
                transfer=transfer, model=model, path=path, offset=offset, length=length
            )
            self._request(holder, request)

        while written < size:
            while len(outstanding) < self.window and requested < size:
                length = min(self.chunk_bytes, size - requested)
                outstanding[requested] = length
                await ask(requested, length)
                requested += length
            try:
                chunk = await asyncio.wait_for(queue.get(), self.chunk_timeout_s)
            except TimeoutError:
                stalls += 1
                if stalls > self.max_stalls:
                    raise TransportError(
                        f"the holder stopped sending {path} at byte {written} of {size}"
                    ) from None
                for offset, length in sorted(outstanding.items()):  # lost: ask again
                    self.stats["chunks_retried"] += 1
                    await ask(offset, length)
                continue
            assert isinstance(chunk, ModelChunk)
            if chunk.error:
                raise ModelError(f"the holder cannot serve {path}: {chunk.error}")
            expected = outstanding.get(chunk.offset)
            if chunk.path != path or expected is None or len(chunk.data) != expected:
                continue  # a duplicate of a chunk already written, or a stray: ignore
            stalls = 0
            del outstanding[chunk.offset]
            arrived[chunk.offset] = chunk.data
            while written in arrived:
                data = arrived.pop(written)
                await asyncio.to_thread(append, handle, digest, data)
                written += len(data)
                self.stats["bytes_fetched"] += len(data)
