"""Live windows of inputs and predictions in bounded memory: fixed-bin histograms per feature.

A window never keeps rows. Each numeric feature is a count vector on its reference profile's
bins (``[under, bins..., over]``, see ``drift.py``) plus missing count and the sums beyond the
reference range; each categorical feature a count per category, capped at the reference's
categories plus ``max_unseen`` new ones (the rest summed under ``__unseen__``). Memory is
``slots x features x (bins + 3)`` numbers whatever the traffic.

Two kinds, both a ring of ``slots`` sub-windows:

* ``time``: the last ``size`` seconds, in slots of ``size / slots`` seconds; a slot older than
  the window is cleared when its turn comes again. Resolution: one slot.
* ``rows``: about the last ``size`` rows, in slots of ``ceil(size / slots)`` rows; the window
  holds between ``size - size / slots`` and ``size`` rows once full.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from slipway.monitoring import drift
from slipway.registry.records import FeatureProfile, NumericProfile, Profile

WindowKind = Literal["time", "rows"]
_BLOCK_ROWS = 256  # the most rows binned in one pass over all numeric features


class _Sketch:
    """Counts for an ordered list of features (one slot of a window)."""

    def __init__(self, profiles: Sequence[FeatureProfile], max_unseen: int) -> None:
        self.profiles = list(profiles)
        self.max_unseen = max_unseen
        self.edges = [
            np.asarray(p.edges, dtype=np.float64) if isinstance(p, NumericProfile) else None
            for p in self.profiles
        ]
        self.counts = [
            np.zeros(len(e) + 1, dtype=np.int64) if e is not None else None for e in self.edges
        ]
        self.missing = [0] * len(self.profiles)
        self.under = [0.0] * len(self.profiles)
        self.over = [0.0] * len(self.profiles)
        self.categories: list[dict[str, int]] = [{} for _ in self.profiles]
        self.unseen_keys = [0] * len(self.profiles)
        self.rows = 0
        # The numeric features are binned together, in one pass over a rows x features block
        # (see _add_numeric): one at a time, ten numpy calls each, a fold of 20 captured rows
        # of 30 features cost ~0.3 ms of the event loop. Their count vectors are views into
        # one matrix, a row per feature, padded to the widest (edges padded with +inf).
        self._numeric = [i for i, e in enumerate(self.edges) if e is not None and len(e)]
        self._others = sorted(set(range(len(self.profiles))) - set(self._numeric))
        numeric_edges = [self.edges[i] for i in self._numeric]
        widest = max((len(e) for e in numeric_edges if e is not None), default=0)
        # Stored one edge position per row (edges x features): binning compares the block with
        # each row in turn, `widest` comparisons of rows x features values. One comparison of
        # a rows x features x edges cube, then a sum over its short last axis, cost twice that.
        self._edge_rows = np.full((widest, len(self._numeric)), np.inf)
        self._sizes = np.zeros(len(self._numeric), dtype=np.int64)
        self._last = np.zeros(len(self._numeric))
        self._matrix = np.zeros((len(self._numeric), widest + 1), dtype=np.int64)
        for row, (i, e) in enumerate(zip(self._numeric, numeric_edges, strict=True)):
            assert e is not None
            self._edge_rows[: len(e), row] = e
            self._sizes[row], self._last[row] = len(e), e[-1]
            self.counts[i] = self._matrix[row, : len(e) + 1]

    def clear(self) -> None:
        for counts in self.counts:
            if counts is not None:
                counts[:] = 0
        self.missing = [0] * len(self.profiles)
        self.under = [0.0] * len(self.profiles)
        self.over = [0.0] * len(self.profiles)
        self.categories = [{} for _ in self.profiles]
        self.unseen_keys = [0] * len(self.profiles)
        self.rows = 0

    def add(self, columns: Sequence[np.ndarray | None], rows: int) -> None:
        """Fold one batch: ``columns[i]`` is feature i's values (None: not captured)."""
        self.rows += rows
        rest: Sequence[int] = range(len(columns))
        # Many rows: each feature on its own is as fast, without a rows x features x edges mask
        block = self._numeric_block(columns) if self._numeric and 0 < rows <= _BLOCK_ROWS else None
        if block is not None:
            self._add_numeric(block)
            rest = self._others
        for i in rest:
            values = columns[i]
            if values is None:
                continue
            edges, counts = self.edges[i], self.counts[i]
            if edges is not None and counts is not None:
                if len(edges) == 0 or values.dtype.kind not in "iufb":
                    continue
                binned = drift.numeric_counts(edges, values)
                counts += binned.counts
                self.missing[i] += binned.missing
                self.under[i] += binned.under_sum
                self.over[i] += binned.over_sum
            else:
                self._add_categories(i, values)

    def _numeric_block(self, columns: Sequence[np.ndarray | None]) -> np.ndarray | None:
        """The numeric features' columns as one float64 block (rows x features); None when
        one is missing, not numeric or not 1-D (then each is binned on its own)."""
        if len(columns) != len(self.profiles):
            return None
        picked: list[np.ndarray] = []
        for i in self._numeric:
            column = columns[i]
            if column is None or column.ndim != 1 or column.dtype.kind not in "iufb":
                return None
            if picked and len(column) != len(picked[0]):
                return None
            picked.append(column)
        return np.column_stack(picked).astype(np.float64, copy=False)

    def _add_numeric(self, block: np.ndarray) -> None:
        """``drift.numeric_counts`` for every numeric feature at once, into the count matrix."""
        finite = np.isfinite(block)
        # searchsorted(side="right"): how many edges are <= the value (padding never is)
        slots = np.zeros(block.shape, dtype=np.intp)
        for edge in self._edge_rows:
            slots += block >= edge
        over = slots == self._sizes
        closing = over & (block == self._last)  # numpy.histogram closes the last bin
        if closing.any():
            slots[closing] -= 1
            over &= ~closing
        width = self._matrix.shape[1]
        flat = (slots + np.arange(len(self._numeric)) * width)[finite]
        self._matrix += np.bincount(flat, minlength=self._matrix.size).reshape(self._matrix.shape)
        if not finite.all():
            for row, count in enumerate((~finite).sum(axis=0).tolist()):
                self.missing[self._numeric[row]] += count
        for mask, sums in ((slots == 0, self.under), (over, self.over)):
            mask &= finite
            if mask.any():
                for row, total in enumerate(np.where(mask, block, 0.0).sum(axis=0).tolist()):
                    sums[self._numeric[row]] += total

    def _add_categories(self, i: int, values: np.ndarray) -> None:
        if values.dtype.kind in "US":
            keys, counts = np.unique(values, return_counts=True)
            found = {
                (k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)): int(c)
                for k, c in zip(keys.tolist(), counts.tolist(), strict=True)
            }
        else:
            found = drift.category_counts(values.tolist())
        profile = self.profiles[i]
        known = profile.frequencies if not isinstance(profile, NumericProfile) else {}
        table = self.categories[i]
        for key, count in found.items():
            if key in table or key in known:
                table[key] = table.get(key, 0) + count
            elif self.unseen_keys[i] < self.max_unseen:
                self.unseen_keys[i] += 1
                table[key] = count
            else:
                table[drift.UNSEEN] = table.get(drift.UNSEEN, 0) + count

    def merge_into(self, total: _Sketch) -> None:
        total.rows += self.rows
        for i in range(len(self.profiles)):
            mine, theirs = self.counts[i], total.counts[i]
            if mine is not None and theirs is not None:
                theirs += mine
            total.missing[i] += self.missing[i]
            total.under[i] += self.under[i]
            total.over[i] += self.over[i]
            for key, count in self.categories[i].items():
                total.categories[i][key] = total.categories[i].get(key, 0) + count

    def windows(self) -> dict[str, drift.Window]:
        out: dict[str, drift.Window] = {}
        for i, profile in enumerate(self.profiles):
            counts = self.counts[i]
            if counts is not None:
                out[profile.name] = drift.NumericCounts(
                    counts=counts.copy(),
                    missing=self.missing[i],
                    under_sum=self.under[i],
                    over_sum=self.over[i],
                )
            else:
                out[profile.name] = dict(self.categories[i])
        return out


class VersionWindow:
    """The live window of one deployed version: its inputs and its predictions."""

    def __init__(
        self,
        profile: Profile,
        *,
        kind: WindowKind = "time",
        size: float = 3600.0,
        slots: int = 12,
        max_unseen: int = 100,
    ) -> None:
        if kind not in ("time", "rows"):
            raise ValueError(f"window kind must be 'time' or 'rows', got {kind!r}")
        if size <= 0 or slots < 1:
            raise ValueError("window size and slots must be positive")
        self.profile = profile
        self.kind = kind
        self.size = size
        self.slots = slots
        self._inputs = [_Sketch(profile.features, max_unseen) for _ in range(slots)]
        self._outputs = [_Sketch(profile.predictions, max_unseen) for _ in range(slots)]
        self._epochs = [-1] * slots
        self._current = 0
        self._capacity = max(1, math.ceil(size / slots)) if kind == "rows" else 0
        self._output_names = [p.name for p in profile.predictions]

    def _slot_for_time(self, now: float) -> int:
        epoch = int(now // (self.size / self.slots))
        index = epoch % self.slots
        if self._epochs[index] != epoch:
            self._inputs[index].clear()
            self._outputs[index].clear()
            self._epochs[index] = epoch
        return index

    def fold(
        self,
        features: Sequence[np.ndarray | None],
        predictions: dict[str, np.ndarray],
        rows: int,
        now: float,
    ) -> None:
        """Add a batch: feature columns in profile order, prediction columns by name."""
        outputs = [predictions.get(name) for name in self._output_names]
        if self.kind == "time":
            index = self._slot_for_time(now)
            self._inputs[index].add(features, rows)
            self._outputs[index].add(outputs, rows)
            return
        start = 0
        while start < rows:
            index = self._current
            room = self._capacity - self._inputs[index].rows
            if room <= 0:
                self._current = (index + 1) % self.slots
                self._inputs[self._current].clear()
                self._outputs[self._current].clear()
                continue
            end = min(rows, start + room)
            self._inputs[index].add(_slice(features, start, end), end - start)
            self._outputs[index].add(_slice(outputs, start, end), end - start)
            start = end

    def _live(self, now: float) -> list[int]:
        if self.kind == "rows":
            return list(range(self.slots))
        epoch = int(now // (self.size / self.slots))
        return [i for i, e in enumerate(self._epochs) if e > epoch - self.slots]

    def snapshot(self, now: float) -> tuple[int, dict[str, drift.Window], dict[str, drift.Window]]:
        """(rows, feature windows, prediction windows) over the live slots."""
        inputs = _Sketch(self.profile.features, 0)
        outputs = _Sketch(self.profile.predictions, 0)
        for index in self._live(now):
            self._inputs[index].merge_into(inputs)
            self._outputs[index].merge_into(outputs)
        return inputs.rows, inputs.windows(), outputs.windows()


def _slice(columns: Sequence[np.ndarray | None], start: int, end: int) -> list[np.ndarray | None]:
    return [None if c is None else c[start:end] for c in columns]


def feature_columns(profile: Profile, inputs: dict[str, np.ndarray]) -> list[np.ndarray] | None:
    """Split request inputs into the profile's feature columns, as registration built them.

    Inputs are flattened in order (a 1-D input is one column, a 2-D input one per column) and
    matched to the profile's features by position. None when the shapes do not line up.
    """
    columns: list[np.ndarray] = []
    for array in inputs.values():
        if array.ndim == 1:
            columns.append(array)
        elif array.ndim == 2:
            if array.dtype.kind in "iuf":  # one conversion; columns become contiguous
                array = np.asarray(array, dtype=np.float64, order="F")
            columns.extend(array[:, i] for i in range(array.shape[1]))
        else:
            return None
    if len(columns) != len(profile.features):
        return None
    return columns


def prediction_columns(outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Output columns named as registration named them (``name`` or ``name[i]``)."""
    out: dict[str, np.ndarray] = {}
    for name, value in outputs.items():
        if value.ndim == 1:
            out[name] = value
        elif value.ndim == 2 and value.shape[1] <= 32:
            for i in range(value.shape[1]):
                out[f"{name}[{i}]"] = value[:, i]
    return out
