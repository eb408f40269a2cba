"""Models copied peer to peer over real buses: byte-identical, resumable, corruption refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from llmnode.agents.models.store import ModelStore
from llmnode.agents.models.transfer import manifest_digest
from llmnode.bus.memory import MemoryNetwork, MemoryTransport
from llmnode.errors import ModelError, TransportError
from llmnode.schemas.placement import ModelChunk, ModelChunkRequest
from tests.support.placement import (
    MODEL,
    MODEL_BYTES,
    Node,
    StartNode,
    same_files,
    store_with_model,
)

FAST = {"chunk_bytes": 128 * 1024, "chunk_timeout_s": 0.5}


async def test_a_model_is_copied_byte_identical_between_two_zmq_buses(
    tmp_path: Path, start_node: StartNode
) -> None:
    source, manifest = store_with_model(tmp_path / "a")
    target = ModelStore(tmp_path / "b")
    holder: Node = await start_node(source, **FAST)
    fetcher: Node = await start_node(target, **FAST)
    assert await fetcher.bus.connect(holder.bus.address) == holder.bus.node_id
    digest = manifest_digest((source.path(MODEL) / "manifest.json").read_bytes())
    pulled = await asyncio.wait_for(
        fetcher.transfer.pull(MODEL, [holder.bus.node_id], manifest_sha256=digest), 60
    )
    assert pulled == manifest
    assert same_files(source, target)
    target.verify(MODEL)  # every sha256 checks out in the target store
    assert holder.transfer.stats["bytes_served"] == manifest.size_bytes
    assert not any(p.name.startswith(".partial-") and p.is_dir() for p in target.root.iterdir())


async def test_a_transfer_broken_mid_way_resumes_from_the_bytes_already_received(
    tmp_path: Path, start_node: StartNode
) -> None:
    source, manifest = store_with_model(tmp_path / "a")
    target = ModelStore(tmp_path / "b")
    slow = {**FAST, "rate_bytes_per_s": 2_000_000, "chunk_timeout_s": 0.3, "max_stalls": 2}
    holder: Node = await start_node(source, **slow)
    fetcher: Node = await start_node(target, **FAST, max_stalls=2)
    await fetcher.bus.connect(holder.bus.address)
    pulling = asyncio.create_task(fetcher.transfer.pull(MODEL, [holder.bus.node_id]))
    while fetcher.transfer.stats["bytes_fetched"] < 1_000_000:
        assert not pulling.done(), "the pull ended before the holder went away"
        await asyncio.sleep(0.01)
    await holder.stop()  # the holder dies mid-transfer
    with pytest.raises(TransportError, match="pull again to resume"):
        await asyncio.wait_for(pulling, 30)
    received = fetcher.transfer.stats["bytes_fetched"]
    assert not target.exists(MODEL)

    again: Node = await start_node(source, **FAST)
    await fetcher.bus.connect(again.bus.address)
    await asyncio.wait_for(fetcher.transfer.pull(MODEL, [again.bus.node_id]), 60)
    assert same_files(source, target)
    assert fetcher.transfer.stats["bytes_resumed"] >= received
    # Only the rest crossed the network the second time.
    assert again.transfer.stats["bytes_served"] == manifest.size_bytes - received


class CorruptingTransport:
    """A real transport that flips one byte in every third large frame it sends."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.large = 0
        self.corrupted = 0

    @property
    def address(self) -> str:
        return self.inner.address

    async def start(self) -> None:
        await self.inner.start()

    def connect(self, address: str) -> None:
        self.inner.connect(address)

    def disconnect(self, address: str) -> None:
        self.inner.disconnect(address)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self) -> None:
        await self.inner.close()

    def send(self, address: str, frame: bytes) -> bool:
        if len(frame) > 10_000:
            self.large += 1
            if self.large % 3 == 0:
                self.corrupted += 1
                middle = len(frame) // 2
                frame = frame[:middle] + bytes([frame[middle] ^ 0x40]) + frame[middle + 1 :]
        return self.inner.send(address, frame)


async def test_chunks_corrupted_on_the_way_are_rejected_and_fetched_again(
    tmp_path: Path, start_node: StartNode
) -> None:
    network: MemoryNetwork[bytes] = MemoryNetwork(seed=7, realtime=True)
    corrupting = CorruptingTransport(network.endpoint("holder"))
    source, _ = store_with_model(tmp_path / "a")
    target = ModelStore(tmp_path / "b")
    options = {**FAST, "chunk_timeout_s": 0.2, "max_stalls": 10}
    holder: Node = await start_node(source, corrupting, **options)
    fetcher: Node = await start_node(target, network.endpoint("fetcher"), **options)
    await fetcher.bus.connect("holder")
    await asyncio.wait_for(fetcher.transfer.pull(MODEL, [holder.bus.node_id]), 60)
    assert corrupting.corrupted > 0
    assert sum(fetcher.bus.rejections.values()) >= corrupting.corrupted
    assert fetcher.transfer.stats["chunks_retried"] >= 1
    assert same_files(source, target)


async def test_a_holder_whose_file_differs_from_its_manifest_is_refused(
    tmp_path: Path, start_node: StartNode
) -> None:
    bad_source, _ = store_with_model(tmp_path / "bad")
    good_source, _ = store_with_model(tmp_path / "good")
    # Same manifest on both holders (copy the good one's files), then damage one byte on disk.
    for path in good_source.path(MODEL).rglob("*"):
        if path.is_file():
            (bad_source.path(MODEL) / path.relative_to(good_source.path(MODEL))).write_bytes(
                path.read_bytes()
            )
    model_file = bad_source.path(MODEL) / "model.onnx"
    data = bytearray(model_file.read_bytes())
    data[MODEL_BYTES // 2] ^= 0xFF
    model_file.write_bytes(bytes(data))
    target = ModelStore(tmp_path / "target")
    bad: Node = await start_node(bad_source, **FAST)
    good: Node = await start_node(good_source, **FAST)
    fetcher: Node = await start_node(target, **FAST)
    await fetcher.bus.connect(bad.bus.address)
    await fetcher.bus.connect(good.bus.address)

    with pytest.raises(ModelError, match=r"model\.onnx does not match the manifest's sha256"):
        await asyncio.wait_for(fetcher.transfer.pull(MODEL, [bad.bus.node_id]), 60)
    assert not target.exists(MODEL)
    assert fetcher.transfer.stats["files_rejected"] == 1

    await asyncio.wait_for(fetcher.transfer.pull(MODEL, [bad.bus.node_id, good.bus.node_id]), 60)
    assert same_files(good_source, target)


async def test_a_holder_serves_only_the_files_its_manifest_lists(
    tmp_path: Path, start_node: StartNode
) -> None:
    source, _ = store_with_model(tmp_path / "a")
    (tmp_path / "secret").write_text("not for peers")
    holder: Node = await start_node(source, **FAST)
    asker: Node = await start_node(ModelStore(tmp_path / "b"), **FAST)
    peer = await asker.bus.connect(holder.bus.address)
    for path in ("../../secret", "manifest.json", "missing.bin"):
        request = ModelChunkRequest(
            transfer=b"t" * 16, model=MODEL, path=path, offset=0, length=1024
        )
        assert asker.bus.send(peer, request)
    asker.tasks[0].cancel()  # read the replies here instead of in the node's pump
    replies = [await asyncio.wait_for(asker.bus.receive(), 5) for _ in range(3)]
    assert all(isinstance(r.message, ModelChunk) for r in replies)
    assert [r.message.error for r in replies] == ["no_such_range"] * 3  # type: ignore[attr-defined]
    assert [r.message.data for r in replies] == [b""] * 3  # type: ignore[attr-defined]


async def test_a_copy_other_than_the_deployed_manifest_is_refused(
    tmp_path: Path, start_node: StartNode
) -> None:
    source, _ = store_with_model(tmp_path / "a")
    target = ModelStore(tmp_path / "b")
    holder: Node = await start_node(source, **FAST)
    fetcher: Node = await start_node(target, **FAST)
    await fetcher.bus.connect(holder.bus.address)
    with pytest.raises(ModelError, match="not the deployed one"):
        await fetcher.transfer.pull(MODEL, [holder.bus.node_id], manifest_sha256="0" * 64)
    assert holder.transfer.stats["bytes_served"] == 0
    assert not target.exists(MODEL)
