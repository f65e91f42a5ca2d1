"""Prediction audit records: off the request path, by policy, fail-open or fail-closed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
import pytest
from prometheus_client import CollectorRegistry

from slipway.errors import Overloaded
from slipway.governance import audit
from slipway.governance.recorder import PredictionRecorder
from slipway.registry.records import InferencePolicy
from slipway.registry.store import SqlStore
from slipway.server import BackgroundServer

from ..serving.conftest import make_settings
from ..serving.test_v2 import v2_body


class Deployment:
    """Just what the recorder reads of a DeploymentRecord."""

    def __init__(self, policy: InferencePolicy, version: int = 1) -> None:
        self.inference, self.version, self.previous_version, self.traffic = (
            policy, version, None, None,
        )  # fmt: skip


REQUEST = json.dumps(
    {"id": "req-1", "parameters": {"customer_id": 42},
     "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1.5, 2.5]},
                {"name": "ssn", "shape": [1], "datatype": "BYTES", "data": ["123-45-6789"]}]}
).encode()  # fmt: skip
RESPONSE = b'{"outputs": [{"name": "label", "shape": [1], "datatype": "INT64", "data": [1]}]}'


def written(store: SqlStore, policy: InferencePolicy, *, rng: float = 0.5) -> dict:
    recorder = PredictionRecorder(store, lambda name: Deployment(policy), rng=lambda: rng)
    recorder.record("churn-prod", 1, "ok", 0.0123, REQUEST, RESPONSE, actor="svc")
    asyncio.run(recorder.flush())
    (record,) = audit.query(store, kind="prediction")
    assert (record.request_id, record.deployment, record.actor) == ("req-1", "churn-prod", "svc")
    assert record.data["version"] == 1 and record.data["arm"] == "stable"
    assert record.data["latency_ms"] == 12.3 and record.data["outcome"] == "ok"
    assert audit.verify(store).ok
    return record.data


def set_policy(admin: httpx.Client, server: BackgroundServer, inference: dict) -> None:
    """Give cancer-prod this inference policy and wait until the replica serves with it."""
    policy = {"inference": inference}
    assert admin.patch("/api/deployments/cancer-prod/policy", json=policy).status_code == 200
    want = InferencePolicy(**inference)
    deadline = time.monotonic() + 10
    while server.app.repository.deployments["cancer-prod"].inference != want:
        assert time.monotonic() < deadline, "the replica did not reload the deployment"
        time.sleep(0.05)


def test_hash_policy_is_the_default(store: SqlStore) -> None:
    data = written(store, InferencePolicy())
    assert data["input_sha256"] == hashlib.sha256(REQUEST).hexdigest()
    assert data["output_sha256"] == hashlib.sha256(RESPONSE).hexdigest()
    assert "input" not in data and "123-45-6789" not in json.dumps(data)


def test_full_policy_keeps_the_payload(store: SqlStore) -> None:
    data = written(store, InferencePolicy(payload="full", keys=["customer_id"]))
    assert data["input"] == json.loads(REQUEST) and data["output"] == json.loads(RESPONSE)
    assert data["keys"] == {"customer_id": 42}


def test_redact_policy_replaces_named_fields(store: SqlStore) -> None:
    data = written(store, InferencePolicy(payload="redact", redact=["ssn", "customer_id"]))
    assert "123-45-6789" not in json.dumps(data)
    ssn = data["input"]["inputs"][1]
    assert ssn["name"] == "ssn" and ssn["data"] == "[redacted]"
    assert data["input"]["inputs"][0]["data"] == [1.5, 2.5]
    assert data["input"]["parameters"] == {"customer_id": "[redacted]"}


@pytest.mark.parametrize(("draw", "full"), [(0.001, True), (0.5, False)])
def test_sample_policy(store: SqlStore, draw: float, full: bool) -> None:
    data = written(store, InferencePolicy(payload="sample", sample_rate=0.01), rng=draw)
    assert data["sampled"] is full
    assert ("input" in data) is full and ("input_sha256" in data) is not full


def test_none_policy_keeps_only_the_facts(store: SqlStore) -> None:
    data = written(store, InferencePolicy(payload="none", keys=["customer_id"]))
    assert set(data) == {"version", "arm", "latency_ms", "outcome", "keys"}


def test_full_queue_fails_open_with_a_count_or_closed_with_503(store: SqlStore) -> None:
    open_ = PredictionRecorder(store, lambda name: None, max_records=2)
    for _ in range(5):
        open_.record("d", 1, "ok", 0.001, b"{}", b"{}")
    assert open_.queued == 2 and open_.dropped._value.get() == 3
    closed = PredictionRecorder(store, lambda name: None, mode="fail-closed", max_records=2)
    closed.record("d", 1, "ok", 0.001, b"{}", b"{}")
    closed.record("d", 1, "ok", 0.001, b"{}", b"{}")
    with pytest.raises(Overloaded):
        closed.record("d", 1, "ok", 0.001, b"{}", b"{}")
    closed.record("d", 1, "client_error", 0.001, b"{}", b"{}")  # failing anyway: no 503 on top
    by_bytes = PredictionRecorder(store, lambda name: None, max_bytes=100)
    by_bytes.record("d", 1, "ok", 0.001, b"x" * 200, b"{}")
    assert by_bytes.queued == 0 and by_bytes.dropped._value.get() == 1


def test_stopping_during_a_write_neither_loses_nor_repeats_records(store: SqlStore) -> None:
    def slow_lookup(name: str) -> None:
        time.sleep(0.05)  # the writer thread is still appending when stop() comes

    async def scenario() -> None:
        recorder = PredictionRecorder(store, slow_lookup, batch_size=8, flush_interval_s=0.01)
        recorder.start()
        for _ in range(20):
            recorder.record("d", 1, "ok", 0.001, b"{}", b"{}")
        await asyncio.sleep(0.1)
        await recorder.stop()

    asyncio.run(scenario())
    assert len(audit.query(store, kind="prediction", limit=100)) == 20
    assert audit.verify(store).ok


def test_batches_linked_ahead_stay_one_chain_when_another_writer_appends(
    store: SqlStore,
) -> None:
    """After its first write the recorder links each batch to the head it left (SQLite, on the
    event loop); a control-plane record appended meanwhile makes it link the batch again."""
    from slipway.governance.sessions import writing
    from slipway.registry.audit import record_event

    recorder = PredictionRecorder(store, lambda name: None, batch_size=150)

    async def batch(n: int) -> None:
        for i in range(n):
            recorder.record("d", 1, "ok", 0.001, b'{"i": %d}' % i, b"{}", request_id=f"r{i}")
        await recorder.flush()

    asyncio.run(batch(3))
    asyncio.run(batch(150))  # linked ahead; more rows than one INSERT statement takes
    with writing(store) as session:
        record_event(
            session, at=store.clock(), kind="token.issued", subject="identity:x", actor="x",
            data={},
        )  # fmt: skip
    asyncio.run(batch(70))  # linked ahead against a head that has moved: linked again
    asyncio.run(batch(5))
    records = audit.query(store, limit=1000)
    assert len(records) == 3 + 150 + 1 + 70 + 5
    assert sorted(r.seq for r in records) == list(range(1, len(records) + 1))
    assert recorder.written._value.get() == 228
    report = audit.verify(store)
    assert report.ok, report


def test_a_failed_write_is_retried_with_the_records_built_meanwhile(tmp_path) -> None:
    """While the database refuses a batch, records keep being built ahead of it; once it
    accepts again, every record is written once, in one unbroken chain."""
    import sqlite3

    store = SqlStore(f"sqlite:///{tmp_path}/registry.db")
    database = sqlite3.connect(tmp_path / "registry.db", isolation_level=None)
    metrics = CollectorRegistry()
    recorder = PredictionRecorder(
        store, lambda name: None, batch_size=20, flush_interval_s=0.02, registry=metrics
    )

    async def until(condition, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    def record(n: int, name: str = "r") -> None:
        for i in range(n):
            recorder.record("d", 1, "ok", 0.001, b"{}", b"{}", request_id=f"{name}{i}")

    async def scenario() -> None:
        recorder.start()
        record(10)
        await until(lambda: recorder.written._value.get() == 10)
        database.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON audit_records WHEN NEW.request_id = 'x0'"
            " BEGIN SELECT RAISE(ABORT, 'refused'); END"
        )
        record(1, "x")
        record(30, "a")
        await asyncio.sleep(0.2)  # several failed attempts
        record(30, "b")  # built behind the refused batch
        await asyncio.sleep(0.1)
        assert recorder.written._value.get() == 10 and recorder.queued == 61
        waiting = "slipway_audit_queue_records"
        await until(lambda: metrics.get_sample_value(waiting) == 61)  # set at each retry
        database.execute("DROP TRIGGER refuse")
        await until(lambda: recorder.queued == 0)
        await until(lambda: metrics.get_sample_value(waiting) == 0)
        await recorder.stop()

    asyncio.run(scenario())
    records = audit.query(store, kind="prediction", limit=1000)
    assert sorted(r.request_id for r in records) == sorted(
        [f"r{i}" for i in range(10)] + ["x0"] + [f"a{i}" for i in range(30)]
        + [f"b{i}" for i in range(30)]
    )  # fmt: skip
    assert sorted(r.seq for r in records) == list(range(1, 72))
    assert audit.verify(store).ok


def test_redact_and_keys_reach_columns_of_mlflow_bodies(store: SqlStore) -> None:
    """MLflow's dataframe_split names its columns apart from their values: a redacted column's
    values are replaced in every row, and a key column's values copied."""
    split = json.dumps(
        {"dataframe_split": {"columns": ["age", "ssn", "customer_id"],
                             "data": [[40, "123-45-6789", 7], [51, "987-65-4321", 8]]}}
    ).encode()  # fmt: skip
    records = json.dumps(
        {"dataframe_records": [{"age": 40, "ssn": "123-45-6789", "customer_id": 9}]}
    ).encode()
    policy = InferencePolicy(payload="redact", redact=["ssn"], keys=["customer_id"])
    recorder = PredictionRecorder(store, lambda name: Deployment(policy))
    csv_body = b"age,ssn,customer_id\n40,123-45-6789,5\n"
    broken = b'{"dataframe_split": {"columns": ["ssn"], "data": [["123-45-6789"'
    for i, body in enumerate((split, records, csv_body, broken)):
        recorder.record(
            "churn-prod", 1, "ok", 0.01, body, b'{"predictions": [1]}', request_id=f"r{i}"
        )
    asyncio.run(recorder.flush())
    by_id = {r.request_id: r.data for r in audit.query(store, kind="prediction")}
    assert "-45-" not in json.dumps(by_id) and "-65-" not in json.dumps(by_id)
    assert by_id["r0"]["input"]["dataframe_split"]["data"] == [
        [40, "[redacted]", 7], [51, "[redacted]", 8]
    ]  # fmt: skip
    assert by_id["r0"]["keys"] == {"customer_id": [7, 8]}
    assert by_id["r1"]["input"]["dataframe_records"] == [
        {"age": 40, "ssn": "[redacted]", "customer_id": 9}
    ]
    assert by_id["r1"]["keys"] == {"customer_id": 9}
    assert by_id["r2"]["input"] == {
        "csv": {"columns": ["age", "ssn", "customer_id"], "data": [["40", "[redacted]", "5"]]}
    }
    assert by_id["r2"]["keys"] == {"customer_id": "5"}
    # A JSON body cut short is kept as its size and hash, not read as a table.
    assert set(by_id["r3"]["input"]) == {"undecodable_bytes", "sha256"}


def test_mlflow_and_kserve_predictions_are_audited_as_sent(client, gov_server, cancer) -> None:
    """The policy applies to the body the client sent, whatever the protocol: a column named in
    ``redact`` is replaced, not kept inside a decoded matrix."""
    set_policy(client("admin"), gov_server, {"payload": "redact", "redact": ["x3"]})
    record = gov_server.app.repository.resolve("cancer-prod")[1].record
    names = [f.name for f in record.profile.features]
    assert names[3] == "x3"
    row = cancer[0][0].tolist()
    http = client()
    split = {"dataframe_split": {"columns": names, "data": [row]}}
    response = http.post(
        "/mlflow/cancer-prod/invocations", json=split, headers={"x-request-id": "mlflow-1"}
    )
    assert response.status_code == 200, response.text
    text = ",".join(names) + "\n" + ",".join(map(str, row)) + "\n"
    response = http.post(
        "/mlflow/cancer-prod/invocations",
        content=text,
        headers={"x-request-id": "csv-1", "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    v1 = {"instances": [dict(zip(names, row, strict=True))]}
    response = http.post(
        "/v1/models/cancer-prod:predict", json=v1, headers={"x-request-id": "kserve-1"}
    )
    assert response.status_code == 200, response.text
    deadline = time.monotonic() + 10
    while len(audit.query(gov_server.app.store, request_id="kserve-1")) < 1:
        assert time.monotonic() < deadline, "prediction records were not written"
        time.sleep(0.05)
    (mlflow,) = audit.query(gov_server.app.store, request_id="mlflow-1")
    data = mlflow.data["input"]["dataframe_split"]["data"]
    assert data[0][3] == "[redacted]" and data[0][2] == row[2]
    assert "predictions" in mlflow.data["output"]
    (csv_record,) = audit.query(gov_server.app.store, request_id="csv-1")
    assert csv_record.data["input"]["csv"]["data"][0][3] == "[redacted]"
    (kserve,) = audit.query(gov_server.app.store, request_id="kserve-1")
    instance = kserve.data["input"]["instances"][0]
    assert instance["x3"] == "[redacted]" and instance["x2"] == row[2]
    assert "predictions" in kserve.data["output"]


def test_predictions_through_the_server_are_audited(client, gov_registry, cancer) -> None:
    http = client()
    body = v2_body(cancer[0][:2], id="v2-id-1")
    assert http.post("/v2/models/cancer-prod/infer", json=body).status_code == 200
    response = http.post(
        "/predict/cancer-prod",
        json={"instances": cancer[0][:1].tolist()},
        headers={"x-request-id": "json-1"},
    )
    assert response.status_code == 200
    assert http.post("/v2/models/cancer-prod/infer", json={"inputs": []}).status_code == 400
    viewer = client("viewer")
    assert viewer.post("/v2/models/private/infer", json=body).status_code == 200
    store = gov_registry.store
    deadline = time.monotonic() + 10
    while len(audit.query(store, kind="prediction", limit=None)) < 4:
        assert time.monotonic() < deadline, "prediction records were not written"
        time.sleep(0.05)
    (v2,) = audit.query(store, request_id="v2-id-1", deployment="cancer-prod")
    assert v2.data["outcome"] == "ok" and v2.data["version"] == 1 and v2.actor is None
    assert v2.data["latency_ms"] > 0 and len(v2.data["input_sha256"]) == 64
    (plain,) = audit.query(store, request_id="json-1")
    assert plain.data["outcome"] == "ok"
    records = audit.query(store, deployment="cancer-prod", kind="prediction")
    outcomes = [r.data["outcome"] for r in records]
    assert "client_error" in outcomes
    (private,) = audit.query(store, deployment="private", kind="prediction")
    assert private.actor == "viewer"  # who called, when the deployment needs a token
    admin = client("admin")
    found = admin.get("/api/audit", params={"request_id": "v2-id-1", "deployment": "cancer-prod"})
    found = found.json()
    assert [r["seq"] for r in found] == [v2.seq]
    assert admin.get("/api/audit/verify").json()["ok"] is True


def test_business_key_query_over_the_api(client, gov_server, cancer) -> None:
    admin = client("admin")
    set_policy(admin, gov_server, {"payload": "none", "keys": ["customer_id"]})
    http = client()
    for customer in (7, 8, 7):
        body = v2_body(cancer[0][:1], parameters={"customer_id": customer})
        assert http.post("/v2/models/cancer-prod/infer", json=body).status_code == 200
    deadline = time.monotonic() + 10
    while True:
        found = admin.get("/api/audit", params={"key": "customer_id=7"}).json()
        if len(found) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(found) == 2 and all(r["data"]["keys"] == {"customer_id": 7} for r in found)


def test_fail_closed_server_answers_503_when_the_queue_is_full(gov_registry, cancer) -> None:
    settings = make_settings(
        gov_registry.settings.home,
        database_url=gov_registry.settings.database_url,
        audit_predictions="fail-closed",
        audit_queue_records=0,
    )
    server = BackgroundServer(settings)
    with server, httpx.Client(base_url=server.url) as http:
        response = http.post("/v2/models/cancer-prod/infer", json=v2_body(cancer[0][:1]))
        assert response.status_code == 503 and "audit" in response.json()["error"]
    server.app.store.close()


def test_a_policy_that_redacts_a_business_key_is_a_400(client, gov_server) -> None:
    admin = client("admin")
    policy = {"inference": {"payload": "redact", "redact": ["ssn"], "keys": ["ssn"]}}
    refused = admin.patch("/api/deployments/cancer-prod/policy", json=policy)
    assert refused.status_code == 400, refused.text
    assert "'ssn' is both redacted and a business key" in refused.json()["error"]
    stored = gov_server.app.store.get_deployment("cancer-prod").inference
    assert stored.keys == [] and stored.redact == []


def test_a_request_id_with_a_nul_is_recorded_and_holds_up_no_other_record(
    store: SqlStore,
) -> None:
    """PostgreSQL text cannot hold NUL: a V2 id with one must not fail its batch, which the
    writer would put back and retry for ever, recording nothing more."""
    recorder = PredictionRecorder(store, lambda name: Deployment(InferencePolicy()))
    nul = REQUEST.replace(b'"req-1"', b'"req\\u0000-1"')
    recorder.record("churn-prod", 1, "ok", 0.01, nul, RESPONSE)
    recorder.record("churn-prod", 1, "ok", 0.01, REQUEST, RESPONSE)
    asyncio.run(recorder.flush())
    assert recorder.queued == 0
    records = audit.query(store, kind="prediction")
    assert [r.request_id for r in records] == ["req\ufffd-1", "req-1"]
    (found,) = audit.query(store, request_id="req\x00-1")  # found by the id the client sent
    assert found.seq == records[0].seq
    assert audit.verify(store).ok
