"""The holdout: a CSV (header row first) or Parquet file of feature columns and a label column."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slipway.errors import InvalidInput
from slipway.runtimes.extras import import_extra


@dataclass(frozen=True)
class Holdout:
    """Feature columns (``columns``, raw text parsed per column) and labels."""

    columns: list[str]
    features: np.ndarray  # float64, NaN where a cell was empty or not a number
    labels: np.ndarray
    non_numeric: list[str]  # columns holding text that is not a number

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def read_holdout(path: Path, label: str, *, max_rows: int = 1_000_000) -> Holdout:
    """Read ``path``: CSV (header row first) or Parquet (``.parquet``/``.pq``, needs the
    ``pyarrow`` extra); ``label`` names the label column."""
    if path.suffix.lower() in (".parquet", ".pq"):
        header, cells = _read_parquet(path)
    else:
        header, cells = _read_csv(path)
    if len(cells) > max_rows:
        raise InvalidInput(f"{path} has {len(cells)} rows; the limit is {max_rows}")
    if label not in header:
        raise InvalidInput(
            f"{path} has no label column {label!r} (columns: {', '.join(header[:12])});"
            " name it in the policy's `label`"
        )
    at = header.index(label)
    unlabelled = [i + 1 for i, cell in enumerate(cells[:, at]) if not str(cell).strip()]
    if unlabelled:
        rows = "1 row has" if len(unlabelled) == 1 else f"{len(unlabelled)} rows have"
        raise InvalidInput(
            f"{path}: {rows} no label in column {label!r} (the first is data row"
            f" {unlabelled[0]}); fill the labels in or drop those rows"
        )
    columns = [c for i, c in enumerate(header) if i != at]
    features = np.empty((len(cells), len(columns)), dtype=np.float64)
    non_numeric = []
    for j, column in enumerate(i for i in range(len(header)) if i != at):
        parsed, ok = _floats(cells[:, column])
        features[:, j] = parsed
        if not ok:
            non_numeric.append(header[column])
    labels_raw = cells[:, at]
    parsed, ok = _floats(labels_raw)
    labels = parsed if ok else labels_raw.astype(str)
    if ok and np.all(np.isfinite(parsed)) and np.all(parsed == np.round(parsed)):
        labels = parsed.astype(np.int64)
    return Holdout(columns, features, labels, non_numeric)


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        # utf-8-sig: a byte order mark (as spreadsheet programs write) is not part of the header.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except OSError as exc:
        raise InvalidInput(f"cannot read the holdout {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not a UTF-8 CSV file") from None
    header, body = (rows[0], [r for r in rows[1:] if r]) if rows else ([], [])
    if not header or not body:
        raise InvalidInput(f"{path} needs a header row and at least one data row")
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise InvalidInput(f"{path}: line {bad[0]} has a different number of cells than the header")
    return header, np.array(body, dtype=object)


def _read_parquet(path: Path) -> tuple[list[str], np.ndarray]:
    """A Parquet file as the CSV reader's shape: header and an object array of cells (numbers
    stay numbers, nulls become empty cells)."""
    parquet = import_extra("parquet")
    try:
        table = parquet.read_table(path)
    except OSError as exc:  # pyarrow reports a missing or non-Parquet file as OSError/ArrowInvalid
        raise InvalidInput(f"cannot read the Parquet holdout {path}: {exc}") from None
    except Exception as exc:
        raise InvalidInput(f"{path} is not a readable Parquet file: {exc}") from None
    if table.num_rows < 1:
        raise InvalidInput(f"{path} has no rows")
    cells = np.empty((table.num_rows, table.num_columns), dtype=object)
    for j, column in enumerate(table.columns):
        values = column.to_pylist()
        cells[:, j] = ["" if v is None else v for v in values]
    return [str(name) for name in table.column_names], cells


def _floats(cells: np.ndarray) -> tuple[np.ndarray, bool]:
    """Cells as floats (empty → NaN) and whether every non-empty cell was a number."""
    out = np.empty(len(cells), dtype=np.float64)
    ok = True
    for i, cell in enumerate(cells):
        text = str(cell).strip()
        if not text:
            out[i] = np.nan
            continue
        try:
            out[i] = float(text)
        except ValueError:
            out[i] = np.nan
            ok = False
    return out, ok
