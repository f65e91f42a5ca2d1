"""The cheap histograms export exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

from slipway.monitoring.buckets import BucketFamily, CountFamily, InFlightFamily
from slipway.monitoring.metrics import LATENCY_BUCKETS


def test_bucket_family_renders_like_a_client_histogram() -> None:
    values = np.random.default_rng(0).exponential(0.01, 500).tolist() + [0.001, 10.0, 99.0]
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = BucketFamily("x_seconds", "doc", ["model"], LATENCY_BUCKETS)
    ours.register(family)
    reference = Histogram("x_seconds", "doc", ["model"], buckets=LATENCY_BUCKETS, registry=theirs)
    for v in values:
        family.child("m").observe(v)
        reference.labels("m").observe(v)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    got, expected = lines(ours), lines(theirs)
    assert [line.rsplit(" ", 1)[0] for line in got] == [line.rsplit(" ", 1)[0] for line in expected]
    for a, b in zip(got, expected, strict=True):
        if not a.startswith("#"):
            assert float(a.rsplit(" ", 1)[1]) == pytest.approx(float(b.rsplit(" ", 1)[1]))


def test_count_family_renders_like_a_client_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = CountFamily("x_requests", "doc", ["deployment", "outcome"])
    ours.register(family)
    reference = Counter("x_requests", "doc", ["deployment", "outcome"], registry=theirs)
    for labels, times in ((("a", "ok"), 7), (("a", "server_error"), 2), (("b", "ok"), 1)):
        for _ in range(times):
            family.child(*labels).inc()
            reference.labels(*labels).inc()
    family.child("b", "ok").inc(2.5)
    reference.labels("b", "ok").inc(2.5)

    def lines(registry: CollectorRegistry) -> list[str]:
        text = generate_latest(registry).decode()
        return [line for line in text.splitlines() if "_created" not in line]

    assert lines(ours) == lines(theirs)
    assert 'x_requests_total{deployment="a",outcome="ok"} 7.0' in lines(ours)


def test_in_flight_counts_requests_inside_the_block() -> None:
    family = InFlightFamily("f", "doc", ["deployment"])
    child = family.child("d")
    with child.track_inprogress(), family.child("d").track_inprogress():
        assert child.value == 2
    assert child.value == 0
    (metric,) = family.collect()
    assert metric.samples[0].value == 0
