"""Placement wire messages: deployment records and peer-to-peer model transfer (no I/O).

A :class:`Deployment` is desired state ("serve model M with N replicas, or automatically"),
issued by any node, carried as a :class:`SignedDeployment` (origin-signed like node state
records, so relays cannot forge or alter it) and gossiped with :class:`DeploymentSync`. For each
model the newest version wins; an undeploy is a newer version with ``deployed=False``.

Model transfer is pulled by the node that needs the files: it asks a holder for the manifest
(:class:`ModelManifestRequest` / :class:`ModelManifestReply`), then for byte ranges of each file
(:class:`ModelChunkRequest` / :class:`ModelChunk`). Each chunk is an ordinary bus frame, so it is
encrypted to the receiver and signed by the sender like every other frame.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from llmnode.schemas.base import WireMessage
from llmnode.schemas.membership import Counter, MemberId

MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"  # the store's name rule (store.NAME_PATTERN)
MAX_DEPLOYMENT_BYTES = 4096
MAX_DEPLOYMENTS = 1024
MAX_REPLICAS = 1024
MAX_CHUNK_BYTES = 1024 * 1024  # below the 4 MiB frame limit, with room for the header
MAX_MANIFEST_BYTES = 1024 * 1024

ModelName = Annotated[str, msgspec.Meta(pattern=MODEL_NAME)]
Replicas = Annotated[int, msgspec.Meta(ge=0, le=MAX_REPLICAS)]
TransferId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
FilePath = Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
Offset = Annotated[int, msgspec.Meta(ge=0, le=2**62)]
ChunkLength = Annotated[int, msgspec.Meta(ge=1, le=MAX_CHUNK_BYTES)]
ShortText = Annotated[str, msgspec.Meta(max_length=1024)]


class Deployment(msgspec.Struct, frozen=True, kw_only=True):
    """The desired state of one model in the mesh (the payload of a SignedDeployment)."""

    model: ModelName
    replicas: Replicas = 1  # fixed count; with ``auto``, the count the steward last chose
    auto: bool = False  # the count follows demand, between min_replicas and max_replicas
    min_replicas: Replicas = 1
    max_replicas: Replicas = 8
    deployed: bool = True  # False: undeployed (wins over older versions, like a tombstone)
    footprint_mb: Annotated[int, msgspec.Meta(ge=0)] = 0  # expected, from the manifest
    manifest_sha256: Annotated[str, msgspec.Meta(max_length=64)] = ""  # "" accepts any copy
    issued_at: float = 0.0  # unix seconds, for display only (versions order records)


class SignedDeployment(msgspec.Struct, frozen=True, tag=True, array_like=True):
    """A deployment, version ``version``, signed by the node ``origin`` that issued it."""

    origin: MemberId
    version: Counter
    payload: Annotated[bytes, msgspec.Meta(max_length=MAX_DEPLOYMENT_BYTES)]
    signature: Annotated[bytes, msgspec.Meta(max_length=128)]


class DeploymentSync(WireMessage, frozen=True):
    """Deployment records pushed to a peer (on change, and in anti-entropy)."""

    records: Annotated[list[SignedDeployment], msgspec.Meta(max_length=MAX_DEPLOYMENTS)]


class ModelManifestRequest(WireMessage, frozen=True):
    transfer: TransferId
    model: ModelName


class ModelManifestReply(WireMessage, frozen=True):
    """The holder's manifest.json bytes, or ``error`` (e.g. "not_found")."""

    transfer: TransferId
    model: ModelName
    manifest: Annotated[bytes, msgspec.Meta(max_length=MAX_MANIFEST_BYTES)] = b""
    error: ShortText = ""


class ModelChunkRequest(WireMessage, frozen=True):
    transfer: TransferId
    model: ModelName
    path: FilePath
    offset: Offset
    length: ChunkLength


class ModelChunk(WireMessage, frozen=True):
    """Bytes [offset, offset + len(data)) of one file, or ``error``."""

    transfer: TransferId
    path: FilePath
    offset: Offset
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_CHUNK_BYTES)] = b""
    error: ShortText = ""
