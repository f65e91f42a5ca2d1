"""Every protocol goes through the same token check: refused on REST means refused on gRPC."""

from __future__ import annotations

import grpc
import httpx
import pytest

from slipway.governance.identities import bootstrap_admin
from slipway.local import Registry
from slipway.registry.records import InferencePolicy
from slipway.server import BackgroundServer
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from slipway.serving.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.serving.conftest import make_settings


def _request(rows) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="cancer-prod")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[len(rows), len(rows[0])])
    tensor.contents.fp32_contents.extend(v for row in rows for v in row)
    return request


@pytest.mark.parametrize(
    "token", [pytest.param(None, id="no-token"), pytest.param("slw_bad", id="bad-token")]
)
def test_a_private_deployment_refuses_every_protocol_without_a_valid_token(
    tmp_path, cancer, cancer_models, token
):
    x, _ = cancer
    settings = make_settings(tmp_path / "home", grpc_port=0)
    with Registry(settings) as registry:
        registry.register_sklearn("cancer", cancer_models[0], x)
        registry.store.create_deployment("cancer-prod", "cancer", 1)
        registry.store.update_deployment("cancer-prod", inference=InferencePolicy(anonymous=False))
        issued = bootstrap_admin(registry.store)
    assert issued is not None
    rows = x[:2].tolist()
    headers = {} if token is None else {"authorization": f"Bearer {token}"}
    good = {"authorization": f"Bearer {issued.token}"}
    with BackgroundServer(settings) as server, httpx.Client(base_url=server.url) as http:
        channel = grpc.insecure_channel(f"127.0.0.1:{server.app.grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        refused = [
            http.post("/v1/models/cancer-prod:predict", json={"instances": rows}, headers=headers),
            http.post("/invocations", json={"inputs": rows}, headers=headers),
            http.post("/mlflow/cancer-prod/invocations", json={"inputs": rows}, headers=headers),
        ]
        metadata = tuple(headers.items())
        with pytest.raises(grpc.RpcError) as grpc_refused:
            stub.ModelInfer(_request(rows), metadata=metadata)
        allowed_rest = http.post(
            "/v1/models/cancer-prod:predict", json={"instances": rows}, headers=good
        )
        allowed_grpc = stub.ModelInfer(_request(rows), metadata=tuple(good.items()))
        channel.close()
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert grpc_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert allowed_rest.status_code == 200
    assert (
        list(allowed_grpc.outputs[0].contents.int64_contents)
        == cancer_models[0].predict(x[:2]).tolist()
    )
