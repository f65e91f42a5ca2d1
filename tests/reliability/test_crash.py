"""Crash consistency: a process registering versions, stepping rollouts and writing audit
records is killed with SIGKILL at random points, again and again. After every kill the registry
is consistent: version numbers unique and gap-free, every version's artifact verifies, at most
one active rollout per deployment and the deployment's traffic split agrees with it, and the
audit chain verifies. At the end, the interrupted rollout resumes and `slipway audit verify`
passes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slipway.governance import audit
from slipway.local import Registry
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.store import SqlStore
from slipway.rollout import actions
from slipway.rollout.state import RolloutStore
from slipway.settings import Settings

from .models import write_slow_onnx

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

# Registration (artifact write, then the row), a rollout step (start, advance, promote or roll
# back) and a batch of prediction audit records per round, as fast as it can go.
WORKER = r"""
import random, sys, time
import numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
from slipway.governance.recorder import PredictionRecorder
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.registration import register_onnx
from slipway.registry.store import SqlStore
from slipway.rollout import actions
from slipway.rollout.policy import RolloutConfig
from slipway.rollout.state import RolloutStore

store, artifacts = SqlStore(sys.argv[1]), ArtifactStore(sys.argv[2])
rollouts = RolloutStore(store)
recorder = PredictionRecorder(store, lambda name: None, batch_size=20)
rng = random.Random()

def model_bytes():
    shift = numpy_helper.from_array(np.array([rng.random()], dtype=np.float32), name="shift")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "shift"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], initializer=[shift])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()

n = 0
while True:
    n += 1
    record = register_onnx(store, artifacts, "churn", model_bytes(), actor="worker")
    active = rollouts.active("churn-prod")
    if not active:
        if store.get_deployment("churn-prod").version != record.number:
            config = RolloutConfig(strategy="canary", steps=[10.0, 50.0], interval_s=0.0)
            actions.start(store, "churn-prod", record.number, config, actor="worker")
    elif n % 7 == 0:
        actions.rollback(store, "churn-prod", actor="worker")
    elif active[0].step + 1 < len(active[0].config.steps):
        rollouts.set_step(active[0].id, active[0].step + 1, actor="worker")
    else:
        actions.promote(store, "churn-prod", actor="worker")
    recorder.write([(time.time(), "churn-prod", 1, "ok", 0.001, b'{"id": "r%d-%d"}' % (n, i),
                     b"{}", None, None, None, 10) for i in range(20)])
    print(n, flush=True)
"""


def _check_consistent(url: str, artifacts_dir: Path) -> int:
    """The invariants; returns how many versions there are."""
    artifacts = ArtifactStore(artifacts_dir)
    with SqlStore(url) as store:
        versions = store.list_versions("churn")
        numbers = [v.number for v in versions]
        assert numbers == list(range(1, len(numbers) + 1)), numbers  # unique, no gap
        for version in versions:
            artifacts.verified_path(version.digest)  # raises ArtifactCorrupt when it is not
        active = RolloutStore(store).active("churn-prod")
        assert len(active) <= 1, active
        deployment = store.get_deployment("churn-prod")
        if active:
            assert deployment.traffic is not None
            assert deployment.traffic.rollout_id == active[0].id
            assert deployment.traffic.candidate == active[0].candidate
        else:
            assert deployment.traffic is None, deployment.traffic
        assert deployment.version in numbers
        verified = audit.verify(store)
        assert verified.ok, verified
        return len(numbers)


def _crash_repeatedly(url: str, home: Path, tmp_path: Path, rounds: int) -> None:
    with Registry(Settings.from_env({"SLIPWAY_HOME": str(home)}, database_url=url)) as registry:
        registry.register_onnx("churn", write_slow_onnx(tmp_path / "first.onnx", 1, 8, 4))
        registry.store.create_deployment("churn-prod", "churn", 1)
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    rng = random.Random(1234)
    grown = []
    for _ in range(rounds):
        worker = subprocess.Popen(
            [sys.executable, str(script), url, str(home / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert worker.stdout is not None and worker.stderr is not None
        first = worker.stdout.readline()  # at least one full round is committed
        assert first.strip() == b"1", worker.stderr.read().decode()[-3000:]
        time.sleep(rng.uniform(0.05, 1.0))  # then a random point of a later round
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        worker.stdout.close()
        worker.stderr.close()
        grown.append(_check_consistent(url, home / "artifacts"))
    print(f"crash: {rounds} kills, versions after each: {grown}")
    assert grown == sorted(grown) and grown[-1] > rounds  # work was done, and kept

    # The interrupted rollout, if any, resumes: it can be stepped and promoted.
    with SqlStore(url) as store:
        active = RolloutStore(store).active("churn-prod")
        if active:
            promoted = actions.promote(store, "churn-prod", actor="after-crash")
            assert promoted.status == "promoted"
            assert store.get_deployment("churn-prod").version == active[0].candidate
    _check_consistent(url, home / "artifacts")
    verified = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "audit", "verify"],
        env={**os.environ, "SLIPWAY_HOME": str(home), "SLIPWAY_DATABASE_URL": url},
        capture_output=True,
        text=True,
    )
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_kill_9_during_writes_on_sqlite(tmp_path: Path, sqlite_url: str) -> None:
    _crash_repeatedly(sqlite_url, tmp_path / "home", tmp_path, rounds=12)


@pytest.mark.postgres
def test_kill_9_during_writes_on_postgres(tmp_path: Path, pg_fresh_url: str) -> None:
    _crash_repeatedly(pg_fresh_url, tmp_path / "home", tmp_path, rounds=6)
