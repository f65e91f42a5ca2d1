"""Stored reports on both databases, and the HTML and JUnit renderings."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from slipway.registry.records import Signature, TensorSpec
from slipway.registry.store import SqlStore
from slipway.validation.checks import Check, Report, StageResult
from slipway.validation.html import to_html
from slipway.validation.junit import to_junit
from slipway.validation.reports import latest_report, save_report

SIGNATURE = Signature([TensorSpec("input", "FP32", [-1, 2])], [TensorSpec("y", "FP32", [-1])])


def report(version: int, verdict: str, required: bool = True) -> Report:
    checks = [
        Check("accuracy", 0.91, ">= 0.9", "pass"),
        Check("p99 latency ms @10/s", 80.0, "<= 50", verdict, "too slow"),  # type: ignore[arg-type]
    ]
    data = {
        "classes": ["0", "1"],
        "confusion": [[50, 3], [4, 60]],
        "roc": {"fpr": [0.0, 0.1, 1.0], "tpr": [0.0, 0.9, 1.0]},
        "runs": [{"rate": 10.0, "latencies_ms": [5.0, 6.0, 80.0]}],
    }
    stage = StageResult("performance", required, checks, 1.5, data)
    return Report("churn", version, "ci", None, "2026-11-25T00:00:00+00:00", [stage])


def test_latest_report_reads_the_newest_on_each_database(store_url: str) -> None:
    with SqlStore(store_url) as store:
        for _ in range(2):
            store.register_version(
                "churn", format="onnx", digest="a" * 64, size=1, signature=SIGNATURE
            )
        assert latest_report(store, "churn", 1) is None
        save_report(store, report(1, "fail"), "<p>one</p>", actor="ci")
        second = save_report(store, report(1, "pass"), "<p>two</p>", actor="ci")
        save_report(store, report(2, "fail"), "<p>other</p>", actor="ci")
        latest = latest_report(store, "churn", 1)
        assert latest is not None and latest.id == second.id
        assert latest.passed and latest.html == "<p>two</p>" and latest.created_by == "ci"
        assert latest.report["stages"][0]["checks"][1]["value"] == 80.0


def test_html_is_one_self_contained_page_with_plots() -> None:
    page = to_html(report(1, "fail"))
    assert page.count("<svg") == 3  # confusion matrix, ROC curve, latency histogram
    assert "FAILED" in page and "too slow" in page
    assert "<script" not in page and "src=" not in page and "href=" not in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):  # each plot is well-formed SVG
        root = ET.fromstring(svg)
        assert root.tag == "{http://www.w3.org/2000/svg}svg" and len(root) > 3


def test_junit_fails_required_stages_and_skips_advisory_ones() -> None:
    required = ET.fromstring(to_junit(report(1, "fail")))
    [suite] = required
    assert suite.get("failures") == "1" and suite.get("tests") == "2"
    assert required.find(".//failure").get("message") == "value 80.0, threshold <= 50"
    advisory = ET.fromstring(to_junit(report(1, "fail", required=False)))
    assert advisory.find(".//failure") is None and advisory.find(".//skipped") is not None
