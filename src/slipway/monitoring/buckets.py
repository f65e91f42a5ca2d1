"""Histograms and counters that cost a fraction of a microsecond to update, exported at scrape
time.

``prometheus_client``'s ``Histogram.observe`` takes locks and walks the buckets in Python
(microseconds; ``Counter.inc`` takes a lock too); every request is counted and timed and the
batch worker observes once per batch and once per request, all on the event loop, so these
plain numbers (one bisect, two additions, no lock: one event loop writes them) keep that cost
off the serving path. A collector turns them into ordinary Prometheus
histograms when ``/metrics`` is read. They are per process: in multiprocess mode each worker's
page shows its own.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector


class Buckets:
    """One labelled histogram's counts: ``counts[i]`` observations ``<= bounds[i]`` and above
    the previous bound; the last slot is +Inf."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = list(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


_Child = TypeVar("_Child")


class _HasValue(Protocol):
    value: float


_Valued = TypeVar("_Valued", bound=_HasValue)


class _Family(Collector, Generic[_Child]):
    """A metric's children keyed by label values, made by ``make`` on first use."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], make: Callable[[], _Child]
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = list(labels)
        self.children: dict[tuple[str, ...], _Child] = {}
        self._make = make

    def child(self, *values: str) -> _Child:
        found = self.children.get(values)
        if found is None:
            found = self.children[values] = self._make()
        return found


class BucketFamily(_Family[Buckets]):
    """A histogram metric whose children are :class:`Buckets`, keyed by label values."""

    def __init__(
        self, name: str, documentation: str, labels: Sequence[str], bounds: Sequence[float]
    ) -> None:
        self.bounds = list(bounds)
        super().__init__(name, documentation, labels, lambda: Buckets(self.bounds))

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
        for values, child in list(self.children.items()):
            running = 0
            cumulative = []
            for bound, count in zip([*self.bounds, float("inf")], child.counts, strict=True):
                running += count
                cumulative.append((_le(bound), running))
            family.add_metric(list(values), cumulative, child.total)
        yield family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class InFlight:
    """A count of requests in progress; ``with counter.track_inprogress(): ...`` (the same
    spelling as a prometheus_client gauge, at a fraction of its cost)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def track_inprogress(self) -> InFlight:
        return self

    def __enter__(self) -> None:
        self.value += 1

    def __exit__(self, *exc: object) -> None:
        self.value -= 1


class _ValueFamily(_Family[_Valued]):
    """A family whose children each hold one ``value``, exported as ``exported`` (a gauge or
    a counter family of the client)."""

    exported: type[GaugeMetricFamily] | type[CounterMetricFamily]

    def describe(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield self.exported(self.name, self.documentation, labels=self.labels)

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        family = self.exported(self.name, self.documentation, labels=self.labels)
        for values, child in list(self.children.items()):
            family.add_metric(list(values), child.value)
        yield family


class InFlightFamily(_ValueFamily[InFlight]):
    """A gauge whose children are :class:`InFlight` counters, keyed by label values."""

    exported = GaugeMetricFamily

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels, InFlight)


class Count:
    """A counter's value; ``inc()`` as on a prometheus_client counter child."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class CountFamily(_ValueFamily[Count]):
    """A counter metric (``<name>_total``) whose children are :class:`Count`, keyed by label
    values."""

    exported = CounterMetricFamily

    def __init__(self, name: str, documentation: str, labels: Sequence[str]) -> None:
        super().__init__(name, documentation, labels, Count)
