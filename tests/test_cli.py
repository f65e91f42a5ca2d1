"""The ``slipway`` command, run as a user runs it: a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression


def slipway(
    home: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``slipway ARGS`` in a fresh process on ``home``; ``env`` adds or overrides variables."""
    inherited = ("SLIPWAY_DATABASE_URL", "SLIPWAY_TOKEN")
    env = {
        **{k: v for k, v in os.environ.items() if k not in inherited},
        "SLIPWAY_HOME": str(home),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        **(env or {}),
    }
    return subprocess.run(
        [sys.executable, "-m", "slipway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def iris_onnx(tmp_path: Path) -> tuple[Path, np.ndarray]:
    data = load_iris()
    x = data.data.astype(np.float32)
    estimator = LogisticRegression(max_iter=1000).fit(x, data.target)
    path = tmp_path / "iris.onnx"
    path.write_bytes(
        to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}).SerializeToString()
    )
    np.save(tmp_path / "train.npy", x)
    return path, x


def test_register_list_show_deploy(tmp_path, iris_onnx) -> None:
    home = tmp_path / "home"
    path, _ = iris_onnx
    assert slipway(home, "init").returncode == 0
    assert (home / "registry.db").is_file() and (home / "artifacts").is_dir()  # docs/cli.md
    result = slipway(
        home,
        "models",
        "register",
        "iris",
        str(path),
        "--description",
        "first",
        "--metric",
        "accuracy=0.97",
        "--param",
        "C=1.0",
        "--tag",
        "team=ml",
        "--reference",
        str(tmp_path / "train.npy"),
    )
    assert result.returncode == 0, result.stderr
    assert "registered iris@1" in result.stdout
    assert slipway(home, "models", "register", "iris", str(path)).returncode == 0
    listing = slipway(home, "models", "list")
    assert "iris" in listing.stdout and " 2 " in listing.stdout
    shown = slipway(home, "models", "show", "iris@1", "--json")
    record = json.loads(shown.stdout)
    assert record["meta"]["metrics"] == {"accuracy": 0.97}
    assert record["meta"]["hyperparameters"] == {"C": "1.0"}
    assert record["profile"]["rows"] == 150
    assert "first" in slipway(home, "models", "show", "iris").stdout
    # No training data recorded: one dash, not a reference and a hash of dashes.
    shown_2 = slipway(home, "models", "show", "iris@2").stdout.splitlines()
    [lineage] = [line for line in shown_2 if "training data" in line]
    assert lineage.replace("│", " ").split() == ["training", "data", "-"]
    deployed = slipway(home, "deploy", "iris-prod", "iris@1")
    assert deployed.returncode == 0 and "iris@1" in deployed.stdout
    moved = slipway(home, "deploy", "iris-prod", "iris")
    assert "iris@2" in moved.stdout and "previous 1" in moved.stdout
    assert "iris-prod" in slipway(home, "deployments", "list").stdout


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        pytest.param(["models", "show", "ghost"], 3, "not found", id="unknown-model"),
        pytest.param(["models", "show", "ghost@x"], 2, "", id="bad-ref"),
        pytest.param(["deploy", "d", "ghost@1"], 3, "not found", id="deploy-unknown"),
        pytest.param(
            ["models", "register", "bad/name", "README.md"], 2, "invalid model name", id="bad-name"
        ),
    ],
)
def test_failures_exit_nonzero_with_one_line(tmp_path, args, code, fragment) -> None:
    home = tmp_path / "home"
    if args[-1] == "README.md":
        args = [*args[:-1], str(Path(__file__).parents[1] / "README.md")]
    result = slipway(home, *args)
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stderr.startswith("error:")
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The command failed with ``code`` and said why on one line starting with ``error:``."""
    assert result.returncode == code, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lines[0] == result.stderr.strip().splitlines()[-1], result.stderr
    return lines[0]


def test_a_long_error_stays_on_one_line_in_a_narrow_terminal(tmp_path) -> None:
    result = slipway(tmp_path / "home", "deploy", "d", "ghost@1", env={"COLUMNS": "40"})
    assert "model 'ghost' not found; see `slipway models list`" in assert_one_line_error(result, 3)


def test_a_home_that_cannot_be_created_is_one_line_not_a_traceback(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = slipway(blocker / "home", "models", "list")
    line = assert_one_line_error(result, 1)
    assert str(blocker / "home") in line


def test_a_database_that_is_down_is_one_line_not_a_traceback(tmp_path) -> None:
    url = "postgresql+psycopg://slipway@127.0.0.1:1/registry"
    result = slipway(tmp_path / "home", "models", "list", env={"SLIPWAY_DATABASE_URL": url})
    line = assert_one_line_error(result, 1)
    assert "registry database" in line and "SLIPWAY_DATABASE_URL" in line


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["predict", "d", "@{file}"], id="predict-rows"),
        pytest.param(
            ["models", "register", "m", "{model}", "--reference", "{file}"], id="reference"
        ),
        pytest.param(
            ["approvals", "report", "m@1", "--kind", "check", "--name", "x", "--passed"]
            + ["--summary", "{file}"],
            id="approvals-summary",
        ),
        pytest.param(["audit", "verify", "--checkpoint", "{file}"], id="audit-checkpoint"),
        pytest.param(["loadtest", "http://127.0.0.1:9/", "--body", "{file}"], id="loadtest-body"),
        pytest.param(["validate", "m@1", "--data", "{file}"], id="validate-data"),
    ],
)
@pytest.mark.parametrize("problem", ["missing", "garbage"])
def test_an_input_file_that_cannot_be_read_is_invalid_input(
    tmp_path, iris_onnx, args, problem
) -> None:
    """A file the user names that is missing, or holds something other than what the option
    takes (the ONNX model's bytes here), is exit code 2 with one line naming it."""
    model, _ = iris_onnx
    file = tmp_path / "absent.json" if problem == "missing" else model
    args = [a.format(file=file, model=model) for a in args]
    line = assert_one_line_error(slipway(tmp_path / "home", *args), 2)
    assert str(file) in line


def test_a_long_error_is_one_line_in_a_log_of_any_width(tmp_path) -> None:
    # CI captures stderr through a pipe: no terminal, so rich would wrap at 80 columns.
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "SLIPWAY_DATABASE_URL")}
    env.update(SLIPWAY_HOME=str(tmp_path / "home"), NO_COLOR="1")
    name = "model-" + "x" * 80
    result = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "models", "show", name],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and result.stderr.count("\n") == 1, result.stderr
    assert name in result.stderr


def test_pickle_refused_unless_trusted_then_converted(tmp_path, iris_onnx) -> None:
    import joblib

    _, x = iris_onnx
    data = load_iris()
    path = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=1000).fit(x, data.target), path)
    home = tmp_path / "home"
    result = slipway(home, "models", "register", "m", str(path))
    assert result.returncode == 5 and "pickle" in result.stderr and "--trusted" in result.stderr
    result = slipway(home, "models", "register", "m", str(path), "--trusted")
    assert result.returncode != 0 and "--reference" in result.stderr
    train = str(tmp_path / "train.npy")
    result = slipway(home, "models", "register", "m", str(path), "--trusted", "--reference", train)
    assert result.returncode == 0, result.stderr
    shown = slipway(home, "models", "show", "m@1", "--json")
    version = json.loads(shown.stdout)
    assert version["format"] == "onnx"
    assert version["meta"]["tags"]["framework"] == "sklearn:LogisticRegression"


def test_demo_once(tmp_path) -> None:
    env = {"COLUMNS": "60"}  # a narrow terminal: commands to copy must stay on one line
    result = slipway(tmp_path / "home", "demo", "--once", "--port", "0", timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert any(re.search(r"export SLIPWAY_TOKEN=slw_[\w-]{43}$", line) for line in lines), out
    [predict] = [line for line in lines if "slipway predict breast-cancer" in line]
    assert re.search(r"\]\]' --url http://127\.0\.0\.1:\d+$", predict), predict  # port 0
    assert "registered breast-cancer@1" in out and "registered breast-cancer@2" in out
    assert "/v2/models/breast-cancer/infer" in out and '"predictions"' in out
    assert '"model_version": "1"' in out


def iris_deployed(tmp_path: Path, iris_onnx) -> tuple[Path, Any, Any]:
    """A home whose registry serves the iris ONNX model as ``iris-prod``: (home, settings, x)."""
    from slipway.local import Registry
    from slipway.settings import Settings

    path, x = iris_onnx
    home = tmp_path / "home"
    settings = Settings.from_env({"SLIPWAY_HOME": str(home)}, port=0)
    with Registry(settings) as registry:
        registry.register_onnx("iris", path)
        registry.store.create_deployment("iris-prod", "iris", 1)
    return home, settings, x


def test_predict_exit_codes_follow_the_servers_answer(tmp_path, iris_onnx) -> None:
    """A server's 404 is 'not found' (3), its 400 'invalid input' (2), a token it refuses 8,
    and a server that is down 1: the same codes the command would give working locally."""
    from slipway.local import Registry
    from slipway.registry.records import InferencePolicy
    from slipway.server import BackgroundServer

    home, settings, x = iris_deployed(tmp_path, iris_onnx)
    with Registry(settings) as registry:
        registry.store.create_deployment("iris-closed", "iris", 1)
        closed = InferencePolicy(anonymous=False)
        registry.store.update_deployment("iris-closed", inference=closed)
    row = json.dumps([x[0].tolist()])
    with BackgroundServer(settings) as server:
        url = ["--url", server.url]
        assert slipway(home, "predict", "iris-prod", row, *url).returncode == 0
        line = assert_one_line_error(slipway(home, "predict", "ghost", row, *url), 3)
        assert "deployment 'ghost' not found" in line
        assert_one_line_error(slipway(home, "predict", "iris-prod", "[[1.0, 2.0]]", *url), 2)
        assert_one_line_error(slipway(home, "predict", "iris-closed", row, *url), 8)
    down = assert_one_line_error(slipway(home, "predict", "iris-prod", row, *url), 1)
    assert "cannot reach Slipway" in down


def test_predict_reads_rows_from_csv_and_npy_files(tmp_path, iris_onnx) -> None:
    """Rows kept as CSV (with or without a header naming the features) or a .npy array are
    sent as they are; the answers are the same as for the JSON rows."""
    import numpy as np

    from slipway.server import BackgroundServer

    home, settings, x = iris_deployed(tmp_path, iris_onnx)
    rows = x[[0, 60, 120]]
    np.savetxt(tmp_path / "plain.csv", rows, delimiter=",")
    np.savetxt(tmp_path / "named.csv", rows, delimiter=",", header="a,b,c,d", comments="")
    np.save(tmp_path / "rows.npy", rows)
    with BackgroundServer(settings) as server:
        url = ["--url", server.url]
        answers = []
        files = [f"@{tmp_path / name}" for name in ("plain.csv", "named.csv", "rows.npy")]
        for argument in (json.dumps(rows.tolist()), *files):
            result = slipway(home, "predict", "iris-prod", argument, *url)
            assert result.returncode == 0, result.stderr
            answers.append(json.loads(result.stdout)["predictions"])
        assert answers[0] == [0, 1, 2] and all(a == answers[0] for a in answers)
        (tmp_path / "short.csv").write_text("a,b\n1,2\n")
        line = assert_one_line_error(
            slipway(home, "predict", "iris-prod", f"@{tmp_path / 'short.csv'}", *url), 2
        )
        assert "HTTP 400" in line


def test_deploy_changes_nothing_when_its_batching_is_refused(tmp_path, iris_onnx) -> None:
    from slipway.local import Registry
    from slipway.settings import Settings

    path, _ = iris_onnx
    home = tmp_path / "home"
    settings = Settings.from_env({"SLIPWAY_HOME": str(home)})
    with Registry(settings) as registry:
        registry.register_onnx("iris", path)
        registry.register_onnx("iris", path)
        registry.store.create_deployment("iris-prod", "iris", 1)

    def deployed() -> tuple[int, int, float]:
        with Registry(settings) as registry:
            d = registry.store.get_deployment("iris-prod")
        return d.version, d.batching.max_batch_size, d.batching.max_batch_delay_ms

    for size in ("-5", "0", "100000"):  # 100000: more than the queue holds
        refused = slipway(home, "deploy", "iris-prod", "iris@2", "--max-batch-size", size)
        message = assert_one_line_error(refused, 2)
        assert deployed() == (1, 32, 2.0), size
    # The queue's size is no flag of deploy: the refusal names it and where it comes from.
    assert "100000" in message and "8192" in message and "SLIPWAY_MAX_QUEUE_ROWS" in message
    assert slipway(home, "deploy", "iris-prod", "iris@1", "--max-batch-size", "8").returncode == 0
    # One flag changes its own setting and keeps the other.
    moved = slipway(home, "deploy", "iris-prod", "iris@2", "--max-batch-delay-ms", "5")
    assert moved.returncode == 0, moved.stderr
    assert deployed() == (2, 8, 5.0)
    created = slipway(home, "deploy", "iris-new", "iris@1", "--max-batch-size", "0")
    assert_one_line_error(created, 2)


def test_a_failed_register_leaves_no_version_and_no_artifact(tmp_path, iris_onnx) -> None:
    path, x = iris_onnx
    home = tmp_path / "home"
    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("these are notes, not a model\n")
    narrow = tmp_path / "narrow.npy"
    np.save(narrow, x[:, :2])  # two columns; the model takes four

    def stored() -> list[Path]:
        store = home / "artifacts" / "sha256"
        return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []

    refused = slipway(home, "models", "register", "iris", str(not_onnx))
    line = assert_one_line_error(refused, 2)
    assert "notes.onnx is not a valid ONNX model" in line
    # The step that failed is marked so, on the line above the error.
    assert refused.stderr.splitlines()[-2].startswith("✗ storing, verifying and registering")
    refused = slipway(home, "models", "register", "iris", str(path), "--reference", str(narrow))
    assert_one_line_error(refused, 2)
    assert stored() == []
    assert_one_line_error(slipway(home, "models", "show", "iris"), 3)
    registered = slipway(home, "models", "register", "iris", str(path))
    assert "registered iris@1" in registered.stdout
    assert registered.stderr.startswith("✓ storing, verifying and registering"), registered.stderr
    assert len(stored()) == 1


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        pytest.param(["serve", "--port", "99999"], {}, "port 99999", id="serve-port"),
        pytest.param(["demo", "--once", "--port", "70000"], {}, "port 70000", id="demo-port"),
        pytest.param(["serve", "--log-level", "loud"], {}, "--log-level", id="log-level"),
        pytest.param(["serve", "--workers", "0"], {}, "--workers", id="workers"),
        pytest.param(["models", "list"], {"SLIPWAY_PORT": "abc"}, "SLIPWAY_PORT", id="env-int"),
        pytest.param(
            ["models", "list"], {"SLIPWAY_MAX_BATCH_DELAY_MS": "soon"}, "soon", id="env-float"
        ),
        # Values of the right type that break the setting's rule (a busy loop, a limit that
        # refuses everything, a misspelt mode that was silently the default).
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_MONITOR_INTERVAL_S": "0"},
            "SLIPWAY_MONITOR_INTERVAL_S must be more than 0",
            id="env-interval-zero",
        ),
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_MAX_BODY_BYTES": "-1"},
            "SLIPWAY_MAX_BODY_BYTES must be at least 1",
            id="env-negative-limit",
        ),
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_REQUEST_TIMEOUT_S": "nan"},
            "finite",
            id="env-nan",
        ),
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_DRIFT_WINDOW": "weekly"},
            "SLIPWAY_DRIFT_WINDOW must be one of time, rows",
            id="env-choice",
        ),
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_ALERT_WEBHOOKS": "https://hooks.example/a,hooks.example/b"},
            "'hooks.example/b'",
            id="env-url",
        ),
        pytest.param(
            ["serve", "--port", "0"],
            {"SLIPWAY_ALERT_RULES_FILE": "/nonexistent/rules.toml"},
            "cannot read alert rules",
            id="rules-file",
        ),
    ],
)
def test_bad_settings_are_refused_before_anything_starts(tmp_path, args, env, fragment) -> None:
    result = slipway(tmp_path / "home", *args, env=env, timeout=60)
    assert fragment in assert_one_line_error(result, 2)
    assert "serving on" not in result.stderr


@pytest.mark.parametrize("command", ["package", "rollback", "readiness", "validate", "deploy"])
def test_single_commands_show_their_own_usage(command) -> None:
    """A command that takes no sub-command says so in its usage line."""
    from typer.testing import CliRunner

    from slipway.cli import app

    shown = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    usage = next(line for line in shown.output.splitlines() if "Usage:" in line)
    assert f"slipway {command} [OPTIONS]" in usage and "COMMAND" not in usage, usage


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        pytest.param(["approvals", "list", "--status", "open"], "pending, approved", id="status"),
        pytest.param(["audit", "query", "--kind", "controls"], "control, prediction", id="kind"),
        pytest.param(["audit", "export", "{out}", "--kind", "x"], "control, prediction", id="exp"),
        pytest.param(
            ["alerts", "add", "r", "--kind", "latency", "--threshold", "1"],
            "latency_p50, latency_p95",
            id="alert-kind",
        ),
    ],
)
def test_a_filter_value_that_matches_nothing_is_refused_with_the_choices(
    tmp_path, args, choices
) -> None:
    """A typo in a filter is an error naming the values it takes, not an empty listing."""
    out = tmp_path / "audit.jsonl"
    result = slipway(tmp_path / "home", *[a.format(out=out) for a in args])
    assert choices in assert_one_line_error(result, 2)
    assert not out.exists()


def test_register_takes_a_training_data_sha256_as_sha256sum_prints_it(tmp_path, iris_onnx) -> None:
    path, _ = iris_onnx
    home = tmp_path / "home"
    bad = slipway(home, "models", "register", "iris", str(path), "--training-data-sha256", "abc")
    assert "--training-data-sha256" in assert_one_line_error(bad, 2)
    digest = "AB" * 32  # upper case, or with a sha256: prefix, is the same hash
    done = slipway(home, "models", "register", "iris", str(path), "--training-data-sha256", digest)
    assert done.returncode == 0, done.stderr
    shown = json.loads(slipway(home, "models", "show", "iris@1", "--json").stdout)
    assert shown["meta"]["training_data_sha256"] == "ab" * 32


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        pytest.param(["audit", "query", "--limit", "-1"], 2, "--limit", id="audit-limit"),
        pytest.param(["audit", "query", "--limit", "0"], 2, "--limit", id="audit-limit-0"),
        pytest.param(["alerts", "--limit", "-5"], 2, "--limit", id="alerts-limit"),
        pytest.param(["tokens", "list", "--user", "ghost"], 3, "user 'ghost'", id="tokens-user"),
    ],
)
def test_limits_and_names_in_listings_are_checked(tmp_path, args, code, fragment) -> None:
    home = tmp_path / "home"
    assert slipway(home, "init").returncode == 0
    assert fragment in assert_one_line_error(slipway(home, *args), code)


def test_a_registry_file_that_is_not_a_database_is_one_line(tmp_path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "registry.db").write_text("not a database, whatever it once was\n")
    line = assert_one_line_error(slipway(home, "models", "list"), 1)
    assert "file is not a database" in line and "registry database" in line


def test_serve_on_a_busy_port_does_not_claim_to_be_serving(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = slipway(tmp_path / "home", "serve", "--port", port, timeout=60)
    assert "Address already in use" in assert_one_line_error(result, 1)
    assert "serving on" not in result.stderr


def test_serve_on_port_0_says_the_port_it_listens_on(tmp_path) -> None:
    env = {
        **{
            k: v
            for k, v in os.environ.items()
            if k not in ("SLIPWAY_DATABASE_URL", "SLIPWAY_TOKEN")
        },
        "SLIPWAY_HOME": str(tmp_path / "home"),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "slipway.cli", "serve", "--port", "0"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        found = re.match(r"serving on (http://127\.0\.0\.1:(\d+))  ", first)
        assert found and found.group(2) != "0", first
        deadline = time.monotonic() + 60
        while True:
            try:
                live = httpx.get(found.group(1) + "/v2/health/live", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the server never answered"
                time.sleep(0.1)
        assert live.status_code == 200
    finally:
        server.terminate()
        server.communicate(timeout=30)  # and closes the pipe


def test_python_dash_m_slipway_runs_the_command(tmp_path) -> None:
    env = {**os.environ, "SLIPWAY_HOME": str(tmp_path / "home"), "COLUMNS": "200"}
    env.pop("SLIPWAY_TOKEN", None)
    env.pop("SLIPWAY_DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "slipway", "models", "list"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "latest version" in done.stdout  # the listing's header
