"""The node state record every node gossips about itself (no I/O).

One versioned record per node, signed by its origin (see ``SignedRecord`` in
:mod:`llmnode.schemas.membership`), so relays cannot forge or alter it.
"""

from __future__ import annotations

import msgspec


class GpuInfo(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    name: str
    memory_total_mb: int
    memory_free_mb: int
    utilization_pct: int = 0


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    cpu_cores: int
    ram_total_mb: int
    ram_free_mb: int
    gpus: list[GpuInfo] = []
    source: str = "probe"  # "nvml", "cpu" (no GPU or driver) or "declared" (config)


class ServiceLoad(msgspec.Struct, frozen=True, kw_only=True):
    """Live load of one service (a model or an agent) on one node."""

    slots: int = 1  # requests served in parallel
    queue_limit: int = 64  # waiting requests beyond which the node answers Busy
    queue_depth: int = 0  # waiting, not started
    in_flight: int = 0  # started, not finished
    ewma_service_ms: float = 0.0  # smoothed time to serve one request
    tokens_per_s: float = 0.0
    served: int = 0
    memory_mb: int = 0
    # Names of the system prompts whose KV this node's prefix cache holds (``prefix_key``):
    # the scheduler prefers, other things equal, a node that holds a request's prefix.
    prefixes: list[bytes] = []


class ServiceInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A model or agent hosted by a node. ``name`` is what callers address."""

    name: str  # "model:smollm2-135m-instruct" for a model, the agent name for an agent
    kind: str  # "model" or "agent"
    task: str = ""  # for models: "text-generation" or "feature-extraction"
    topics: list[str] = []  # topic subscriptions (agents)
    allow: list[str] = []  # node ids (base32) allowed to call it; empty: any mesh member
    load: ServiceLoad = ServiceLoad()


class NodeState(msgspec.Struct, frozen=True, kw_only=True):
    node_id: str  # base32 of the Ed25519 public key
    name: str
    endpoints: list[str]
    version: str
    started_at: float
    resources: Resources
    services: list[ServiceInfo] = []
    requests_served: int = 0
    api_keys: list[str] = []  # sha256 (hex) of the HTTP API keys created on this node
    # Placement (llmnode.nodes.placement); last, with defaults, so older records still decode.
    models_stored: list[str] = []  # complete models in this node's store
    models_pinned: list[str] = []  # started with --model: served whatever placement decides
    model_memory_mb: int = 0  # memory for models, its loaded ones included (0: takes none)
    http: str = ""  # HOST:PORT of its HTTP server (API, /metrics, dashboard); "": none
