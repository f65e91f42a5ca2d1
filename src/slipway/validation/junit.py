"""The report as JUnit XML, for CI systems: a test suite per stage, a test case per check."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slipway.validation.checks import Report


def to_junit(report: Report) -> bytes:
    """JUnit XML; failing checks of required stages are failures, of others skipped tests."""
    suites = ET.Element("testsuites", name=f"slipway validate {report.ref}")
    for stage in report.stages:
        failures = sum(c.verdict == "fail" for c in stage.checks)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=stage.stage,
            tests=str(len(stage.checks)),
            failures=str(failures if stage.required else 0),
            skipped=str(0 if stage.required else failures),
            time=f"{stage.seconds:.3f}",
        )
        for check in stage.checks:
            case = ET.SubElement(
                suite, "testcase", classname=f"{report.ref}.{stage.stage}", name=check.name
            )
            message = f"value {check.value}, threshold {check.threshold or '-'}"
            if check.verdict == "fail":
                tag = "failure" if stage.required else "skipped"
                ET.SubElement(case, tag, message=message).text = check.detail
            else:
                ET.SubElement(case, "system-out").text = f"{message}: {check.verdict}"
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)
