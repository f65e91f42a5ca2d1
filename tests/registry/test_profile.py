"""Reference profiles: values against numpy on known data, and the msgspec round trip."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from slipway.errors import InvalidInput
from slipway.registry.profile import MAX_CATEGORIES, OTHER, build_profile, profile_column
from slipway.registry.records import CategoricalProfile, NumericProfile, Profile

LEVELS = np.linspace(0, 1, 11)


def test_numeric_column_matches_numpy() -> None:
    values = np.random.default_rng(0).normal(5.0, 2.0, size=1000)

    column = profile_column("x", values)

    assert isinstance(column, NumericProfile)
    assert column.count == 1000
    assert column.mean == pytest.approx(values.mean())
    assert column.std == pytest.approx(values.std())
    assert (column.min, column.max) == (values.min(), values.max())
    np.testing.assert_allclose(column.quantiles, np.quantile(values, LEVELS))
    assert column.edges == column.quantiles  # bins=10: the histogram edges are the deciles
    np.testing.assert_array_equal(column.counts, np.histogram(values, bins=column.edges)[0])
    assert sum(column.counts) == 1000
    assert all(95 <= c <= 105 for c in column.counts)  # quantile bins hold equal shares


def test_bins_sets_the_histogram_resolution_not_the_quantiles() -> None:
    values = np.arange(1000, dtype=np.float64)

    column = profile_column("x", values, bins=4)

    assert column.edges == [0.0, 249.75, 499.5, 749.25, 999.0]
    assert column.counts == [250, 250, 250, 250]
    assert len(column.quantiles) == 11


def test_few_distinct_values_get_one_bin_each() -> None:
    flags = np.array([0] * 70 + [1] * 30)
    codes = np.array([1] * 5 + [2] * 90 + [7] * 5, dtype=np.int32)

    flag = profile_column("flag", flags)
    code = profile_column("code", codes)

    assert (flag.edges, flag.counts) == ([0.0, 1.0, 1.0], [70, 30])
    assert (code.edges, code.counts) == ([1.0, 2.0, 7.0, 7.0], [5, 90, 5])


def test_constant_column_has_one_zero_width_bin() -> None:
    column = profile_column("c", np.full(10, 3.5))
    assert (column.edges, column.counts, column.std) == ([3.5, 3.5], [10], 0.0)


def test_missing_values_are_excluded_and_counted_by_difference() -> None:
    values = np.array([1.0, np.nan, 2.0, np.inf, 3.0, -np.inf, np.nan, 4.0])

    profile = build_profile(values.reshape(-1, 1), feature_names=["x"])

    column = profile.features[0]
    assert profile.rows == 8
    assert column.count == 4  # so 8 - 4 = 4 values are missing
    assert (column.mean, column.min, column.max) == (2.5, 1.0, 4.0)
    np.testing.assert_allclose(column.quantiles, np.quantile([1.0, 2.0, 3.0, 4.0], LEVELS))


def test_all_missing_column_has_no_bins() -> None:
    column = profile_column("x", np.full(5, np.nan))
    assert column == NumericProfile(
        name="x", count=0, mean=0.0, std=0.0, min=0.0, max=0.0, quantiles=[], edges=[], counts=[]
    )


def test_categorical_columns() -> None:
    colors = np.array(["red", "blue", "red", "green", "red", "blue"])
    flags = np.array([True, False, True])
    mixed = np.array(["a", None, b"b", float("nan"), "a"], dtype=object)

    assert profile_column("color", colors) == CategoricalProfile(
        name="color", count=6, frequencies={"red": 3, "blue": 2, "green": 1}
    )
    assert profile_column("flag", flags) == CategoricalProfile(
        name="flag", count=3, frequencies={"True": 2, "False": 1}
    )
    assert profile_column("mixed", mixed) == CategoricalProfile(
        name="mixed", count=3, frequencies={"a": 2, "b": 1}
    )


def test_categories_beyond_the_cap_are_summed_as_other() -> None:
    # Category i appears i + 1 times, so the most frequent MAX_CATEGORIES are the highest ids.
    values = np.array([f"c{i:03d}" for i in range(150) for _ in range(i + 1)])

    column = profile_column("id", values)

    assert len(column.frequencies) == MAX_CATEGORIES + 1
    assert column.frequencies[OTHER] == sum(i + 1 for i in range(50))
    assert column.frequencies["c149"] == 150 and "c049" not in column.frequencies
    assert sum(column.frequencies.values()) == column.count == len(values)


def test_array_features_are_named_and_predictions_profiled() -> None:
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    labels = np.array([0, 1] * 5, dtype=np.int64)

    named = build_profile(x, feature_names=["a", "b"], predictions={"label": labels})
    default = build_profile(x)

    assert [f.name for f in named.features] == ["a", "b"]
    assert [f.name for f in default.features] == ["x0", "x1"]
    assert named.predictions[0].name == "label"
    assert named.predictions[0].counts == [5, 5]


def test_dict_features_expand_2d_values() -> None:
    profile = build_profile(
        {"input": np.zeros((4, 2)), "city": np.array(["a", "b", "a", "a"])},
        predictions={"probabilities": np.full((4, 2), 0.5)},
    )

    assert profile.rows == 4
    assert [f.name for f in profile.features] == ["input[0]", "input[1]", "city"]
    assert [p.name for p in profile.predictions] == ["probabilities[0]", "probabilities[1]"]

    renamed = build_profile({"input": np.zeros((4, 2))}, feature_names=["age", "income"])
    assert [f.name for f in renamed.features] == ["age", "income"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda: build_profile(np.zeros((3, 2)), feature_names=["a"]),
            "1 feature names given for 2",
            id="names",
        ),
        pytest.param(
            lambda: build_profile({"a": np.zeros(3), "b": np.zeros(4)}),
            "same length",
            id="lengths",
        ),
        pytest.param(
            lambda: build_profile(np.zeros((3, 1)), predictions={"y": np.zeros(2)}),
            "one value per feature row",
            id="predictions",
        ),
        pytest.param(
            lambda: build_profile(np.zeros((3, 1), np.complex64)), "cannot be profiled", id="dtype"
        ),
        pytest.param(lambda: build_profile(np.zeros((2, 2, 2))), "\\[rows, columns\\]", id="3d"),
    ],
)
def test_malformed_features_raise_invalid_input(call, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        call()


def test_profile_round_trips_through_msgspec_json() -> None:
    x, y = load_breast_cancer(return_X_y=True)
    x[::7, 3] = np.nan
    profile = build_profile(
        {"input": x, "site": np.array(["north", "south"] * (len(x) // 2) + ["east"])},
        predictions={"label": y, "score": np.linspace(0, 1, len(x))},
    )

    decoded = msgspec.json.decode(msgspec.json.encode(profile), type=Profile)

    assert decoded == profile
    assert isinstance(decoded.features[0], NumericProfile)
    assert isinstance(decoded.features[-1], CategoricalProfile)
    assert decoded.features[3].count == len(x) - len(range(0, len(x), 7))
