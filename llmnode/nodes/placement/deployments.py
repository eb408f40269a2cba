"""Deployment records: issue (sign), verify, decode and merge, newest version wins (no I/O).

Signed like node state records (:mod:`llmnode.nodes.mesh.records`): the issuing node's Ed25519
signature over (domain, origin, version, payload), through :mod:`llmnode.bus.crypto`, so a relay
cannot forge or alter a deployment. The domain differs from the state record's, so a signature
on one can never pass for the other.

Ordering: for one model the record with the highest ``version`` wins; equal versions (two nodes
issuing at once) are ordered by origin id, so every node keeps the same one. New versions come
from :func:`next_version`: above the current one and at least the wall clock in milliseconds,
so a later command on another node wins.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import msgspec

from llmnode.bus.identity import Identity
from llmnode.errors import Rejected
from llmnode.nodes.mesh.records import sign_by_origin, verify_by_origin
from llmnode.nodes.placement.assign import Demand
from llmnode.schemas.placement import Deployment, SignedDeployment

_DOMAIN = b"llmnode/deployment-record/v1"
_decoder = msgspec.msgpack.Decoder(Deployment)
_encoder = msgspec.msgpack.Encoder()


def next_version(current: SignedDeployment | None, now: float) -> int:
    """A version above ``current``'s, and at least ``now`` in milliseconds."""
    return max(0 if current is None else current.version + 1, int(now * 1000))


def issue(identity: Identity, version: int, deployment: Deployment) -> SignedDeployment:
    payload = _encoder.encode(deployment)
    signature = sign_by_origin(identity, _DOMAIN, version, payload)
    return SignedDeployment(
        origin=identity.node_id, version=version, payload=payload, signature=signature
    )


def verify(record: SignedDeployment) -> bool:
    """True when ``record`` was signed by its origin, unaltered."""
    return verify_by_origin(
        _DOMAIN, record.origin, record.version, record.payload, record.signature
    )


def decode(record: SignedDeployment) -> Deployment:
    try:
        return _decoder.decode(record.payload)
    except msgspec.DecodeError as error:  # ValidationError derives from DecodeError
        raise Rejected("bad_deployment", str(error)[:200]) from error


def _newer(record: SignedDeployment, than: SignedDeployment | None) -> bool:
    return than is None or (record.version, record.origin) > (than.version, than.origin)


class Deployments:
    """The deployment records this node knows, one per model (the newest)."""

    def __init__(self) -> None:
        self._records: dict[str, tuple[SignedDeployment, Deployment]] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, model: str) -> SignedDeployment | None:
        found = self._records.get(model)
        return None if found is None else found[0]

    def records(self) -> list[SignedDeployment]:
        return [record for record, _ in self._records.values()]

    def current(self) -> dict[str, Deployment]:
        """Every model's newest deployment, undeployed ones included."""
        return {model: deployment for model, (_, deployment) in sorted(self._records.items())}

    def merge(self, incoming: Iterable[SignedDeployment]) -> list[Deployment]:
        """Take the records newer than what we have; the deployments that changed.

        A record whose signature does not verify, or whose payload does not decode, raises
        :class:`Rejected` (``bad_signature`` / ``bad_deployment``) before anything is applied.
        """
        accepted: list[tuple[SignedDeployment, Deployment]] = []
        for record in incoming:
            if not verify(record):
                raise Rejected("bad_signature", "deployment record")
            accepted.append((record, decode(record)))
        changed: dict[str, Deployment] = {}
        for record, deployment in accepted:
            known = self._records.get(deployment.model)
            if _newer(record, None if known is None else known[0]):
                self._records[deployment.model] = (record, deployment)
                changed[deployment.model] = deployment
        return list(changed.values())


def demands(
    deployments: Mapping[str, Deployment], footprints: Mapping[str, int] | None = None
) -> list[Demand]:
    """What ``place`` needs from the deployed models. ``footprints`` (from manifests) fills in
    a footprint a record does not carry; a model whose footprint is still unknown is left out,
    since placing it blind could overfill a node (``llmnode models deploy`` writes it)."""
    found: list[Demand] = []
    for model, deployment in deployments.items():
        footprint = deployment.footprint_mb or (footprints or {}).get(model, 0)
        if not deployment.deployed or footprint <= 0:
            continue
        replicas = deployment.replicas
        if deployment.auto:
            replicas = min(max(replicas, deployment.min_replicas, 1), deployment.max_replicas)
        found.append(Demand(model=model, replicas=replicas, footprint_mb=footprint))
    return found
