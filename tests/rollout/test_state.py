"""Rollout state, the lease, deployment history and the controller, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.errors import InvalidInput, VersionConflict
from slipway.registry.records import Signature, TensorSpec
from slipway.registry.store import SqlStore
from slipway.rollout import actions
from slipway.rollout.analysis import GateConfig
from slipway.rollout.controller import RolloutController
from slipway.rollout.evidence import EvidenceCollector
from slipway.rollout.policy import RolloutConfig
from slipway.rollout.state import RolloutStore

SIGNATURE = Signature(
    inputs=[TensorSpec(name="x", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(store_url: str, clock: Clock) -> Iterator[SqlStore]:
    with SqlStore(store_url, clock=clock) as store:
        for i in range(3):
            store.register_version(
                "m", format="onnx", digest=f"{i:02x}" * 32, size=1, signature=SIGNATURE
            )
        store.create_deployment("d", "m", 1)
        yield store


def test_start_puts_the_split_in_the_deployment_and_end_removes_it(store: SqlStore) -> None:
    generation = store.get_deployment("d").generation
    config = RolloutConfig(steps=[10, 40], routing_key="X-User-Id")
    rollout = actions.start(store, "d", 2, config, actor="ana")
    record = store.get_deployment("d")
    assert record.traffic is not None
    assert (record.traffic.candidate, record.traffic.weight) == (2, 10.0)
    assert record.traffic.routing_key == "x-user-id"
    assert record.generation == generation + 1
    with pytest.raises(VersionConflict):
        actions.start(store, "d", 3, config)
    with pytest.raises(InvalidInput):
        actions.start(store, "d", 1, config)  # already stable
    RolloutStore(store).set_step(rollout.id, 1)
    assert store.get_deployment("d").traffic.weight == 40.0  # type: ignore[union-attr]
    paused = actions.pause(store, "d")
    assert paused.status == "paused"
    actions.resume(store, "d")
    ended = actions.abort(store, "d")
    assert ended.status == "aborted"
    after = store.get_deployment("d")
    assert after.traffic is None and after.version == 1
    kinds = [e.kind for e in RolloutStore(store).events(rollout.id)]
    assert kinds == ["aborted", "running", "paused", "advanced", "started"]


def test_rollback_without_a_rollout_returns_to_the_previous_version(store: SqlStore) -> None:
    with pytest.raises(InvalidInput):
        actions.rollback(store, "d")
    store.set_deployment_version("d", 2)
    record = actions.rollback(store, "d")
    assert (record.version, record.previous_version) == (1, 2)


def test_history_says_what_served_at_any_time(store: SqlStore, clock: Clock) -> None:
    created = clock.now
    clock.advance(60)
    store.set_deployment_version("d", 2)
    clock.advance(60)
    actions.start(store, "d", 3, RolloutConfig())
    actions.promote(store, "d")
    clock.advance(60)
    actions.rollback(store, "d")
    assert store.deployment_version_at("d", created - dt.timedelta(seconds=1)) is None
    assert store.deployment_version_at("d", created + dt.timedelta(seconds=30)) == 1
    assert store.deployment_version_at("d", created + dt.timedelta(seconds=90)) == 2
    assert store.deployment_version_at("d", created + dt.timedelta(seconds=150)) == 3
    assert store.deployment_version_at("d", clock.now) == 2


def test_the_lease_has_one_holder_until_it_expires(store: SqlStore, clock: Clock) -> None:
    rollouts = RolloutStore(store)
    assert rollouts.acquire_lease("c", "a", 10)
    assert not rollouts.acquire_lease("c", "b", 10)
    assert rollouts.acquire_lease("c", "a", 10)  # renew
    clock.advance(11)
    assert rollouts.acquire_lease("c", "b", 10)
    assert not rollouts.acquire_lease("c", "a", 10)
    rollouts.release_lease("c", "b")
    assert rollouts.acquire_lease("c", "a", 10)


def _serve(store: SqlStore, rollout_id: int, traffic: dict[int, tuple[int, int, float]]) -> None:
    """Flush one replica window: version → (requests, errors, latency seconds)."""
    collector = EvidenceCollector(rng=random.Random(1))
    rng = random.Random(2)
    import numpy as np

    for version, (requests, errors, latency) in traffic.items():
        for i in range(requests):
            scores = np.array([rng.betavariate(2, 5)], dtype=np.float32)
            collector.observe(rollout_id, version, i < errors, latency, {"y": scores}, None)
    windows, served = collector.drain()
    RolloutStore(store).add_windows("replica-1", windows, served)


GATES = GateConfig(min_samples=50, min_output_samples=30)


def test_controller_waits_then_advances_then_promotes(store: SqlStore, clock: Clock) -> None:
    rollout = actions.start(
        store, "d", 2, RolloutConfig(steps=[10, 50], interval_s=30, gates=GATES)
    )
    controller = RolloutController(store, holder="a")
    other = RolloutController(store, holder="b")
    _serve(store, rollout.id, {1: (200, 0, 0.002), 2: (10, 0, 0.002)})
    assert [d.action for _, d in controller.tick()] == ["wait"]
    assert other.tick() == []  # "a" holds the lease
    _serve(store, rollout.id, {1: (200, 0, 0.002), 2: (100, 0, 0.002)})
    assert [d.action for _, d in controller.tick()] == ["wait"]  # interval not over
    clock.advance(31)
    assert [d.action for _, d in controller.tick()] == ["advance"]
    assert store.get_deployment("d").traffic.weight == 50.0  # type: ignore[union-attr]
    clock.advance(1)
    _serve(store, rollout.id, {1: (100, 0, 0.002), 2: (100, 0, 0.002)})
    clock.advance(31)
    # A restarted controller (a new object, same database) picks up where the last one stopped.
    restarted = RolloutController(store, holder="a")
    assert [d.action for _, d in restarted.tick()] == ["promote"]
    record = store.get_deployment("d")
    assert (record.version, record.previous_version, record.traffic) == (2, 1, None)
    state = RolloutStore(store)
    assert state.get(rollout.id).status == "promoted"
    events = state.events(rollout.id)
    assert [e.kind for e in events][:2] == ["promoted", "advanced"]
    checks = events[0].data["analysis"]["checks"]  # type: ignore[index]
    assert {c["name"] for c in checks} >= {"error_rate", "p99_latency", "output_psi"}
    assert all(c["threshold"] is not None for c in checks)


@pytest.mark.parametrize(
    "bad",
    [pytest.param((200, 40, 0.002), id="errors"), pytest.param((200, 0, 0.2), id="slow")],
)
def test_controller_rolls_a_bad_candidate_back(
    store: SqlStore, clock: Clock, bad: tuple[int, int, float]
) -> None:
    rollout = actions.start(
        store, "d", 2, RolloutConfig(steps=[10, 50], interval_s=30, gates=GATES)
    )
    _serve(store, rollout.id, {1: (400, 0, 0.002), 2: bad})
    decisions = RolloutController(store, holder="a").tick()
    assert [d.action for _, d in decisions] == ["rollback"]
    record = store.get_deployment("d")
    assert (record.version, record.traffic) == (1, None)
    assert RolloutStore(store).get(rollout.id).status == "rolled_back"


def test_the_evidence_reservoir_is_a_uniform_sample() -> None:
    """Every request is equally likely to end in the sample (chi-squared over 3,000 runs of
    100 requests into 10 slots), however far past the point where the reservoir filled."""
    import numpy as np
    from scipy import stats

    rng = random.Random(7)
    included = np.zeros(100, dtype=np.int64)
    for _ in range(3000):
        collector = EvidenceCollector(max_samples=10, rng=rng)
        for i in range(100):
            collector.observe(1, 2, False, 0.001, {"y": np.array([float(i)])}, None)
        samples = collector._windows[(1, 2)].samples
        assert len(samples) == 10
        for _, outputs in samples:
            included[int(outputs["y"][0])] += 1
    assert included.sum() == 30_000
    assert stats.chisquare(included).pvalue > 0.001
    # the early ones are not favoured: the first and last tenth are equally likely
    assert abs(included[:10].sum() - included[90:].sum()) < 0.1 * included[:10].sum()


@pytest.mark.parametrize("strategy", ["shadow", "bluegreen"])
def test_an_operator_promotion_and_a_ticking_controller_never_race(
    store: SqlStore, strategy: str
) -> None:
    """The controller closes a rollout whose candidate already serves (a promotion cut short by
    a crash). The operator's promotion must therefore change the version and end (or hold) the
    rollout in one transaction, or a tick in between ends it under the operator's feet."""
    import threading

    stop = threading.Event()
    errors: list[BaseException] = []

    def tick() -> None:
        controller = RolloutController(store, holder="a")
        while not stop.is_set():
            try:
                controller.tick()
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
                return

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        config = RolloutConfig(strategy=strategy, hold_s=3600 if strategy == "bluegreen" else 0)
        for i in range(40):
            candidate = 2 if i % 2 == 0 else 1
            rollout = actions.start(store, "d", candidate, config)
            promoted = actions.promote(store, "d", actor="ana")
            if strategy == "bluegreen":
                assert (promoted.status, promoted.step) == ("running", 1)
                actions.promote(store, "d", actor="ana")  # end the hold at once
            state = RolloutStore(store)
            assert state.get(rollout.id).status == "promoted"
            assert store.get_deployment("d").version == candidate
            assert [e.kind for e in state.events(rollout.id)][0] == "promoted"
    finally:
        stop.set()
        ticker.join()
    assert errors == []


def test_a_status_report_never_shows_an_ended_rollout_without_its_ending(store: SqlStore) -> None:
    """The report reads the events and the rollout apart; a decision committed between the two
    reads must not give a rollout that has ended with events that do not say so."""
    import threading

    from slipway.errors import NotFound
    from slipway.rollout.reports import rollout_status

    stop = threading.Event()
    seen: list[tuple[str, str]] = []
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                status = rollout_status(store, "d")
            except NotFound:  # before the first rollout
                continue
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                errors.append(exc)
                return
            seen.append((status["rollout"]["status"], status["events"][0]["kind"]))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        config = RolloutConfig(strategy="canary", steps=[50])
        for i in range(60):
            other = 2 if store.get_deployment("d").version == 1 else 1
            actions.start(store, "d", other, config)
            if i % 3 == 0:
                actions.abort(store, "d", actor="ana")
            else:
                actions.promote(store, "d", actor="ana")
    finally:
        stop.set()
        reader.join()
    assert errors == []
    ended = [(status, kind) for status, kind in seen if status != "running"]
    assert ended and all(status == kind for status, kind in ended), {
        pair for pair in ended if pair[0] != pair[1]
    }


def test_an_abort_read_before_a_bluegreen_switch_still_switches_back(store: SqlStore) -> None:
    """Two operators act at once on a blue-green rollout with a hold: one promotes (the
    switch), the other aborts having read the rollout just before it. The abort lands on a
    switched rollout and must send traffic back to blue, not end it with green serving."""
    config = RolloutConfig(strategy="bluegreen", hold_s=3600)
    read = actions.start(store, "d", 2, config)  # what the aborting operator saw: step 0
    actions.promote(store, "d", actor="ana")  # the switch commits first
    ended = actions.abort(store, "d", actor="bo", rollout=read)
    assert ended.status == "aborted"
    record = store.get_deployment("d")
    assert (record.version, record.traffic) == (1, None)


def test_a_promotion_read_before_a_bluegreen_switch_does_not_switch_again(
    store: SqlStore, clock: Clock
) -> None:
    """The second of two simultaneous promotions finds the switch done: 409, and the hold it
    started is not restarted by a second "switched"."""
    read = actions.start(store, "d", 2, RolloutConfig(strategy="bluegreen", hold_s=3600))
    switched = actions.promote(store, "d", actor="ana")
    clock.advance(60)
    with pytest.raises(VersionConflict, match="already switched"):
        actions.promote(store, "d", actor="bo", rollout=read)
    state = RolloutStore(store)
    assert state.get(read.id).step_started_at == switched.step_started_at
    assert [e.kind for e in state.events(read.id)] == ["switched", "started"]


def test_simultaneous_promote_and_abort_of_a_bluegreen_leave_a_consistent_state(
    store: SqlStore,
) -> None:
    """Whoever wins, the rollout's end and what serves agree: aborted with blue serving, or
    switched (holding) / promoted with green serving."""
    import contextlib
    import threading

    config = RolloutConfig(strategy="bluegreen", hold_s=3600)
    for i in range(20):
        stable = store.get_deployment("d").version
        candidate = 2 if stable == 1 else 1
        rollout = actions.start(store, "d", candidate, config)
        barrier = threading.Barrier(2)

        def act(action, barrier=barrier) -> None:
            barrier.wait()
            with contextlib.suppress(VersionConflict):  # the other one won
                action(store, "d", actor="ana")

        both = (actions.promote, actions.abort)
        threads = [threading.Thread(target=act, args=(action,)) for action in both]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = RolloutStore(store).get(rollout.id)
        serving = store.get_deployment("d").version
        if ended.status == "aborted":
            assert serving == stable, i
        else:
            assert serving == candidate, i
            if ended.status == "running":
                actions.promote(store, "d")  # end the hold


def test_the_deployment_changes_version_only_through_its_active_rollout(
    store: SqlStore,
) -> None:
    """While a rollout runs, pointing the deployment at a third version left the rollout
    waiting for evidence from a stable version that no longer served, and its status showing
    weights that were not served; deleting the deployment (and creating it again) left the
    rollout open on the new one. Both are refused (409) until the rollout has ended.
    Deploying the candidate itself stays allowed: the controller closes the rollout."""
    rollout = actions.start(store, "d", 2, RolloutConfig())
    with pytest.raises(VersionConflict, match=f"rollout {rollout.id} is active"):
        store.set_deployment_version("d", 3)
    with pytest.raises(VersionConflict, match=f"rollout {rollout.id} is active"):
        store.delete_deployment("d")
    record = store.get_deployment("d")
    assert record.version == 1 and record.traffic is not None
    assert record.traffic.rollout_id == rollout.id
    assert actions.rollback(store, "d").version == 1  # the way out: ends the rollout
    assert store.set_deployment_version("d", 3).version == 3

    rollout = actions.start(store, "d", 2, RolloutConfig())
    assert store.set_deployment_version("d", 2).version == 2  # the candidate
    assert [d.action for _, d in RolloutController(store, holder="a").tick()] == ["promote"]
    assert RolloutStore(store).get(rollout.id).status == "promoted"
    store.delete_deployment("d")


@pytest.mark.parametrize("gate", ["validation", "approval"])
def test_a_canary_held_at_its_promotion_gate_says_why_once(
    store: SqlStore, clock: Clock, gate: str
) -> None:
    """After its last step a canary whose promotion is gated (its own require_validation, or a
    production deployment with no approved request) waits, and says why in one "waiting"
    event, not in every tick's log line nor nowhere; it promotes on the first tick after the
    gate opens."""
    from slipway.governance import approvals

    if gate == "approval":
        first = approvals.request_promotion(store, "d", "m", 1, actor="dora")
        approvals.decide(store, first.id, approve=True, actor="abe")
        store.update_deployment("d", production=True, actor="admin")
    config = RolloutConfig(
        steps=[10], interval_s=30, gates=GATES, require_validation=gate == "validation"
    )
    rollout = actions.start(store, "d", 2, config)
    controller = RolloutController(store, holder="a")
    _serve(store, rollout.id, {1: (200, 0, 0.002), 2: (100, 0, 0.002)})
    assert [d.action for _, d in controller.tick()] == ["wait"]  # the step is held 30 s
    clock.advance(31)
    for _ in range(3):
        assert [d.action for _, d in controller.tick()] == ["wait"]
    state = RolloutStore(store)
    assert state.get(rollout.id).status == "running"
    reasons = [e.data["reason"] for e in state.events(rollout.id) if e.kind == "waiting"]
    gated = [r for r in reasons if str(r).startswith("promotion gate")]
    assert len(gated) == 1, reasons
    assert ("validation report" if gate == "validation" else "approved promotion") in gated[0]

    if gate == "validation":
        from slipway.validation.checks import Check, Report, StageResult
        from slipway.validation.reports import save_report

        passed = Check("accuracy", 0.95, ">= 0.9", "pass")
        stage = StageResult("quality", True, [passed])
        save_report(store, Report("m", 2, "default", None, "2026-03-01T12:00:31Z", [stage]), "")
    else:
        second = approvals.request_promotion(store, "d", "m", 2, actor="dora")
        approvals.decide(store, second.id, approve=True, actor="abe")
    assert [d.action for _, d in controller.tick()] == ["promote"]
    assert store.get_deployment("d").version == 2


def test_one_rollout_the_controller_cannot_evaluate_does_not_stall_the_others(
    store: SqlStore, clock: Clock
) -> None:
    """A rollout whose analysis raises (here: a gate setting from before it was checked, that
    made the output check compute on no samples) used to fail the whole tick, every tick, so
    no other rollout on the registry advanced or promoted. It is now skipped and logged."""
    import msgspec
    from sqlalchemy import update

    from slipway.registry.db import RolloutRow

    store.create_deployment("e", "m", 1)
    broken = actions.start(store, "d", 2, RolloutConfig(steps=[10], interval_s=0))
    config = msgspec.to_builtins(broken.config)
    config["gates"]["min_output_samples"] = 0
    with store.engine.begin() as connection:
        connection.execute(
            update(RolloutRow).where(RolloutRow.id == broken.id).values(config=config)
        )
    healthy = actions.start(store, "e", 2, RolloutConfig(steps=[10], interval_s=0, gates=GATES))
    _serve(store, healthy.id, {1: (200, 0, 0.002), 2: (100, 0, 0.002)})
    clock.advance(1)
    decisions = dict(RolloutController(store, holder="a").tick())
    assert decisions == {healthy.id: decisions[healthy.id]}
    assert decisions[healthy.id].action == "promote"
    assert RolloutStore(store).get(broken.id).status == "running"


def test_feedback_posted_again_for_a_request_counts_once(store: SqlStore) -> None:
    """A client that retries its feedback post (or corrects a value) must not weigh its
    request two or three times in the experiment: each request is one observation per named
    value, the newest value posted for it."""
    rollout = actions.start(store, "d", 2, RolloutConfig(strategy="ab", routing_key="x-user"))
    state = RolloutStore(store)
    state.add_windows("replica-1", [], [("r-1", rollout.id, 1), ("r-2", rollout.id, 2)])
    state.add_windows("replica-2", [], [("r-2", rollout.id, 2)])  # a retried request
    for _ in range(3):
        state.add_feedback("r-1", {"converted": 1.0})
    state.add_feedback("r-2", {"converted": 0.0})
    state.add_feedback("r-2", {"converted": 1.0, "revenue": 12.5})
    assert state.feedback_by_version(rollout.id) == {
        1: {"converted": [1.0]},
        2: {"converted": [1.0], "revenue": [12.5]},
    }


def test_an_analysis_that_finishes_after_an_abort_writes_nothing_on_the_ended_rollout(
    store: SqlStore,
) -> None:
    """The controller reads a rollout, an operator aborts it, then the controller's analysis
    of what it read is done: it must not store its analysis or a "waiting" event after the
    "aborted" one (the status would show an ended rollout still waiting)."""
    rollout = actions.start(store, "d", 2, RolloutConfig(steps=[10], gates=GATES))
    _serve(store, rollout.id, {1: (200, 0, 0.002), 2: (10, 0, 0.002)})
    read = RolloutStore(store).get(rollout.id)  # what the controller's tick read
    actions.abort(store, "d", actor="ana")
    RolloutController(store, holder="a").step(read)
    ended = RolloutStore(store).get(rollout.id)
    assert (ended.status, ended.analysis) == ("aborted", None)
    assert [e.kind for e in RolloutStore(store).events(rollout.id)] == ["aborted", "started"]


def test_a_paused_bluegreen_hold_is_not_closed_by_the_controller(
    store: SqlStore, clock: Clock
) -> None:
    """`pause` stops the controller acting on a rollout; for a blue-green rollout holding
    after its switch that means blue stays warm and one `abort` away past the hold time,
    until the operator resumes (the hold then runs again from the resume)."""
    rollout = actions.start(store, "d", 2, RolloutConfig(strategy="bluegreen", hold_s=60))
    actions.promote(store, "d", actor="ana")
    actions.pause(store, "d", actor="ana")
    clock.advance(120)
    controller = RolloutController(store, holder="a")
    assert controller.tick() == []
    assert RolloutStore(store).get(rollout.id).status == "paused"
    actions.resume(store, "d", actor="ana")
    clock.advance(61)
    assert [d.action for _, d in controller.tick()] == ["promote"]
    assert RolloutStore(store).get(rollout.id).status == "promoted"


def test_a_request_id_with_a_nul_is_stored_and_its_feedback_joins_it(store: SqlStore) -> None:
    """PostgreSQL text cannot hold NUL: the served id is stored (not the whole flush lost), and
    feedback posted with the id the client sent joins it."""
    rollout = actions.start(store, "d", 2, RolloutConfig(strategy="ab", routing_key="x-user"))
    collector = EvidenceCollector(rng=random.Random(1))
    collector.observe(rollout.id, 2, False, 0.01, None, "r\x00-1")
    collector.observe(rollout.id, 1, False, 0.01, None, "r-2")
    state = RolloutStore(store)
    state.add_windows("replica-1", *collector.drain())
    state.add_feedback("r\x00-1", {"converted": 1.0})
    state.add_feedback("r-2", {"converted": 0.0})
    assert state.feedback_by_version(rollout.id) == {
        1: {"converted": [0.0]},
        2: {"converted": [1.0]},
    }


def test_a_replica_on_a_long_host_name_stores_its_evidence(
    store: SqlStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica names itself after its host (a Kubernetes pod name runs to 63 characters):
    its name must fit rollout_windows.replica, or PostgreSQL refuses every flush and the
    rollout never gets the evidence to advance."""
    from slipway.registry.artifacts import ArtifactStore
    from slipway.serving.repository import ModelRepository
    from slipway.serving.rollouts import RolloutPlane
    from slipway.settings import Settings

    monkeypatch.setattr(socket, "gethostname", lambda: "churn-serving-" + "x" * 50)
    settings = Settings.from_env({"SLIPWAY_HOME": str(tmp_path / "home")})
    repository = ModelRepository(store, ArtifactStore(tmp_path / "artifacts"))
    plane = RolloutPlane(store, repository, settings)
    rollout = actions.start(store, "d", 2, RolloutConfig(steps=[10], interval_s=0, gates=GATES))
    plane.collector.observe(rollout.id, 2, False, 0.01, None, "r-1")
    asyncio.run(plane.flush())
    assert [version for version, _ in RolloutStore(store).windows(rollout.id)] == [2]
    assert plane.replica.startswith("churn-serving-x")
