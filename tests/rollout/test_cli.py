"""`slipway rollout`, `slipway rollback` and `slipway experiment report` on a real registry."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from slipway.cli import app
from slipway.errors import InvalidInput
from slipway.local import Registry
from slipway.rollout.state import RolloutStore


@pytest.fixture
def cli(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("SLIPWAY_HOME", str(registry.settings.home))
    monkeypatch.delenv("SLIPWAY_DATABASE_URL", raising=False)
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


def run(cli: CliRunner, *args: str) -> str:
    result = cli.invoke(app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_rollout_commands(cli: CliRunner, registry: Registry) -> None:
    out = run(cli, "rollout", "start", "cancer-prod", "2", "--steps", "10,40", "--interval", "5")
    assert "candidate weight 10%" in " ".join(out.split())  # rich may wrap the line
    status = run(cli, "rollout", "status", "cancer-prod")
    assert "running" in status and "started" in status
    assert json.loads(run(cli, "rollout", "status", "cancer-prod", "--json"))["weights"] == {
        "1": 90.0,
        "2": 10.0,
    }
    assert "paused" in run(cli, "rollout", "pause", "cancer-prod")
    assert "running" in run(cli, "rollout", "resume", "cancer-prod")
    assert "promoted" in run(cli, "rollout", "promote", "cancer-prod")
    assert registry.store.get_deployment("cancer-prod").version == 2
    assert "cancer@1" in run(cli, "rollback", "cancer-prod")
    assert registry.store.get_deployment("cancer-prod").version == 1
    bad = cli.invoke(app, ["rollout", "start", "cancer-prod", "2", "--strategy", "nope"])
    assert bad.exit_code != 0 and "unknown strategy" in str(bad.exception)


def test_experiment_report_command(cli: CliRunner, registry: Registry) -> None:
    run(cli, "rollout", "start", "cancer-prod", "2", "--strategy", "ab", "--routing-key", "x-user")
    rollout = RolloutStore(registry.store).active("cancer-prod")[0]
    served = [(f"r{i}", rollout.id, 1 + i % 2) for i in range(400)]
    RolloutStore(registry.store).add_windows("replica", [], served)
    for i in range(400):
        converted = float(i % 2 == 1 and i % 10 != 1 or i % 9 == 0)
        RolloutStore(registry.store).add_feedback(f"r{i}", {"converted": converted})
    out = run(cli, "experiment", "report", "cancer-prod")
    assert "┃" in out  # the table; its text depends on the terminal width, the JSON does not
    report = json.loads(run(cli, "experiment", "report", "cancer-prod", "--json"))
    metric = report["metrics"][0]
    assert metric["winner"] == 2 and [a["n"] for a in metric["arms"]] == [200, 200]


def test_one_policy_file_drives_the_canary_and_the_approval_rule(
    cli: CliRunner, registry: Registry, tmp_path
) -> None:
    from slipway.governance import approvals

    policy = tmp_path / "promotion.yaml"
    policy.write_text(
        "approvals: 2\nchecks: [load-test]\n"
        "canary:\n  steps: [10, 40]\n  interval_s: 30\n"
        "  gates: {min_samples: 250, max_p99_ratio: 1.2, max_input_psi: 0.2}\n"
        "quality:\n  accuracy: {min: 0.9}\n"
    )
    run(cli, "rollout", "start", "cancer-prod", "2", "--policy", str(policy))
    rollout = RolloutStore(registry.store).active("cancer-prod")[0]
    assert rollout.config.steps == [10, 40] and rollout.config.interval_s == 30
    gates = rollout.config.gates
    assert (gates.min_samples, gates.max_p99_ratio, gates.max_input_psi) == (250, 1.2, 0.2)
    run(cli, "rollout", "abort", "cancer-prod")
    # Options given on the command line win over the file.
    run(cli, "rollout", "start", "cancer-prod", "2", "--policy", str(policy), "--steps", "5")
    assert RolloutStore(registry.store).active("cancer-prod")[0].config.steps == [5]
    run(cli, "rollout", "abort", "cancer-prod")
    shown = json.loads(run(cli, "approvals", "policy", "cancer", "--from", str(policy)))
    assert shown == {"approvals": 2, "require_validation": True, "required_checks": ["load-test"]}
    stored = approvals.get_policy(registry.store, "cancer")
    assert (stored.approvals, stored.required_checks) == (2, ["load-test"])
    policy.write_text("canary:\n  gates: {min_sample: 3}\n")
    bad = cli.invoke(app, ["rollout", "start", "cancer-prod", "2", "--policy", str(policy)])
    assert bad.exit_code != 0 and "min_sample" in str(bad.exception)


def test_rollback_says_which_step_back_it_took(cli: CliRunner, registry: Registry) -> None:
    run(cli, "rollout", "start", "cancer-prod", "2", "--strategy", "shadow")
    ended = " ".join(run(cli, "rollback", "cancer-prod").split())
    assert "ended rollout" in ended and "shadow of cancer@2" in ended and "cancer@1" in ended
    assert RolloutStore(registry.store).active("cancer-prod") == []


def test_experiment_report_without_feedback_says_so(cli: CliRunner) -> None:
    run(cli, "rollout", "start", "cancer-prod", "2", "--strategy", "ab", "--routing-key", "x-user")
    out = " ".join(run(cli, "experiment", "report", "cancer-prod").split())
    assert "ab rollout" in out and "control cancer@1" in out and "treatment cancer@2" in out
    assert "no feedback yet" in out


@pytest.mark.parametrize(
    "args",
    [
        ["rollout", "status", "ghost"],
        ["rollout", "pause", "ghost"],
        ["experiment", "report", "ghost"],
    ],
)
def test_a_deployment_that_does_not_exist_is_named_as_such(cli: CliRunner, args) -> None:
    done = cli.invoke(app, args)
    assert done.exit_code != 0
    assert "deployment 'ghost' not found" in str(done.exception)


def test_a_routing_key_or_header_rule_with_a_line_break_is_refused(
    cli: CliRunner, registry: Registry
) -> None:
    for extra in (["--routing-key", "x-user\r\nx-evil"], ["--rule", "x-tier=beta\n:candidate"]):
        done = cli.invoke(app, ["rollout", "start", "cancer-prod", "2", "--strategy", "ab", *extra])
        assert isinstance(done.exception, InvalidInput), done.output  # exit code 2
        assert "control characters" in str(done.exception)
        assert "\n" not in str(done.exception)
    assert registry.store.get_deployment("cancer-prod").traffic is None


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--interval", "nan"], id="interval-nan"),  # a step that never ends
        pytest.param(["--interval", "inf"], id="interval-inf"),
        pytest.param(["--strategy", "bluegreen", "--hold", "inf"], id="hold-inf"),
    ],
)
def test_a_number_that_is_not_finite_is_refused(cli: CliRunner, registry: Registry, args) -> None:
    done = cli.invoke(app, ["rollout", "start", "cancer-prod", "2", *args])
    assert done.exit_code != 0 and "finite" in str(done.exception), done.output
    assert RolloutStore(registry.store).active("cancer-prod") == []


def test_a_policy_file_with_a_nan_gate_is_refused(
    cli: CliRunner, registry: Registry, tmp_path
) -> None:
    policy = tmp_path / "promotion.yaml"
    policy.write_text("canary:\n  steps: [10, 50]\n  gates: {max_output_psi: .nan}\n")
    done = cli.invoke(app, ["rollout", "start", "cancer-prod", "2", "--policy", str(policy)])
    assert done.exit_code != 0 and "gates.max_output_psi" in str(done.exception), done.output
    assert RolloutStore(registry.store).active("cancer-prod") == []


def test_status_of_a_deployment_without_rollouts_says_how_to_start_one(cli: CliRunner) -> None:
    done = cli.invoke(app, ["rollout", "status", "cancer-prod"])
    assert done.exit_code != 0
    message = str(done.exception)  # it pointed back at `slipway rollout status` itself
    assert "no rollout on deployment 'cancer-prod'" in message
    assert "slipway rollout start cancer-prod VERSION" in message
    assert "rollout status" not in message
