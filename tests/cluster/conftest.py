"""Fixtures for the network-namespace cluster tests (does I/O: creates namespaces).

The harness modules (``netns``, ``compose``) sit next to this file; pytest runs with
``--import-mode=importlib``, which puts no test directory on ``sys.path``, so this conftest adds
this one directory once, before the test modules import them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

import netns  # noqa: E402  (needs the path above)


@pytest.fixture(scope="session")
def netns_available() -> None:
    """Skip (with the reason) where namespaces or nftables are not available."""
    reason = netns.missing_requirements()
    if reason is not None:
        pytest.skip(f"cluster harness unavailable: {reason}")


@pytest.fixture
def make_cluster(netns_available: None) -> Iterator[Callable[[Sequence[str] | int], netns.Cluster]]:
    """Open clusters (``make_cluster(["a", "b"])`` or ``make_cluster(5)``) that are torn down
    after the test whatever happens."""
    clusters: list[netns.Cluster] = []

    def make(names: Sequence[str] | int) -> netns.Cluster:
        cluster = netns.Cluster(names)
        clusters.append(cluster)
        cluster.open()
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
