"""``slipway validate`` as a CI pipeline calls it: a real process, exit codes, JUnit, HTML."""

from __future__ import annotations

import json
from pathlib import Path

from slipway.local import Registry
from slipway.validation.reports import latest_report

from ..test_cli import assert_one_line_error, slipway

POLICY = """name: ci
against: cancer-prod
integration: {rows: 40}
quality:
  accuracy: {max_worse: 0.02}
"""


def test_validate_exits_non_zero_when_a_required_gate_fails(
    registry: Registry, holdout_csv: Path, tmp_path: Path
) -> None:
    home = registry.settings.home
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    junit, page = tmp_path / "junit.xml", tmp_path / "report.html"
    args = ["--data", str(holdout_csv), "--policy", str(policy), "--junit", str(junit)]
    bad = slipway(home, "validate", "cancer@2", *args, "--html", str(page))
    assert bad.returncode == 12, bad.stderr
    assert "accuracy vs production" in bad.stderr
    assert "<failure" in junit.read_text() and 'name="accuracy vs production"' in junit.read_text()
    html = page.read_text()
    assert "FAILED" in html and "<svg" in html and "confusion matrix" in html
    report = tmp_path / "report.json"
    good = slipway(home, "validate", "cancer@3", *args, "--json", str(report))
    assert good.returncode == 0, good.stderr + good.stdout
    # The table shows numbers as numbers and no value as a dash, never Python's None.
    assert " None " not in good.stdout and "│ -" in good.stdout
    stages = json.loads(report.read_text())["stages"]
    assert [s["stage"] for s in stages] == ["contract", "quality", "integration"]
    assert "<failure" not in junit.read_text()
    stored = latest_report(registry.store, "cancer", 3)
    assert stored is not None and stored.passed and stored.policy == "ci"


def test_a_parquet_holdout_reads_like_its_csv_and_validates(
    registry: Registry, holdout_csv: Path, tmp_path: Path
) -> None:
    import numpy as np

    from slipway.validation.holdout import read_holdout
    from tests.runtimes.frameworks import require

    pa = require("pyarrow")
    import pyarrow.parquet as pq

    from_csv = read_holdout(holdout_csv, "label")
    table = {name: from_csv.features[:, i] for i, name in enumerate(from_csv.columns)}
    table["label"] = from_csv.labels
    path = tmp_path / "holdout.parquet"
    pq.write_table(pa.table(table), path)
    from_parquet = read_holdout(path, "label")
    assert from_parquet.columns == from_csv.columns
    np.testing.assert_array_equal(from_parquet.features, from_csv.features)
    np.testing.assert_array_equal(from_parquet.labels, from_csv.labels)
    home = registry.settings.home
    done = slipway(home, "validate", "cancer@3", "--data", str(path))
    assert done.returncode == 0, done.stderr + done.stdout
    assert latest_report(registry.store, "cancer", 3) is not None
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    refused = slipway(home, "validate", "cancer@3", "--data", str(broken))
    assert refused.returncode == 2 and "Parquet" in refused.stderr


def test_a_load_test_where_every_request_fails_exits_non_zero(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v2/health/live"
    done = slipway(tmp_path / "home", "loadtest", url, "--rate", "10", "--duration", "0.5")
    line = assert_one_line_error(done, 1)
    assert "none of the 5 requests succeeded" in line and url in line
    assert "p99 ms" in done.stdout  # the measurements are still shown


def test_the_printed_report_says_why_a_check_failed_and_files_are_replaced_whole(
    registry: Registry, holdout_csv: Path, tmp_path: Path
) -> None:
    home = registry.settings.home
    policy = tmp_path / "policy.yaml"
    policy.write_text("name: ci\nintegration: null\nquality:\n  acc: {min: 0.9}\n")
    page = tmp_path / "report.html"
    page.write_text("<html>the previous report</html>")
    with page.open() as reader:  # a viewer with the previous report open
        done = slipway(
            home, "validate", "cancer@1", "--data", str(holdout_csv), "--policy", str(policy),
            "--html", str(page),
        )  # fmt: skip
        assert reader.read() == "<html>the previous report</html>"
    assert done.returncode == 12, done.stderr
    # The stage failed on a metric the model lacks: the table names it and the ones it has,
    # not only "stage ran ... fail".
    assert "names metric(s) acc" in done.stdout and "accuracy" in done.stdout, done.stdout
    assert "Validation of cancer@1" in page.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("report")) == [
        "report.html"
    ]


def test_an_error_quoting_brackets_is_one_line_not_a_traceback(
    registry: Registry, holdout_csv: Path, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('name: "a[/b]"\n')
    done = slipway(
        registry.settings.home, "validate", "cancer@1", "--data", str(holdout_csv),
        "--policy", str(policy),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: invalid policy name 'a[/b]'"), done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert latest_report(registry.store, "cancer", 1) is None  # refused before any stage ran


def test_a_report_file_that_cannot_be_written_is_refused_before_validating(
    registry: Registry, holdout_csv: Path, tmp_path: Path
) -> None:
    for option in ("--junit", "--html", "--json"):
        nowhere = tmp_path / "missing-dir" / "report.out"
        done = slipway(
            registry.settings.home, "validate", "cancer@3", "--data", str(holdout_csv),
            option, str(nowhere),
        )  # fmt: skip
        assert str(nowhere.parent) in assert_one_line_error(done, 1)  # cannot be written
        assert latest_report(registry.store, "cancer", 3) is None  # nothing ran, nothing stored
