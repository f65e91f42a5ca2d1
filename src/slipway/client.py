"""Python SDK over Slipway's HTTP API.

from slipway import Client
client = Client("http://127.0.0.1:8000")
client.register("churn", "model.onnx", metrics={"auc": 0.91})
client.deploy("churn-prod", "churn", version=1)
client.predict("churn-prod", [[0.1, 0.2, ...]])
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
import msgspec

from slipway.errors import Overloaded, SlipwayError


class ApiError(SlipwayError):
    """The server answered with an error; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"{message} (HTTP {status})")


class Client:
    """A thin client: every method is one HTTP call and returns decoded JSON."""

    def __init__(
        self, url: str = "http://127.0.0.1:8000", token: str | None = None, *, timeout: float = 30.0
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise SlipwayError(f"cannot reach Slipway at {self._http.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            if response.status_code == 503 and "retry-after" in response.headers:
                raise Overloaded(message, float(response.headers["retry-after"]))
            raise ApiError(response.status_code, message)
        return response.json()

    # -- management -----------------------------------------------------------------------

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/models")

    def model(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/models/{name}")

    def version(self, model: str, version: int | str = "latest") -> dict[str, Any]:
        return self._call("GET", f"/api/models/{model}/versions/{version}")

    def register(
        self,
        model: str,
        path: str | Path,
        *,
        format: str | None = None,
        sample: dict[str, Any] | None = None,
        **meta: Any,
    ) -> dict[str, Any]:
        """Upload a model file as the next version of ``model``; ``meta`` as in VersionMeta.

        ONNX, TorchScript and GGUF files are recognised; ``format`` names one explicitly. A
        directory is a TensorFlow SavedModel: it is sent as a tar.gz archive. ``sample``: a V2
        infer body of sample rows (TorchScript needs one to learn its signature).
        """
        source = Path(path)
        if source.is_dir():
            data, format = _tar_gz(source), format or "savedmodel"
        else:
            data = source.read_bytes()
        headers = {"content-type": "application/octet-stream"}
        if format:
            headers["x-slipway-format"] = format
        if sample is not None:
            headers["x-slipway-sample"] = _header_json(sample)
        if meta:
            headers["x-slipway-metadata"] = _header_json(meta)
        return self._call("POST", f"/api/models/{model}/versions", content=data, headers=headers)

    def deployments(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/deployments")

    def deployment(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/api/deployments/{name}")

    def deploy(
        self, name: str, model: str, version: int | None = None, **batching: Any
    ) -> dict[str, Any]:
        """Create deployment ``name`` serving ``model@version`` (latest when None), or move it."""
        existing = {d["name"] for d in self.deployments()}
        if name in existing:
            body: dict[str, Any] = {"version": version or self.version(model)["number"]}
            if batching:
                body["batching"] = batching
            return self._call("PATCH", f"/api/deployments/{name}", json=body)
        body = {"name": name, "model": model, "version": version}
        if batching:
            body["batching"] = batching
        return self._call("POST", "/api/deployments", json=body)

    def events(self, subject: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit}
        if subject:
            params["subject"] = subject
        return self._call("GET", "/api/events", params=params)

    # -- governance (docs/governance.md) -------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The token's holder and role."""
        return self._call("GET", "/api/whoami")

    def request_promotion(
        self, deployment: str, model: str, version: int | None = None, comment: str = ""
    ) -> dict[str, Any]:
        """Ask for ``model@version`` (latest when None) to be promoted on ``deployment``."""
        body = {"deployment": deployment, "model": model, "version": version, "comment": comment}
        return self._call("POST", "/api/approvals", json=body)

    def approvals(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/api/approvals", params={"status": status} if status else {})

    def approval(self, request_id: int) -> dict[str, Any]:
        """One promotion request with its evidence bundle and decisions."""
        return self._call("GET", f"/api/approvals/{request_id}")

    def approve(self, request_id: int, comment: str = "") -> dict[str, Any]:
        return self._call("POST", f"/api/approvals/{request_id}/approve", json={"comment": comment})

    def reject(self, request_id: int, comment: str = "") -> dict[str, Any]:
        return self._call("POST", f"/api/approvals/{request_id}/reject", json={"comment": comment})

    def audit(self, **filters: Any) -> list[dict[str, Any]]:
        """Audit records: ``request_id``, ``deployment``, ``since``, ``until``, ``key``
        (``"field=value"``), ``kind``, ``after``, ``limit``."""
        return self._call("GET", "/api/audit", params=filters)

    # -- data plane -------------------------------------------------------------------------

    def predict(self, deployment: str, instances: Any) -> dict[str, Any]:
        """Plain JSON prediction: rows (lists, or a 2-D numpy array) or feature dicts."""
        return self._call("POST", f"/predict/{deployment}", **_json_body({"instances": instances}))

    def infer(
        self,
        model: str,
        inputs: list[dict[str, Any]] | Mapping[str, Any],
        *,
        version: int | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Open Inference Protocol V2 infer. ``inputs``: V2 tensors (``{"name", "shape",
        "datatype", "data"}``), or a mapping of input name to array, whose shape and datatype
        come from the array. ``extra``: other request fields (``id``, ``outputs``,
        ``parameters``)."""
        if isinstance(inputs, Mapping):
            inputs = [_tensor(name, value) for name, value in inputs.items()]
        path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
        return self._call("POST", path, **_json_body({"inputs": inputs, **extra}))

    def ready(self) -> bool:
        """True when the server answers ``GET /v2/health/ready`` with 200; False when it
        answers otherwise or cannot be reached (yet), so a caller can poll it."""
        try:
            response = self._http.get("/v2/health/ready")
        except httpx.HTTPError:
            return False
        return response.status_code == 200


def _json_body(value: Any) -> dict[str, Any]:
    """``value`` as a JSON request body, numpy arrays and scalars included (as lists and
    numbers), wherever they are."""
    body = msgspec.json.encode(value, enc_hook=_numpy_to_builtin)
    return {"content": body, "headers": {"content-type": "application/json"}}


def _numpy_to_builtin(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    raise NotImplementedError(f"cannot send a {type(value).__name__} as JSON")


def _tensor(name: str, value: Any) -> dict[str, Any]:
    """A V2 tensor for ``value`` (an array or anything numpy reads as one)."""
    import numpy as np

    from slipway.runtimes.base import v2_datatype

    array = np.asarray(value)
    try:
        datatype = v2_datatype(array.dtype)
    except KeyError:
        raise SlipwayError(
            f"input {name!r}: numpy dtype {array.dtype} has no V2 datatype"
        ) from None
    data = array.astype(str) if datatype == "BYTES" else array
    return {"name": name, "shape": list(array.shape), "datatype": datatype, "data": data.ravel()}


def _header_json(value: Any) -> str:
    """``value`` as JSON for a header: HTTP headers carry ASCII, so other characters go as
    ``\\u`` escapes (a description "modèle" arrives intact)."""
    import json

    return json.dumps(msgspec.to_builtins(value), ensure_ascii=True, separators=(",", ":"))


def _tar_gz(directory: Path) -> bytes:
    """``directory``'s regular files and folders as a gzipped tar (no links: the server refuses
    them), paths relative to it."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for item in sorted(directory.rglob("*")):
            if item.is_symlink():
                continue
            archive.add(item, arcname=str(item.relative_to(directory)), recursive=False)
    return buffer.getvalue()
