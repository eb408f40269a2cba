"""A node's placement: deployment gossip, the placement loop, control commands (async shell).

:class:`NodePlacement` is the one placement component a :class:`~llmnode.nodes.node.Node` runs:

- it keeps the deployment records (:class:`Deployments`; with a ``deployments_file``, also on
  disk, read back at start: :mod:`~llmnode.nodes.placement.stored`), merges the
  ``DeploymentSync`` frames peers send, pushes a record it issues to every live peer at once,
  and pushes all it knows to a few random peers every ``gossip_s`` (anti-entropy: a node that
  joins late or missed a frame catches up);
- it runs the :class:`PlacementLoop` (place, reconcile, act) and, every ``interval_s``, the
  ``--auto`` steward policy on the mesh-wide queue wait of each auto model (gossiped loads);
- it answers ``models deploy / undeploy / deployments / pull --from-mesh`` from local clients.

What concerns model files and runtimes (the store, peer-to-peer transfer, loading) is behind the
:class:`ModelSide` protocol, which the composition root fills from ``agents/`` (nodes never
import agents). This node's own stored and loaded models are read live from that side, not from
its last gossiped record, so the loop never starts a fetch or a load twice.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from llmnode.bus.identity import Identity, node_id_from_text
from llmnode.errors import ConfigError, ModelError, NoCapacity
from llmnode.log import get_logger
from llmnode.nodes.mesh.view import MeshView
from llmnode.nodes.placement.assign import NodeCapacity
from llmnode.nodes.placement.autoscale import AutoscalePolicy, queue_wait_ms
from llmnode.nodes.placement.deployments import Deployments
from llmnode.nodes.placement.loop import Hooks, PlacementLoop, issue_and_keep
from llmnode.nodes.placement.memory import memory_for_models_mb
from llmnode.nodes.placement.stored import StoredDeployments
from llmnode.schemas.base import WireMessage
from llmnode.schemas.placement import MAX_REPLICAS, MODEL_NAME, Deployment, DeploymentSync
from llmnode.schemas.requests import LoadQuery
from llmnode.schemas.state import Resources

log = get_logger(__name__)

MODEL_PREFIX = "model:"
GOSSIP_FANOUT = 3
GOSSIP_BATCH = 256  # records per DeploymentSync frame (each at most MAX_DEPLOYMENT_BYTES)


class ModelSide(Protocol):
    """Model files and runtimes, as the composition root provides them."""

    def stored(self) -> frozenset[str]:
        """Complete models in this node's store."""
        ...

    def loaded_mb(self) -> dict[str, int]:
        """Models loaded (and advertised) here, with the memory each uses."""
        ...

    def footprint(self, model: str) -> tuple[int, str]:
        """Expected footprint (MiB) and manifest sha256 of a stored model; (0, "") if absent."""
        ...

    async def remote_footprint(self, model: str, holder: bytes) -> tuple[int, str]:
        """The same, from a holder's manifest fetched over the mesh."""
        ...

    async def fetch(self, model: str, holders: Sequence[bytes], manifest_sha256: str) -> None:
        """Copy ``model`` into the store from the first holder that can serve it."""
        ...

    async def load(self, model: str) -> None:
        """Load, warm, then advertise ``model`` (nothing if it is loaded already)."""
        ...

    async def unload(self, model: str) -> None: ...

    def handle(self, sender: bytes, message: WireMessage) -> bool:
        """Take a model-transfer frame (False: not one)."""
        ...

    async def run(self) -> None:
        """Serve transfer requests until cancelled."""
        ...


class NodePlacement:
    """See the module docstring."""

    def __init__(
        self,
        identity: Identity,
        view: MeshView,
        send: Callable[[bytes, WireMessage], bool],
        side: ModelSide,
        *,
        resources: Callable[[], Resources],
        pinned: Sequence[str] = (),
        policy: AutoscalePolicy | None = None,
        interval_s: float = 1.0,
        gossip_s: float = 5.0,
        deployments_file: Path | None = None,
        rejections: Counter[tuple[str, str]] | None = None,
    ) -> None:
        self.me = identity.name
        self.identity, self.view, self._send, self.side = identity, view, send, side
        self.resources, self.pinned = resources, frozenset(pinned)
        self.interval_s, self.gossip_s = interval_s, gossip_s
        self.rejections = Counter[tuple[str, str]]() if rejections is None else rejections
        self.deployments = Deployments()
        if deployments_file is not None:  # kept on disk: read back now, before any gossip
            stored = StoredDeployments(deployments_file, self._refused_file)
            stored.restore()
            self.deployments = stored
        hooks = Hooks(
            capacities=self.capacities,
            loaded_mb=side.loaded_mb,
            fetch=self._fetch,
            load=side.load,
            unload=side.unload,
            publish=self._publish,
        )
        self.loop = PlacementLoop(
            self.me,
            identity,
            self.deployments,
            hooks,
            policy=policy,
            interval_s=interval_s,
            clock=time.time,
        )

    def _refused_file(self, reason: str) -> None:
        self.rejections["deployments_file", reason] += 1

    # -- what this node advertises ---------------------------------------------------------

    def memory_mb(self) -> int:
        """Memory this node can give to models, its loaded ones included."""
        return memory_for_models_mb(self.resources(), sum(self.side.loaded_mb().values()))

    def capacities(self) -> list[NodeCapacity]:
        """Alive nodes as placement sees them: this one live, the others from their records."""
        found: list[NodeCapacity] = []
        for peer in self.view.peers.values():
            record = peer.record
            if peer.node_text == self.me:
                found.append(
                    NodeCapacity(
                        node=self.me,
                        memory_mb=self.memory_mb(),
                        stored=self.side.stored(),
                        loaded=frozenset(self.side.loaded_mb()),
                        pinned=self.pinned,
                    )
                )
            elif record is not None and self.view.state_of(peer.node) == "alive":
                loaded = [
                    s.name.removeprefix(MODEL_PREFIX) for s in record.services if s.kind == "model"
                ]
                found.append(
                    NodeCapacity(
                        node=peer.node_text,
                        memory_mb=record.model_memory_mb,
                        stored=frozenset(record.models_stored),
                        loaded=frozenset(loaded),
                        pinned=frozenset(record.models_pinned),
                    )
                )
        return found

    # -- the mesh ----------------------------------------------------------------------------

    def handle(self, sender: bytes, message: WireMessage) -> bool:
        """Take a deployment or transfer frame (False: not one). A forged record raises
        Rejected before anything is applied (the node counts it)."""
        if isinstance(message, DeploymentSync):
            if self.deployments.merge(message.records):
                self.loop.nudge()
            return True
        return self.side.handle(sender, message)

    def _live_peers(self) -> list[bytes]:
        return [
            peer.node
            for peer in self.view.peers.values()
            if peer.node_text != self.me and self.view.state_of(peer.node) == "alive"
        ]

    def _publish(self, record: Any) -> None:
        for peer in self._live_peers():
            self._send(peer, DeploymentSync(records=[record]))

    async def _fetch(self, model: str, holders: tuple[str, ...]) -> None:
        record = self.deployments.current().get(model)
        digest = record.manifest_sha256 if record is not None else ""
        log.info("placement_fetching", model=model, holders=[h[:12] for h in holders])
        await self.side.fetch(model, [node_id_from_text(h) for h in holders], digest)

    async def run(self) -> None:
        """The placement loop, model transfer, anti-entropy and the auto steward."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self.loop.run())
            group.create_task(self.side.run())
            group.create_task(self._gossip())
            group.create_task(self._autoscale())

    async def _gossip(self) -> None:
        while True:
            await asyncio.sleep(self.gossip_s * random.uniform(0.8, 1.2))
            records = self.deployments.records()
            peers = self._live_peers()
            for peer in random.sample(peers, min(GOSSIP_FANOUT, len(peers))):
                for start in range(0, len(records), GOSSIP_BATCH):  # frames well below 4 MiB
                    self._send(peer, DeploymentSync(records=records[start : start + GOSSIP_BATCH]))

    def queue_waits(self) -> dict[str, float]:
        """The mesh-wide queue wait of every ``--auto`` model, from the freshest loads known
        (load is not gossiped: each step asks every host, and the next step reads the answers)."""
        waits = {}
        for model, deployment in self.deployments.current().items():
            if deployment.deployed and deployment.auto:
                hosts = self.view.hosts(MODEL_PREFIX + model)
                for peer, info in hosts:
                    self._send(peer.node, LoadQuery(id=os.urandom(16), service=info.name))
                waits[model] = queue_wait_ms(self.view.current_load(p, i) for p, i in hosts)
        return waits

    async def _autoscale(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                waits = self.queue_waits()
                if waits:
                    self.loop.autoscale(waits)
            except Exception as error:  # a bug here must not stop the node
                log.exception("placement_autoscale_failed", error=repr(error))

    # -- control commands ------------------------------------------------------------------

    async def deploy(
        self, model: str, replicas: int, *, auto: bool = False, max_replicas: int = 8
    ) -> dict[str, Any]:
        """Issue a new version of ``model``'s deployment; ConfigError/ModelError/NoCapacity
        with one readable line when it cannot be served."""
        if not re.fullmatch(MODEL_NAME, model):
            raise ConfigError(f"{model!r} is not a model name (letters, digits, . _ -)")
        if not 1 <= replicas <= MAX_REPLICAS:
            raise ConfigError(
                f"replicas must be 1..{MAX_REPLICAS} (got {replicas}); "
                "to remove a deployment use `llmnode models undeploy`"
            )
        nodes = self.capacities()
        footprint, digest = self.side.footprint(model)
        if not footprint:
            holders = [n for n in nodes if model in n.stored and n.node != self.me]
            if not holders:
                raise ModelError(
                    f"unknown model {model!r}: no node in the mesh has it in its store "
                    f"(pull it on one node: llmnode models pull {model})"
                )
            footprint, digest = await self.side.remote_footprint(
                model, node_id_from_text(holders[0].node)
            )
        most = max((n.memory_mb for n in nodes), default=0)
        if footprint > most:
            raise NoCapacity(
                f"no node has memory for {model!r}: it needs {footprint} MiB, "
                f"the most any node has for models is {most} MiB"
            )
        deployment = Deployment(
            model=model,
            replicas=1 if auto else replicas,
            auto=auto,
            max_replicas=max(1, max_replicas),
            footprint_mb=footprint,
            manifest_sha256=digest,
            issued_at=time.time(),
        )
        self._issue(deployment)
        return self.describe(model)

    async def undeploy(self, model: str) -> dict[str, Any]:
        current = self.deployments.current().get(model)
        if current is None or not current.deployed:
            raise ModelError(f"model {model!r} is not deployed")
        self._issue(Deployment(model=model, replicas=0, deployed=False, issued_at=time.time()))
        return self.describe(model)

    def _issue(self, deployment: Deployment) -> None:
        record = issue_and_keep(self.identity, self.deployments, deployment, time.time())
        self._publish(record)
        self.loop.nudge()
        log.info("deployment_issued", model=deployment.model, replicas=deployment.replicas)

    def describe(self, model: str) -> dict[str, Any]:
        """One deployment as ``models deployments`` shows it."""
        deployment = self.deployments.current()[model]
        names = {
            p.node_text: p.record.name if p.record else p.node_text[:8]
            for p in self.view.peers.values()
        }
        serving = sorted(
            names.get(n.node, n.node[:8]) for n in self.capacities() if model in n.loaded
        )
        assigned = self.loop.assignment.nodes_for(model)
        return {
            "model": model,
            "deployed": deployment.deployed,
            "replicas": deployment.replicas,
            "auto": deployment.auto,
            "footprint_mb": deployment.footprint_mb,
            "assigned": sorted(names.get(n, n[:8]) for n in assigned),
            "serving": serving,
            "unplaced": self.loop.assignment.unplaced.get(model, 0),
        }

    def report(self) -> list[dict[str, Any]]:
        return [self.describe(model) for model in self.deployments.current()]

    async def pull(self, model: str) -> dict[str, Any]:
        """``models pull NAME --from-mesh``: copy it from a peer that holds it."""
        if not re.fullmatch(MODEL_NAME, model):
            raise ConfigError(f"{model!r} is not a model name (letters, digits, . _ -)")
        if model in self.side.stored():
            return {"model": model, "already": True}
        holders = sorted(
            (n for n in self.capacities() if model in n.stored and n.node != self.me),
            key=lambda n: model in n.loaded,  # idle holders first
        )
        if not holders:
            raise ModelError(f"no peer has {model!r} in its store")
        await self.side.fetch(model, [node_id_from_text(n.node) for n in holders], "")
        self.loop.nudge()
        return {"model": model, "already": False}
