"""The node's one metrics registry (no I/O): every counter is named, labelled and read here.

Components count in plain :class:`collections.Counter` s and dicts — pure, cheap, and tested as
they are — and each node registers, once, a *family* per counter that reads them when the
registry is collected. Measurements that only make sense as distributions (latencies, token
counts) are prometheus-client histograms created here and observed where they happen.

Everything that shows a number reads this registry: ``llmnode status`` (through
:meth:`Metrics.read`) and the Prometheus text format (:meth:`Metrics.exposition`), so the two
cannot disagree. There is one registry per node, never the process-global one: tests run several
nodes in one process. Library chosen: ``prometheus-client`` (the reference Python client; its text
format is what every scraper reads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

PREFIX = "llmnode_"
#: Content type of :meth:`Metrics.exposition` (Prometheus text format 0.0.4).
CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Labels -> value, as a family's reader returns them: keyed by a tuple of label values (or, with
#: one label, the bare value); a family with no labels returns a number.
Samples = Mapping[Any, float] | float
Reader = Callable[[], Samples]


@dataclass(frozen=True, slots=True)
class _Family:
    name: str  # without the prefix and, for counters, without `_total`
    documentation: str
    kind: Literal["counter", "gauge"]
    labels: tuple[str, ...]
    read: Reader

    def samples(self) -> Iterator[tuple[tuple[str, ...], float]]:
        value = self.read()
        if isinstance(value, int | float):
            yield (), float(value)
            return
        for key, number in value.items():
            labels = key if isinstance(key, tuple) else (key,)
            yield tuple(str(part) for part in labels), float(number)

    def metric(self) -> Metric:
        family: CounterMetricFamily | GaugeMetricFamily
        maker = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = maker(PREFIX + self.name, self.documentation, labels=list(self.labels))
        for labels, value in self.samples():
            family.add_metric(list(labels), value)
        return family


class _Families(Collector):
    def __init__(self, families: list[_Family]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return [family.metric() for family in self._families]


class Metrics:
    """One node's registry: counter and gauge families read on collection, plus histograms."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._families: list[_Family] = []
        self._names: set[str] = set()
        self.registry.register(_Families(self._families))
        if process:  # RSS, open fds, CPU seconds: the client library's own collector
            ProcessCollector(namespace="llmnode", registry=self.registry)

    def counter(
        self, name: str, documentation: str, read: Reader, labels: Sequence[str] = ()
    ) -> None:
        """Register a monotonic count read from its owner (``name`` without ``_total``)."""
        self._add(_Family(name, documentation, "counter", tuple(labels), read))

    def gauge(
        self, name: str, documentation: str, read: Reader, labels: Sequence[str] = ()
    ) -> None:
        """Register a value that goes up and down, read from its owner."""
        self._add(_Family(name, documentation, "gauge", tuple(labels), read))

    def histogram(
        self, name: str, documentation: str, labels: Sequence[str], buckets: Sequence[float]
    ) -> Histogram:
        """A histogram observed where the measurement happens."""
        self._claim(name)
        return Histogram(
            PREFIX + name,
            documentation,
            labelnames=list(labels),
            buckets=list(buckets),
            registry=self.registry,
        )

    def read(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Every counter and gauge family, by name (no prefix): labels -> value."""
        return {family.name: dict(family.samples()) for family in self._families}

    def exposition(self) -> bytes:
        """The whole registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def _add(self, family: _Family) -> None:
        self._claim(family.name)
        self._families.append(family)

    def _claim(self, name: str) -> None:
        if name in self._names:
            raise ValueError(f"metric {name!r} is registered twice")
        self._names.add(name)
