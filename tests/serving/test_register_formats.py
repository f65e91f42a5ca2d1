"""Registering TorchScript, SavedModel and GGUF versions over the management API, with real
model files made here; unsafe archives and pickles are refused with clear 4xx errors."""

from __future__ import annotations

import io
import json
import tarfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.runtimes.frameworks import require, scorer_savedmodel

OCTET = {"content-type": "application/octet-stream"}


def sample_header(name: str, rows: np.ndarray) -> str:
    tensor = {"name": name, "datatype": "FP32", "shape": list(rows.shape)}
    return json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]})


def infer(http: httpx.Client, deployment: str, name: str, rows: np.ndarray) -> dict[str, Any]:
    tensor = {"name": name, "datatype": "FP32", "shape": list(rows.shape)}
    body = {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}
    deadline = time.monotonic() + 20
    while True:  # the server reconciles to the new deployment within its interval
        response = http.post(f"/v2/models/{deployment}/infer", json=body)
        if response.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert response.status_code == 200, response.text
    return {out["name"]: out for out in response.json()["outputs"]}


def test_torchscript_is_registered_with_sample_rows_and_served(
    http: httpx.Client, tmp_path: Path
) -> None:
    torch = require("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; serving it is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(module.eval())
    path = tmp_path / "net.pt"
    scripted.save(str(path))
    rows = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)

    missing = http.post("/api/models/net/versions?format=torchscript", content=path.read_bytes(),
                        headers=OCTET)  # fmt: skip
    assert missing.status_code == 400 and "X-Slipway-Sample" in missing.json()["error"]
    # Detected without a format, like the command line; metadata travels as before.
    headers = {
        **OCTET,
        "x-slipway-sample": sample_header("input", rows[:2]),
        "x-slipway-metadata": json.dumps({"description": "two outputs"}),
    }
    created = http.post("/api/models/net/versions", content=path.read_bytes(), headers=headers)
    assert created.status_code == 201, created.text
    record = created.json()
    assert record["format"] == "torchscript" and record["meta"]["description"] == "two outputs"
    assert record["signature"]["inputs"] == [
        {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    ]
    assert record["signature"]["outputs"][0]["shape"] == [-1, 2]
    deployed = http.post("/api/deployments", json={"name": "net-prod", "model": "net"})
    assert deployed.status_code == 201, deployed.text
    outputs = infer(http, "net-prod", "input", rows)
    with torch.no_grad():
        expected = scripted(torch.from_numpy(rows)).numpy()
    np.testing.assert_allclose(
        np.asarray(outputs["output"]["data"]).reshape(6, 2), expected, rtol=1e-6
    )


def test_an_eager_torch_save_or_a_pickle_is_refused(http: httpx.Client, tmp_path: Path) -> None:
    torch = require("torch")
    eager = tmp_path / "eager.pt"
    torch.save(torch.nn.Linear(4, 2).state_dict(), str(eager))
    for query in ("", "?format=torchscript"):
        response = http.post(f"/api/models/eager/versions{query}", content=eager.read_bytes(),
                             headers=OCTET)  # fmt: skip
        assert response.status_code == 415, response.text
        assert "torch.jit.script" in response.json()["error"]
    import pickle

    for query in ("", "?format=gguf", "?format=torchscript"):
        response = http.post(f"/api/models/eager/versions{query}",
                             content=pickle.dumps({"weights": [1.0]}), headers=OCTET)  # fmt: skip
        assert response.status_code == 415 and "pickle" in response.json()["error"]
    assert http.get("/api/models/eager").status_code == 404


def savedmodel_dir(directory: Path) -> tuple[Path, Any]:
    return scorer_savedmodel(directory, seed=3)


def zipped(directory: Path, *, prefix: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for entry in sorted(directory.rglob("*")):  # directories too: SavedModel has assets/
            archive.write(entry, prefix + entry.relative_to(directory).as_posix())
    return buffer.getvalue()


def tarred(directory: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(directory, arcname=".")
    return buffer.getvalue()


def test_a_savedmodel_archive_is_unpacked_registered_and_served(
    http: httpx.Client, tmp_path: Path
) -> None:
    directory, module = savedmodel_dir(tmp_path)
    as_tar = tarred(directory)
    # A .tar.gz starts like a gzip-compressed pickle: without format=savedmodel it is refused,
    # and the error says what to add.
    unnamed = http.post("/api/models/scorer/versions", content=as_tar, headers=OCTET)
    assert unnamed.status_code == 415 and "format=savedmodel" in unnamed.json()["error"]
    by_query = http.post("/api/models/scorer/versions?format=savedmodel", content=as_tar,
                         headers=OCTET)  # fmt: skip
    assert by_query.status_code == 201, by_query.text
    # A zip with the directory as its single top-level folder, format named by header.
    by_header = http.post(
        "/api/models/scorer/versions",
        content=zipped(directory, prefix="scorer/"),
        headers={**OCTET, "x-slipway-format": "savedmodel"},
    )
    assert by_header.status_code == 201, by_header.text
    first, second = by_query.json(), by_header.json()
    assert first["format"] == second["format"] == "savedmodel"
    assert first["digest"] == second["digest"]  # the same directory packs to the same artifact
    assert first["signature"]["inputs"] == [
        {"name": "features", "datatype": "FP32", "shape": [-1, 4]}
    ]
    deployed = http.post("/api/deployments", json={"name": "scorer-prod", "model": "scorer"})
    assert deployed.status_code == 201, deployed.text
    rows = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32)
    outputs = infer(http, "scorer-prod", "features", rows)
    expected = module(rows).get("scores").numpy()
    np.testing.assert_allclose(np.asarray(outputs["scores"]["data"]).reshape(5, 3), expected,
                               rtol=1e-6)  # fmt: skip


def evil_tar(kind: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        body = b"\x08\x01"
        info = tarfile.TarInfo("saved_model.pb")
        info.size = len(body)
        archive.addfile(info, io.BytesIO(body))
        if kind == "traversal":
            info = tarfile.TarInfo("../../escaped.txt")
            info.size = 3
            archive.addfile(info, io.BytesIO(b"bad"))
        elif kind == "symlink":
            info = tarfile.TarInfo("variables")
            info.type, info.linkname = tarfile.SYMTYPE, "/etc"
            archive.addfile(info)
        elif kind == "hardlink":
            info = tarfile.TarInfo("copy.pb")
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
            archive.addfile(info)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        pytest.param("traversal", "leave the upload", id="dot-dot"),
        pytest.param("symlink", "a link", id="symlink"),
        pytest.param("hardlink", "a link", id="hardlink"),
    ],
)
def test_unsafe_savedmodel_archives_are_refused(
    http: httpx.Client, tmp_path: Path, kind: str, message: str
) -> None:
    require("tensorflow")
    response = http.post("/api/models/evil/versions?format=savedmodel", content=evil_tar(kind),
                         headers=OCTET)  # fmt: skip
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]
    assert http.get("/api/models/evil").status_code == 404


def test_unknown_formats_and_bad_samples_are_clear_errors(http: httpx.Client) -> None:
    unknown = http.post("/api/models/x/versions?format=pmml", content=b"<PMML/>", headers=OCTET)
    assert unknown.status_code == 415 and "torchscript" in unknown.json()["error"]
    not_archive = http.post("/api/models/x/versions?format=savedmodel", content=b"plain bytes",
                            headers=OCTET)  # fmt: skip
    assert not_archive.status_code == 400 and ".zip" in not_archive.json()["error"]
    bad_sample = http.post(
        "/api/models/x/versions?format=torchscript",
        content=b"PK\x03\x04",
        headers={**OCTET, "x-slipway-sample": "[1, 2"},
    )
    assert bad_sample.status_code == 400 and "X-Slipway-Sample" in bad_sample.json()["error"]
    assert http.get("/api/models/x").status_code == 404


def test_gguf_is_detected_and_registered(http: httpx.Client, tmp_path: Path) -> None:
    require("llama_cpp")
    require("gguf")
    from tests.runtimes.tiny_llama import write_tiny_llama

    data = write_tiny_llama(tmp_path / "tiny.gguf").read_bytes()
    created = http.post("/api/models/tiny/versions", content=data, headers=OCTET)
    assert created.status_code == 201, created.text
    assert created.json()["format"] == "gguf"
    assert [s["name"] for s in created.json()["signature"]["inputs"]] == ["prompt"]
    mismatch = http.post("/api/models/tiny/versions?format=torchscript", content=data,
                         headers=OCTET)  # fmt: skip
    assert mismatch.status_code == 415 and "not a torchscript model" in mismatch.json()["error"]


def test_the_sdk_uploads_a_savedmodel_directory(http: httpx.Client, tmp_path: Path) -> None:
    from slipway.client import Client

    directory, _ = savedmodel_dir(tmp_path)
    token = http.headers["authorization"].removeprefix("Bearer ")
    client = Client(str(http.base_url), token=token)
    try:
        version = client.register("sdk-scorer", directory, tags={"source": "sdk"})
    finally:
        client.close()
    assert version["format"] == "savedmodel" and version["number"] == 1
    assert version["signature"]["inputs"][0]["name"] == "features"
