"""Per-replica evidence for running rollouts, collected off the request path.

:meth:`EvidenceCollector.observe` runs once per request of a deployment with a rollout: a few
integer updates (a reservoir draw now and then), no locks, no I/O (one event loop owns it).
A background task calls :meth:`drain` every few seconds and writes the windows to the
database, where the controller sums the windows of every replica.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import msgspec
import numpy as np

from slipway.monitoring.windows import feature_columns
from slipway.registry.names import storable_request_id
from slipway.registry.records import NumericProfile, Profile
from slipway.rollout.analysis import LATENCY_EDGES_S, ArmStats, latency_bucket
from slipway.rollout.shadow import ShadowStats

Outputs = dict[str, np.ndarray]


def scores_of(outputs: Outputs) -> list[float]:
    """One number per row for distribution checks: the positive-class probability of a binary
    classifier, the top probability of a multi-class one, else the first output's value."""
    floats = [a for a in outputs.values() if a.dtype.kind == "f"]
    array = floats[0] if floats else next(iter(outputs.values()))
    if array.dtype.kind not in "fiub" or array.ndim == 0:
        return []
    if array.ndim == 1:
        values = array
    elif array.shape[1] == 2:
        values = array[:, 1]
    elif array.ndim == 2 and array.shape[1] > 2 and floats:
        values = array.max(axis=1)
    else:
        values = array.reshape(array.shape[0], -1)[:, 0]
    return [float(v) for v in values]


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    latency: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_EDGES_S) + 1))
    samples: list[tuple[Outputs | None, Outputs]] = field(default_factory=list)  # (in, out)
    seen: int = 0  # requests offered to the reservoir
    pick: int = 0  # once it is full: the next of them to replace a sample
    weight: float = 1.0  # Algorithm L's running weight
    profile: Profile | None = None  # the version's reference profile, to name input features


class EvidenceCollector:
    """Windows per (rollout, version), served request ids, and shadow comparisons."""

    def __init__(
        self,
        *,
        max_samples: int = 200,
        max_request_ids: int = 20_000,
        rng: random.Random | None = None,
    ) -> None:
        self.max_samples = max_samples
        self.max_request_ids = max_request_ids
        self.rng = rng or random.Random()
        self._windows: dict[tuple[int, int], _Window] = {}
        self._served: list[tuple[str, int, int]] = []
        self.shadow: dict[tuple[int, int], ShadowStats] = {}
        self.dropped_request_ids = 0

    def observe(
        self,
        rollout_id: int,
        version: int,
        error: bool,
        latency_s: float,
        outputs: Outputs | None,
        request_id: str | None,
        inputs: Outputs | None = None,
        profile: Profile | None = None,
    ) -> None:
        """Count one request served by ``version`` under rollout ``rollout_id``; ``profile``
        names the columns of ``inputs`` for the input-drift check."""
        key = (rollout_id, version)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(profile=profile)
        window.requests += 1
        if error:
            window.errors += 1
        window.latency[latency_bucket(latency_s)] += 1
        if outputs is not None:
            # Reservoir sampling: every request has the same chance to be in the sample.
            window.seen += 1
            samples = window.samples
            if len(samples) < self.max_samples:
                samples.append((inputs, outputs))
                if len(samples) == self.max_samples:
                    self._schedule(window)
            elif window.seen == window.pick:
                samples[self.rng.randrange(self.max_samples)] = (inputs, outputs)
                self._schedule(window)
        if request_id is not None:
            if len(self._served) < self.max_request_ids:
                self._served.append((storable_request_id(request_id), rollout_id, version))
            else:
                self.dropped_request_ids += 1

    def _schedule(self, window: _Window) -> None:
        """Draw which request replaces a sample next (Li's Algorithm L): the same uniform
        sample as a draw per request, at a draw per replacement, which grow ever rarer."""
        k = self.max_samples
        # 1 - random() is in (0, 1]: its logarithm is defined
        window.weight *= math.exp(math.log(1.0 - self.rng.random()) / k)
        gap = math.log(1.0 - self.rng.random()) / math.log(max(1.0 - window.weight, 1e-300))
        window.pick = window.seen + math.floor(gap) + 1

    def shadow_stats(self, rollout_id: int, version: int) -> ShadowStats:
        """The shadow comparison being collected for ``version`` of rollout ``rollout_id``."""
        key = (rollout_id, version)
        stats = self.shadow.get(key)
        if stats is None:
            stats = self.shadow[key] = ShadowStats()
        return stats

    def drain(self) -> tuple[list[tuple[int, int, dict[str, Any]]], list[tuple[str, int, int]]]:
        """Take everything collected since the last drain: windows ``(rollout_id, version,
        data)`` and served request ids ``(request_id, rollout_id, version)``."""
        windows, self._windows = self._windows, {}
        served, self._served = self._served, []
        shadows, self.shadow = self.shadow, {}
        out: list[tuple[int, int, dict[str, Any]]] = []
        for (rollout_id, version), window in windows.items():
            scores: list[float] = []
            for _, outputs in window.samples:
                scores.extend(scores_of(outputs))
            arm = ArmStats(
                requests=window.requests,
                errors=window.errors,
                latency=window.latency,
                scores=scores[: self.max_samples * 4],
                features=self._features(window),
            )
            out.append((rollout_id, version, {"arm": msgspec.to_builtins(arm)}))
        for (rollout_id, version), stats in shadows.items():
            out.append((rollout_id, version, {"shadow": msgspec.to_builtins(stats)}))
        return out, served

    def _features(self, window: _Window) -> dict[str, list[float]]:
        """The sampled requests' numeric input features, named by the reference profile."""
        profile = window.profile
        if profile is None or not profile.features:
            return {}
        out: dict[str, list[float]] = {}
        limit = self.max_samples  # values per feature and window: the windows are stored
        for inputs, _ in window.samples:
            if not inputs:
                continue
            columns = feature_columns(profile, inputs)
            if columns is None:
                continue
            for feature, column in zip(profile.features, columns, strict=True):
                if isinstance(feature, NumericProfile) and column.dtype.kind in "iuf":
                    values = out.setdefault(feature.name, [])
                    if len(values) < limit:
                        values.extend(float(v) for v in column[: limit - len(values)])
        return out
