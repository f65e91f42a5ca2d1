from __future__ import annotations

import pytest

from slipway.errors import InvalidInput, InvalidName
from slipway.registry.names import check_name, parse_ref


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("churn", id="word"),
        pytest.param("a", id="one-char"),
        pytest.param("9", id="digit"),
        pytest.param("Churn_v2.onnx-prod", id="all-classes"),
        pytest.param("a" * 64, id="64-chars"),
        pytest.param("a.b.c", id="single-dots"),
    ],
)
def test_good_names_pass_unchanged(name: str) -> None:
    assert check_name("model", name) == name


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("", id="empty"),
        pytest.param("a" * 65, id="65-chars"),
        pytest.param("../x", id="parent"),
        pytest.param("a..b", id="double-dot-inside"),
        pytest.param("..", id="double-dot"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("-rf", id="leading-dash"),
        pytest.param("_x", id="leading-underscore"),
        pytest.param("a/b", id="slash"),
        pytest.param("a\\b", id="backslash"),
        pytest.param("%2e%2e", id="percent-encoded"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("churn\n", id="trailing-newline"),
        pytest.param("$(rm -rf)", id="shell"),
        pytest.param("a b", id="space"),
        pytest.param("naïve", id="non-ascii"),
        pytest.param("churn@3", id="at-sign"),
        pytest.param("a;b", id="semicolon"),
    ],
)
def test_bad_names_raise_invalid_name(name: str) -> None:
    with pytest.raises(InvalidName) as info:
        check_name("deployment", name)
    assert info.value.kind == "deployment"
    assert "invalid deployment name" in str(info.value)


def test_non_string_name_raises_invalid_name() -> None:
    with pytest.raises(InvalidName):
        check_name("model", 3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        pytest.param("churn", ("churn", None), id="bare"),
        pytest.param("churn@latest", ("churn", None), id="latest"),
        pytest.param("churn@3", ("churn", 3), id="number"),
        pytest.param("my.model-2@120", ("my.model-2", 120), id="dotted"),
    ],
)
def test_parse_ref(ref: str, expected: tuple[str, int | None]) -> None:
    assert parse_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("churn@", id="empty-version"),
        pytest.param("churn@0", id="zero"),
        pytest.param("churn@-1", id="negative"),
        pytest.param("churn@03", id="leading-zero"),
        pytest.param("churn@x", id="word"),
        pytest.param("churn@1.5", id="fraction"),
        pytest.param("churn@3@4", id="two-ats"),
        pytest.param("churn@ 3", id="space"),
        pytest.param("churn@٣", id="arabic-digit"),
        pytest.param("churn@99999999999", id="too-big"),
        pytest.param("churn@LATEST", id="shouting"),
    ],
)
def test_bad_refs_raise_invalid_input(ref: str) -> None:
    with pytest.raises(InvalidInput):
        parse_ref(ref)


@pytest.mark.parametrize("ref", ["@3", "../x@1", "a/b", ""])
def test_bad_model_in_ref_raises_invalid_name(ref: str) -> None:
    with pytest.raises(InvalidName):
        parse_ref(ref)
