"""Plain records the store returns: immutable, serializable with msgspec, no ORM attached."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec


class TensorSpec(msgspec.Struct, frozen=True):
    """One named input or output: V2 datatype (FP32, INT64, BYTES, ...) and shape (-1 = any)."""

    name: str
    datatype: str
    shape: list[int]


class Signature(msgspec.Struct, frozen=True):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class NumericProfile(msgspec.Struct, frozen=True, tag="numeric"):
    """Reference distribution of one numeric feature: quantile bin edges and their counts."""

    name: str
    count: int
    mean: float
    std: float
    min: float
    max: float
    quantiles: list[float]  # edges at 0, 0.1, ..., 1.0
    edges: list[float]  # histogram bin edges (len = len(counts) + 1)
    counts: list[int]


class CategoricalProfile(msgspec.Struct, frozen=True, tag="categorical"):
    name: str
    count: int
    frequencies: dict[str, int]


FeatureProfile = NumericProfile | CategoricalProfile


class Profile(msgspec.Struct, frozen=True):
    """Reference profile of the training data (inputs) and of the model's training outputs."""

    rows: int
    features: list[FeatureProfile]
    predictions: list[FeatureProfile] = []


class VersionMeta(msgspec.Struct, frozen=True):
    """What a user tells us about a version at registration."""

    description: str = ""
    training_data: str | None = None  # a reference: path, URL, table name
    training_data_sha256: str | None = None
    hyperparameters: dict[str, Any] = {}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}


class NewVersion(msgspec.Struct, frozen=True, kw_only=True):
    """A version to record (:meth:`SqlStore.register_versions`): its artifact is in the artifact
    store under ``digest`` already. ``number`` None takes the model's next number."""

    model: str
    format: str
    digest: str
    size: int
    signature: Signature
    meta: VersionMeta = VersionMeta()
    profile: Profile | None = None
    model_description: str = ""  # when the model is created by this version
    number: int | None = None


class ModelRecord(msgspec.Struct, frozen=True):
    name: str
    description: str
    created_at: dt.datetime
    latest_version: int | None = None


class VersionRecord(msgspec.Struct, frozen=True):
    model: str
    number: int
    format: str  # "onnx", ...
    digest: str  # sha256 hex of the artifact
    size: int
    signature: Signature
    meta: VersionMeta
    profile: Profile | None
    created_at: dt.datetime
    created_by: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.model}@{self.number}"


class BatchingConfig(msgspec.Struct, frozen=True):
    """Adaptive batching per loaded version; max_batch_size=1 turns it off."""

    max_batch_size: int = 32
    max_batch_delay_ms: float = 2.0
    max_queue_rows: int = 8192


class RoutingRule(msgspec.Struct, frozen=True):
    """Requests whose header ``header`` (or request field ``field``: a top-level key of the JSON
    body, or of V2 ``parameters``) equals ``equals`` go to ``arm`` ("stable"/"candidate")."""

    equals: str
    arm: str = "candidate"
    header: str | None = None
    field: str | None = None


class TrafficPolicy(msgspec.Struct, frozen=True):
    """How a deployment splits traffic while a rollout runs (see :mod:`slipway.rollout`).

    ``weight`` is the candidate's share in percent. ``routing_key`` names a request header (or
    ``routing_field`` a request field) whose stable hash picks the arm (sticky per user);
    without either each request draws at random.
    ``shadow`` receives a mirrored ``shadow_fraction`` of requests off the request path.
    """

    strategy: str  # "canary", "bluegreen", "ab", "shadow"
    rollout_id: int
    candidate: int | None = None
    weight: float = 0.0
    routing_key: str | None = None
    rules: list[RoutingRule] = []
    shadow: int | None = None
    routing_field: str | None = None
    sample_inputs: bool = False  # the analysis checks input drift: collect input samples
    shadow_fraction: float = 0.0
    segment_header: str | None = None


class InferencePolicy(msgspec.Struct, frozen=True):
    """Who may call a deployment's inference routes, and what the audit log keeps of each call.

    ``anonymous``: inference needs no token (the default), or a valid token of any role.
    ``payload``: what each prediction's audit record keeps of the input and output: ``"hash"``
    (sha256 of each; the default), ``"full"``, ``"redact"`` (full, the ``redact`` fields
    replaced), ``"sample"`` (full for a ``sample_rate`` fraction of requests, hashed for the
    rest) or ``"none"``. ``keys``: payload fields copied into every record as business keys
    (e.g. ``customer_id``), so the audit log can be queried by them.
    """

    anonymous: bool = True
    payload: Literal["hash", "full", "redact", "sample", "none"] = "hash"
    redact: list[str] = []
    sample_rate: float = 0.01
    keys: list[str] = []


class DeploymentRecord(msgspec.Struct, frozen=True):
    """A named endpoint over one model's versions.

    ``version`` is the stable version that takes traffic. ``previous_version`` is the one before it,
    kept warm for rollback. ``generation`` increases on every change so replicas can tell
    they are behind. ``traffic`` is the running rollout's split (candidate, weights, shadow).
    """

    name: str
    model: str
    version: int
    previous_version: int | None
    batching: BatchingConfig
    generation: int
    created_at: dt.datetime
    updated_at: dt.datetime
    production: bool = False  # moves only to approved versions (registry/promotions.py)
    inference: InferencePolicy = InferencePolicy()
    traffic: TrafficPolicy | None = None  # set while a rollout runs


class EventRecord(msgspec.Struct, frozen=True):
    id: int
    at: dt.datetime
    kind: str  # "version.registered", "deployment.created", "deployment.updated", ...
    subject: str  # "churn@3", "deployment:churn-prod"
    actor: str | None
    data: dict[str, Any]
