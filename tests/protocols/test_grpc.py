"""V2 gRPC with the generated grpcio client stubs against a real server, beside REST."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest

from slipway.local import Registry
from slipway.server import BackgroundServer
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from slipway.settings import Settings
from tests.serving.conftest import make_settings


@pytest.fixture
def grpc_settings(tmp_path) -> Settings:
    return make_settings(tmp_path / "home", reconcile_interval_s=0.2, grpc_port=0)


@pytest.fixture
def grpc_server(grpc_settings: Settings, cancer, cancer_models) -> Iterator[BackgroundServer]:
    x, _ = cancer
    with Registry(grpc_settings) as registry:
        for estimator in cancer_models:
            registry.register_sklearn("cancer", estimator, x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    with BackgroundServer(grpc_settings) as server:
        yield server


@pytest.fixture
def stub(grpc_server: BackgroundServer) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    assert grpc_server.app.grpc_port
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.app.grpc_port}") as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def _fp32_request(rows: np.ndarray, *, raw: bool = False, **fields) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="cancer-prod", **fields)
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(rows.shape))
    if raw:
        request.raw_input_contents.append(rows.astype("<f4").tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    return request


def test_health_and_metadata(stub):
    assert stub.ServerLive(pb.ServerLiveRequest()).live
    assert stub.ServerReady(pb.ServerReadyRequest()).ready
    meta = stub.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "slipway"
    assert stub.ModelReady(pb.ModelReadyRequest(name="cancer-prod")).ready
    model = stub.ModelMetadata(pb.ModelMetadataRequest(name="cancer-prod"))
    assert model.platform == "onnx"
    assert [t.name for t in model.inputs] == ["input"]
    assert list(model.inputs[0].shape) == [-1, 30]
    assert {t.name for t in model.outputs} == {"label", "probabilities"}
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelReady(pb.ModelReadyRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("raw", [pytest.param(False, id="typed"), pytest.param(True, id="raw")])
def test_model_infer_matches_the_model(stub, cancer, cancer_models, raw: bool):
    x, _ = cancer
    rows = x[:6]
    response = stub.ModelInfer(_fp32_request(rows, raw=raw, id="req-1"))
    assert response.id == "req-1"
    assert response.model_version == "1"
    by_name = {o.name: (i, o) for i, o in enumerate(response.outputs)}
    index, label = by_name["label"]
    assert label.datatype == "INT64"
    assert list(label.shape) == [6]
    if raw:
        values = np.frombuffer(response.raw_output_contents[index], dtype="<i8").tolist()
    else:
        values = list(label.contents.int64_contents)
    assert values == cancer_models[0].predict(rows).tolist()


def test_requested_outputs_and_explicit_version(stub, cancer, cancer_models):
    x, _ = cancer
    request = _fp32_request(x[:20], model_version="1")
    request.outputs.add(name="probabilities")
    response = stub.ModelInfer(request)
    assert [o.name for o in response.outputs] == ["probabilities"]
    got = np.array(response.outputs[0].contents.fp32_contents).reshape(20, 2)
    np.testing.assert_allclose(got, cancer_models[0].predict_proba(x[:20]), atol=1e-4)


@pytest.mark.parametrize(
    ("mutate", "code", "fragment"),
    [
        pytest.param(
            lambda r: r.inputs[0].shape.__setitem__(0, 7), "INVALID_ARGUMENT", "needs", id="count"
        ),
        pytest.param(
            lambda r: setattr(r.inputs[0], "datatype", "FP99"),
            "INVALID_ARGUMENT",
            "datatype",
            id="datatype",
        ),
        pytest.param(lambda r: setattr(r, "model_name", "nope"), "NOT_FOUND", "nope", id="model"),
        pytest.param(
            lambda r: setattr(r, "model_version", "x"), "INVALID_ARGUMENT", "version", id="version"
        ),
        pytest.param(
            lambda r: r.outputs.add(name="nope"), "INVALID_ARGUMENT", "unknown output", id="output"
        ),
    ],
)
def test_bad_requests_get_clear_errors(stub, cancer, mutate, code, fragment):
    x, _ = cancer
    request = _fp32_request(x[:2])
    mutate(request)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == getattr(grpc.StatusCode, code)
    assert fragment in caught.value.details()
    assert stub.ServerLive(pb.ServerLiveRequest()).live  # still serving


def _tensor_request(datatype: str, field: str | None, values: list, raw: bytes | None = None):
    request = pb.ModelInferRequest(model_name="cancer-prod")
    tensor = request.inputs.add(name="input", datatype=datatype, shape=[1, 30])
    if raw is not None:
        request.raw_input_contents.append(raw)
    else:
        getattr(tensor.contents, field).extend(values)
    return request


_NAN_ROW = [float("nan")] + [1.0] * 29
_INF_ROW = [float("-inf")] + [1.0] * 29


@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(_tensor_request("FP32", "fp32_contents", _NAN_ROW), id="fp32-nan"),
        pytest.param(_tensor_request("FP32", "fp32_contents", _INF_ROW), id="fp32-inf"),
        pytest.param(_tensor_request("FP64", "fp64_contents", _NAN_ROW), id="fp64-nan"),
        pytest.param(
            _tensor_request("FP32", None, [], np.array(_NAN_ROW, dtype="<f4").tobytes()),
            id="raw-fp32-nan",
        ),
        pytest.param(
            _tensor_request("FP16", None, [], np.array(_INF_ROW, dtype="<f2").tobytes()),
            id="raw-fp16-inf",
        ),
        pytest.param(_tensor_request("INT8", "int_contents", [1000] * 30), id="int8-overflow"),
        pytest.param(_tensor_request("INT16", "int_contents", [-40000] * 30), id="int16-overflow"),
        pytest.param(_tensor_request("UINT8", "uint_contents", [300] * 30), id="uint8-overflow"),
    ],
)
def test_nan_infinity_and_out_of_range_values_are_refused(stub, request_):
    """As on REST: NaN and infinity, and integers that do not fit the datatype (typed contents
    carry INT8/INT16 in 32-bit fields), are INVALID_ARGUMENT, not a silent wrap or a null answer."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request_)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert "input 'input'" in caught.value.details()
    assert stub.ModelInfer(_tensor_request("INT8", "int_contents", [1] * 30)).outputs


@pytest.mark.parametrize("version", ["abc", "-1", "0", "+1", " 1", "1_0"])
def test_a_version_that_is_not_a_plain_number_is_invalid_argument(stub, cancer, version):
    """As REST's 400; ModelReady answered ready=false for it, ModelInfer read "1_0" as 10."""
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelReady(pb.ModelReadyRequest(name="cancer-prod", version=version))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(_fp32_request(cancer[0][:1], model_version=version))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "version" in caught.value.details()
    assert stub.ModelReady(pb.ModelReadyRequest(name="cancer-prod", version="1")).ready


def test_raw_and_typed_contents_for_one_input_are_refused(stub, cancer):
    """The protocol allows one or the other; with both, the raw bytes won without a word."""
    request = _fp32_request(cancer[0][:1], raw=True)
    request.inputs[0].contents.fp32_contents.extend([0.0] * 30)
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "both" in caught.value.details()


def test_raw_bytes_contents_are_length_prefixed(stub):
    tensor = pb.ModelInferRequest.InferInputTensor(name="input", datatype="BYTES", shape=[1])
    request = pb.ModelInferRequest(model_name="cancer-prod", inputs=[tensor])
    request.raw_input_contents.append(struct.pack("<I", 10) + b"abc")  # claims 10, holds 3
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "overruns" in caught.value.details()


def test_limits_refused_on_rest_are_refused_on_grpc(tmp_path, cancer, cancer_models):
    """Same settings, same refusals: row limit, body size limit, queue limit."""
    x, _ = cancer
    settings = make_settings(tmp_path / "home", grpc_port=0, max_rows=4, max_body_bytes=2000)
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
    rows_5 = x[:5]  # over max_rows
    rows_3 = x[:3]  # 360 bytes of FP32: under both limits
    big = np.repeat(x[:1], 4, axis=0).astype(np.float64)  # 4 rows, 960 bytes raw, JSON > 2000
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.app.grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        rest_rows = http.post("/v1/models/cancer-prod:predict", json={"instances": rows_5.tolist()})
        with pytest.raises(grpc.RpcError) as grpc_rows:
            stub.ModelInfer(_fp32_request(rows_5))
        rest_ok = http.post("/v1/models/cancer-prod:predict", json={"instances": rows_3.tolist()})
        grpc_ok = stub.ModelInfer(_fp32_request(rows_3, raw=True))
        rest_big = http.post("/v1/models/cancer-prod:predict", json={"instances": big.tolist()})
        huge = _fp32_request(np.zeros((4, 600), dtype=np.float32))  # 9.6 kB > max_body_bytes
        with pytest.raises(grpc.RpcError) as grpc_big:
            stub.ModelInfer(huge)
        channel.close()
    assert rest_rows.status_code == 413
    assert grpc_rows.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "rows" in grpc_rows.value.details()
    assert rest_ok.status_code == 200
    assert [o.name for o in grpc_ok.outputs][0] == "label"
    assert rest_big.status_code == 413
    assert grpc_big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_is_off_by_default(server):
    assert server.app.grpc_server is None
    assert server.app.grpc_port is None


def _ok_requests(http: httpx.Client) -> float:
    total = 0.0
    for line in http.get("/metrics").text.splitlines():
        if line.startswith("slipway_requests_total{") and 'outcome="ok"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_count_grpc_requests(stub, grpc_server, cancer):
    x, _ = cancer
    with httpx.Client(base_url=grpc_server.url) as http:
        before = _ok_requests(http)
        stub.ModelInfer(_fp32_request(x[:2]))
        stub.ModelInfer(_fp32_request(x[:3], raw=True))
        assert _ok_requests(http) == before + 2
