"""Safe by default, over real HTTP: traversal forms get 400 and touch nothing outside the store,
pickles and other code-carrying bodies get 415 and never run, error bodies leak no internals,
and shell metacharacters in metadata stay inert text."""

from __future__ import annotations

import gzip
import http.client
import os
import pickle
import subprocess
import sys
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import msgspec
import pytest
from skl2onnx import to_onnx

TRAVERSALS = [
    "../../etc/passwd",
    "..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2E%2E%2Fetc",
    "%252e%252e%252fetc%252fpasswd",
    "..%255c..%255cwindows",
    "..%5c..%5cwindows",
    "..\\..\\windows",
    "a%00b",
    "%00",
    "/etc/passwd",
    "%2fetc%2fpasswd",
    "....//....//etc",
    "./cancer",
    "cancer/..",
    "cancer%2f..%2f..",
]
TEMPLATES = [
    "GET /api/models/{}",
    "GET /api/models/{}/versions",
    "POST /api/models/{}/versions",
    "GET /api/models/cancer/versions/{}",
    "GET /api/deployments/{}",
    "PATCH /api/deployments/{}",
    "DELETE /api/deployments/{}",
    "GET /api/models/cancer/versions/{}/reports",
]
LEAKS = ["Traceback", 'File "', ".py", "sqlalchemy", "psycopg", "sqlite3", "/tmp", "site-packages"]


def send_raw(url: str, method: str, target: str, body: bytes = b"", **headers: str):
    """A request whose target goes out byte for byte (httpx would normalise ``..``)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name.replace("_", "-"), value)
        conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file() and skip not in p.parents
    }


@pytest.fixture
def onnx_bytes(iris) -> bytes:
    estimator, x = iris
    return to_onnx(estimator, x[:1], options={id(estimator): {"zipmap": False}}).SerializeToString()


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    data = load_iris()
    x = data.data.astype("float32")
    return LogisticRegression(max_iter=1000).fit(x, data.target), x


def test_traversal_forms_are_400_and_touch_nothing(
    gov_server, gov_registry, users, tmp_path, onnx_bytes
) -> None:
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("untouched")
    home = gov_registry.settings.home
    before = tree(tmp_path, home)
    models = [m.name for m in gov_registry.store.list_models()]
    auth = {"authorization": f"Bearer {users['admin']}"}
    for form in TRAVERSALS:
        for template in TEMPLATES:
            method, path = template.split(" ")
            target = path.format(form)
            body, headers = b"", dict(auth)
            if template.startswith("POST"):
                body, headers["content_type"] = onnx_bytes, "application/octet-stream"
            elif method == "PATCH":
                body, headers["content_type"] = b'{"version": 2}', "application/json"
            status, answer = send_raw(gov_server.url, method, target, body, **headers)
            assert status == 400, (method, target, status, answer)
            assert "error" in msgspec.json.decode(answer)
    assert sentinel.read_text() == "untouched"
    assert tree(tmp_path, home) == before  # nothing written or changed outside the home
    assert [m.name for m in gov_registry.store.list_models()] == models
    stored = sorted(p.name for p in (home / "artifacts").iterdir())
    assert stored in (["sha256", "tmp"], ["sha256"])


@pytest.mark.parametrize(
    "name",
    ["../sentinel", "..", "a/b", "a\\b", "/abs", "x\x00y", "$(touch pwned)", "a;rm -rf x", "`id`"],
)
def test_names_in_bodies_are_refused(client, name) -> None:
    deployer = client("deployer")
    response = deployer.post("/api/deployments", json={"name": name, "model": "cancer"})
    assert response.status_code == 400 and "invalid deployment name" in response.json()["error"]


class Canary:
    """A pickle that creates a directory when it is loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def canaries(marker: Path) -> dict[str, bytes]:
    raw = pickle.dumps(Canary(marker), protocol=4)
    forms = {f"pickle-{p}": pickle.dumps(Canary(marker), protocol=p) for p in (2, 3, 4, 5)}
    forms.update({"joblib-zlib": zlib.compress(raw), "gzip": gzip.compress(raw)})
    return forms


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [
        ("POST", "/api/models/evil/versions", "application/octet-stream"),
        ("POST", "/api/models/evil/versions", "application/onnx"),
        ("POST", "/api/models/evil/versions", "application/python-pickle"),
        ("POST", "/api/models/evil/versions", "application/x-pickle"),
        ("POST", "/api/deployments", "application/octet-stream"),
        ("PUT", "/api/models/cancer/policy", "application/python-pickle"),
        ("POST", "/v2/models/cancer-prod/infer", "application/json"),
        ("POST", "/v2/models/cancer-prod/infer", "application/octet-stream"),
        ("POST", "/predict/cancer-prod", "application/json"),
        ("POST", "/v1/models/cancer-prod:predict", "application/json"),
        ("POST", "/mlflow/cancer-prod/invocations", "application/json"),
        ("POST", "/mlflow/cancer-prod/invocations", "application/python-pickle"),
    ],
)
def test_pickles_are_415_on_every_route_and_never_run(
    client, tmp_path, method, path, content_type
) -> None:
    marker = tmp_path / "pwned"
    admin = client("admin")
    for form, body in canaries(marker).items():
        response = admin.request(method, path, content=body, headers={"content-type": content_type})
        assert response.status_code == 415, (form, response.status_code, response.text)
        assert "error" in response.json()
    assert not marker.exists()
    assert admin.get("/api/models/evil").status_code == 404


def test_onnx_with_escaping_external_data_is_refused_over_http(
    client, tmp_path, gov_registry
) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sentinel = tmp_path / "secret.bin"
    sentinel.write_bytes(np.arange(4, dtype=np.float32).tobytes())
    weight = numpy_helper.from_array(np.zeros(4, dtype=np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in {"location": "../../../secret.bin", "offset": "0", "length": "16"}.items():
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "escape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    response = client("deployer").post(
        "/api/models/escape/versions",
        content=model.SerializeToString(),
        headers={"content-type": "application/octet-stream"},
    )
    assert response.status_code == 400, response.text
    assert str(tmp_path) not in response.text
    assert gov_registry.store.list_models()[-1].name != "escape"
    assert onnx  # the model really points outside its directory


def test_error_bodies_leak_no_internals(client, gov_registry, gov_server) -> None:
    store, artifacts = gov_registry.store, gov_registry.artifacts
    version = store.get_version("cancer", 2)
    store.create_deployment("broken", "cancer", 2)
    artifacts.path(version.digest).unlink()  # its artifact disappears from the store
    admin, anonymous = client("admin"), client()
    responses = [
        anonymous.get("/api/models"),
        admin.get("/api/models/ghost"),
        admin.get("/api/nowhere"),
        admin.post("/api/deployments", content=b"{nope",
                   headers={"content-type": "application/json"}),
        admin.post("/api/deployments", json={"name": "x", "model": "cancer", "version": 99}),
        admin.post("/v2/models/cancer-prod/infer", content=b"\x00\x01garbage"),
        admin.post("/v2/models/cancer-prod/infer", json={"inputs": [{"name": "input"}]}),
        admin.post("/v2/models/ghost/infer", json={}),
        admin.get("/v2/models/broken"),
        admin.post("/api/models/m/versions", content=b"not onnx",
                   headers={"content-type": "application/octet-stream"}),
        admin.patch("/api/deployments/cancer-prod", json={"version": "one"}),
        admin.get("/api/approvals/abc"),
    ]  # fmt: skip
    import time

    deadline = time.monotonic() + 10
    while "broken" not in (ready := anonymous.get("/v2/health/ready")).text:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    responses.append(ready)
    home = str(gov_registry.settings.home)
    for response in responses:
        assert response.status_code >= 400, response.request.url
        assert response.headers["content-type"].startswith("application/json")
        text = response.text
        assert home not in text and str(artifacts.root) not in text, text
        for leak in LEAKS:
            assert leak not in text, (response.request.url, text)
    assert "broken" in ready.json()["reasons"][0]


@pytest.mark.parametrize("number", [2**31, 2**63, 10**20], ids=["int4", "int8", "huge"])
def test_numbers_beyond_the_database_range_are_4xx(client, number: int) -> None:
    """A version, request id, token id or audit position that no column can hold is the
    caller's mistake (4xx with a JSON error), never a database overflow (500)."""
    admin = client("admin")
    responses = [
        admin.get(f"/api/models/cancer/versions/{number}"),
        admin.get(f"/api/models/cancer/versions/{number}/reports"),
        admin.post(f"/api/models/cancer/versions/{number}/reports",
                   json={"kind": "check", "name": "x", "passed": True}),
        admin.post("/api/deployments", json={"name": "x", "model": "cancer", "version": number}),
        admin.patch("/api/deployments/cancer-prod", json={"version": number}),
        admin.post("/api/deployments/cancer-prod/rollout", json={"version": number}),
        admin.post("/api/approvals",
                   json={"deployment": "cancer-prod", "model": "cancer", "version": number}),
        admin.get(f"/api/approvals/{number}"),
        admin.post(f"/api/approvals/{number}/approve", json={}),
        admin.delete(f"/api/tokens/{number}"),
    ]  # fmt: skip
    wrong = [
        (r.request.method, str(r.request.url), r.status_code)
        for r in responses
        if not 400 <= r.status_code < 500 or "error" not in r.json()
    ]
    assert wrong == []
    assert admin.get("/api/deployments/cancer-prod").json()["version"] == 1
    # No record follows a position past the largest sequence number: an empty page.
    after = admin.get("/api/audit", params={"after": number})
    assert after.status_code == 200 and after.json() == []


def test_shell_metacharacters_stay_text(tmp_path, client, onnx_bytes) -> None:
    marker = tmp_path / "shell-ran"
    evil = f"$(touch {marker}); `touch {marker}` | touch {marker} && touch {marker}"
    meta = {"description": evil, "tags": {"note": evil}, "hyperparameters": {"cmd": evil}}
    response = client("deployer").post(
        "/api/models/shellsafe/versions",
        content=onnx_bytes,
        headers={
            "content-type": "application/octet-stream",
            "x-slipway-metadata": msgspec.json.encode(meta).decode(),
        },
    )
    assert response.status_code == 201, response.text
    stored = client("viewer").get("/api/models/shellsafe/versions/1").json()["meta"]
    assert stored["description"] == evil and stored["tags"]["note"] == evil
    assert stored["hyperparameters"]["cmd"] == evil
    # The CLI shows it, and refuses such a model name outright.
    env = {**os.environ, "SLIPWAY_DATABASE_URL": "", "NO_COLOR": "1", "COLUMNS": "300"}
    home = tmp_path / "cli-home"
    env["SLIPWAY_HOME"] = str(home)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(onnx_bytes)
    done = subprocess.run(
        [sys.executable, "-m", "slipway.cli", "models", "register", "m", str(onnx_file),
         "--description", evil, "--tag", f"note={evil}"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    for name in (f"x;touch {marker}", f"$(touch {marker})"):
        refused = subprocess.run(
            [sys.executable, "-m", "slipway.cli", "models", "register", name, str(onnx_file)],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 2 and "invalid model name" in refused.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("user", "path", "params", "status", "says"),
    [
        pytest.param("viewer", "/api/approvals", {"status": "aproved"}, 400, "unknown status",
                     id="approval-status"),
        pytest.param("viewer", "/api/approvals", {"deployment": "../x"}, 400, "invalid",
                     id="approval-deployment"),
        pytest.param("admin", "/api/audit", {"kind": "predictions"}, 400, "unknown kind",
                     id="audit-kind"),
        pytest.param("admin", "/api/tokens", {"user": "ghost"}, 404, "not found",
                     id="tokens-of-nobody"),
        pytest.param("admin", "/api/tokens", {"user": "../x"}, 400, "invalid", id="tokens-user"),
    ],
)  # fmt: skip
def test_query_filters_are_checked_like_the_clis(client, user, path, params, status, says) -> None:
    """A filter that can match nothing because it is misspelt is the caller's mistake, as the
    CLI's `approvals list --status`, `audit query --kind` and `tokens list --user` say; an empty
    200 would read as 'there is none'."""
    response = client(user).get(path, params=params)
    assert response.status_code == status, response.text
    assert says in response.json()["error"]
    empty = {name: "" for name in params}  # what an HTTP client sends for a None
    assert client(user).get(path, params=empty).status_code == 200
