"""The versions this replica has loaded, reconciled towards the deployments in the registry.

Every replica runs the same loop: read the deployments, load (verify → load → warm up) every
version they reference, including each deployment's previous version so rollback needs no load,
swap the routing table in one assignment, then unload what nothing references any more.
A version that fails to load leaves whatever served before in place and is reported by readiness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from slipway.errors import (
    DeploymentNotFound,
    InvalidInput,
    ModelNotReady,
    NotFound,
    SchemaMismatch,
    SlipwayError,
)
from slipway.registry.artifacts import ArtifactStore
from slipway.registry.records import BatchingConfig, DeploymentRecord, Signature, VersionRecord
from slipway.registry.store import SqlStore
from slipway.rollout.router import versions_to_load
from slipway.runtimes.base import (
    V2_TO_NUMPY,
    RowParameter,
    Runtime,
    RuntimeOptions,
    load_runtime,
    v2_datatype,
)
from slipway.serving.batching import BatchQueue
from slipway.serving.codec import ROW_PARAMETERS
from slipway.serving.tabular import feature_order
from slipway.settings import Settings

if TYPE_CHECKING:
    from slipway.packaging.hooks import Hooks

log = logging.getLogger("slipway.serving")

Loader = Callable[[VersionRecord], Runtime]


@dataclass
class LoadedVersion:
    """A loaded, warmed-up version with its batch queue."""

    record: VersionRecord
    runtime: Runtime
    queue: BatchQueue
    hooks: Hooks | None = None  # a bundle's inference hooks (see packaging/hooks.py)
    _checks: list[tuple[str, np.dtype, tuple[int, ...]]] = field(default_factory=list)
    # Per-row request parameters the runtime takes beside its inputs (GGUF's max_tokens).
    _parameters: dict[str, RowParameter] = field(default_factory=dict)
    # Registered feature names in column order (None: none recorded), for requests that send
    # rows as objects of feature → value.
    feature_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.feature_names = feature_order(self.record)
        self._checks = [
            (spec.name, V2_TO_NUMPY[spec.datatype], tuple(spec.shape[1:]))
            for spec in self.signature.inputs
        ]
        self._parameters = dict(getattr(self.runtime, "parameters", None) or {})

    @property
    def signature(self) -> Signature:
        return self.record.signature

    def conform(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], int]:
        """Check inputs against the signature before they join a batch; cast dtypes; count rows."""
        given: dict[str, np.ndarray] = {}
        if self._parameters:
            given = {k: inputs[k] for k in self._parameters if k in inputs}
            inputs = {k: v for k, v in inputs.items() if k not in given}
        if len(inputs) != len(self._checks):
            expected = ", ".join(name for name, _, _ in self._checks)
            for extra in ROW_PARAMETERS:  # sent as a request parameter, not as an input
                if extra in inputs and all(extra != n for n, _, _ in self._checks):
                    raise InvalidInput(
                        f"this model takes no parameter {extra!r} (it is for text"
                        " generation); leave it out"
                    )
            raise SchemaMismatch(f"model expects inputs [{expected}], got [{', '.join(inputs)}]")
        out: dict[str, np.ndarray] = {}
        rows = -1
        for name, dtype, trailing in self._checks:
            array = inputs.get(name)
            if array is None:
                raise SchemaMismatch(f"missing input {name!r}; got [{', '.join(inputs)}]")
            if (
                array.ndim != len(trailing) + 1
                or (
                    array.shape[1:] != trailing  # the common case, exact: no per-axis loop
                    and any(
                        want not in (-1, got)
                        for want, got in zip(trailing, array.shape[1:], strict=True)
                    )
                )
            ):
                raise SchemaMismatch(
                    f"input {name!r} has shape {list(array.shape)}; expected [-1"
                    + "".join(f", {d}" for d in trailing)
                    + "]"
                )
            if rows not in (-1, array.shape[0]):
                raise SchemaMismatch("all inputs must have the same number of rows")
            rows = array.shape[0]
            if array.dtype != dtype:
                array = cast_input(name, array, dtype)
            out[name] = array
        if rows == 0:
            raise SchemaMismatch("request has no rows")
        for name, parameter in self._parameters.items():
            out[name] = row_parameter(name, parameter, given.get(name), rows)
        return out, rows


def cast_input(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as the model's ``dtype``, when that loses nothing but precision: FP64 → FP32,
    INT64 → INT8 and integers → floats are cast; values that would wrap or overflow there are
    a 400, as are casts across kinds (a float truncated to an integer, text to a number)."""
    if (
        dtype == np.dtype(object)
        or array.dtype == np.dtype(object)
        or not np.can_cast(array.dtype, dtype, casting="same_kind")
    ):
        raise SchemaMismatch(
            f"input {name!r} is {v2_datatype(array.dtype)}; the model takes {v2_datatype(dtype)}"
        )
    if dtype.kind in "iu" and array.size:
        info = np.iinfo(dtype)
        if array.min() < info.min or array.max() > info.max:
            raise InvalidInput(
                f"input {name!r}: values do not fit the model's {v2_datatype(dtype)} input"
            )
    with np.errstate(over="ignore"):  # checked below: an error for this request only
        cast = array.astype(dtype)
    if dtype.kind == "f" and not np.isfinite(cast).all():
        raise InvalidInput(
            f"input {name!r}: values overflow the model's {v2_datatype(dtype)} input;"
            f" send numbers within its range"
        )
    return cast


def row_parameter(
    name: str, parameter: RowParameter, value: np.ndarray | None, rows: int
) -> np.ndarray:
    """One value per row for a runtime's request parameter: the server's limit when the request
    gives none; else checked here, per request, so a bad value fails only its own request
    (400 naming the limit) and never the batch it would have joined."""
    if value is None:
        return np.full(rows, parameter.maximum, dtype=parameter.dtype)
    array = np.asarray(value)
    if array.shape != (rows,) or array.dtype.kind not in "iu":
        raise InvalidInput(f"{name} must be a whole number (one per row, {rows} rows)")
    low, high = int(array.min()), int(array.max())
    if high > parameter.maximum:
        raise InvalidInput(
            f"{name} {high} is over this server's limit of {parameter.maximum}"
            f" ({parameter.setting}); ask for at most {parameter.maximum}"
        )
    if low < parameter.minimum:
        raise InvalidInput(f"{name} must be at least {parameter.minimum}; got {low}")
    return array.astype(parameter.dtype)


def runtime_options(settings: Settings) -> RuntimeOptions:
    """How this replica's runtimes load models, from the settings (docs/formats.md)."""
    return RuntimeOptions(
        threads=settings.onnx_threads,
        device=settings.device,
        max_tokens=settings.max_tokens,
        generation_timeout_s=settings.generation_timeout_s,
        context_tokens=settings.context_tokens,
    )


def warmup_inputs(signature: Signature) -> dict[str, np.ndarray]:
    """One row of zeros (or empty strings) per input, for the warm-up inference."""
    inputs = {}
    for spec in signature.inputs:
        shape = [1] + [d if d > 0 else 1 for d in spec.shape[1:]]
        dtype = V2_TO_NUMPY[spec.datatype]
        if dtype == np.dtype(object):
            inputs[spec.name] = np.full(shape, b"", dtype=object)
        else:
            inputs[spec.name] = np.zeros(shape, dtype=dtype)
    return inputs


class ModelRepository:
    """Loaded versions and the routing table of deployments, for one replica."""

    def __init__(
        self,
        store: SqlStore,
        artifacts: ArtifactStore,
        *,
        threads: int = 1,
        loader: Loader | None = None,
        options: RuntimeOptions | None = None,
        inline_budget_s: float = 0.0,
    ) -> None:
        self.store = store
        # Runtimes with ``inline_safe = True`` may run batches up to this cost on the event loop.
        self._inline_budget_s = inline_budget_s
        self.artifacts = artifacts
        self._threads = threads
        self._options = options or RuntimeOptions(threads=threads)
        self._loader = loader or self._load_from_store
        self.loaded: dict[tuple[str, int], LoadedVersion] = {}
        self.deployments: dict[str, DeploymentRecord] = {}
        self.failures: dict[tuple[str, int], str] = {}
        # Inference hooks by version, set by `serve --bundle` before the first reconcile.
        self.hooks: dict[tuple[str, int], Hooks] = {}
        self._state: tuple[tuple[str, int], ...] | None = None
        self._lock = asyncio.Lock()
        # Called with the new routing table each time reconcile swaps it in (the metrics'
        # rollout arms: a candidate's first request must be counted as the candidate's).
        self.on_change: Callable[[dict[str, DeploymentRecord]], None] | None = None

    def _load_from_store(self, record: VersionRecord) -> Runtime:
        path = self.artifacts.verified_path(record.digest)
        runtime = load_runtime(record.format, path, options=self._options)
        runtime.predict(warmup_inputs(record.signature))
        return runtime

    @property
    def ready(self) -> bool:
        """Every deployed version loaded and warmed up."""
        return self._state is not None and all(
            (d.model, d.version) in self.loaded for d in self.deployments.values()
        )

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        for d in self.deployments.values():
            key = (d.model, d.version)
            if key not in self.loaded:
                why = self.failures.get(key, "loading")
                reasons.append(f"deployment {d.name}: {d.model}@{d.version} not loaded ({why})")
        for (model, number), why in self.failures.items():  # e.g. a new version, refused
            if not any(f"{model}@{number} " in reason for reason in reasons):
                reasons.append(f"{model}@{number} failed to load ({why})")
        return reasons

    def resolve(self, name: str, version: int | None = None) -> tuple[str, LoadedVersion]:
        """A deployment name (or a model name with a deployment) → (deployment, loaded version).

        The deployment's router picks the version; an explicit ``version`` must be loaded.
        """
        deployment = self.deployments.get(name)
        if deployment is None:
            for candidate in self.deployments.values():
                if candidate.model == name:
                    deployment = candidate
                    break
        if deployment is None:
            raise DeploymentNotFound(name)
        number = deployment.version if version is None else version
        loaded = self.loaded.get((deployment.model, number))
        if loaded is None:
            failure = self.failures.get((deployment.model, number))
            if failure is not None:
                raise ModelNotReady(f"{deployment.model}@{number} is not loaded ({failure})")
            if version is not None and version not in (
                deployment.version,
                deployment.previous_version,
                *versions_to_load(deployment),
            ):
                # A client error (404), not "try again later" (503): waiting will not help.
                raise NotFound(
                    f"version {version} of {deployment.model!r} is not served by deployment"
                    f" {deployment.name!r}; see /v2/models/{deployment.name} for its versions"
                )
            raise ModelNotReady(f"{deployment.model}@{number} is not loaded yet")
        return deployment.name, loaded

    async def reconcile(self, *, force: bool = False) -> bool:
        """Bring loaded versions in line with the registry. Returns True when something changed."""
        async with self._lock:
            state = await asyncio.to_thread(self.store.deployments_state)
            if state == self._state and not force and not self.failures:
                return False
            deployments = await asyncio.to_thread(self.store.list_deployments)
            wanted: dict[tuple[str, int], BatchingConfig] = {}
            for d in deployments:
                wanted.setdefault((d.model, d.version), d.batching)
                if d.previous_version is not None:
                    wanted.setdefault((d.model, d.previous_version), d.batching)
                for extra in versions_to_load(d):  # a rollout's candidate and shadow, warm
                    wanted.setdefault((d.model, extra), d.batching)
            for key, batching in wanted.items():
                if key in self.loaded:
                    self.loaded[key].queue.config = batching
                    continue
                try:
                    record = await asyncio.to_thread(self.store.get_version, *key)
                    runtime = await asyncio.to_thread(self._loader, record)
                except SlipwayError as exc:
                    self.failures[key] = exc.message
                    log.error("could not load %s@%s: %s", key[0], key[1], exc.message)
                    continue
                except Exception as exc:  # a broken artifact must not take the replica down
                    # The readiness endpoint shows this: the details (paths) go to the log only.
                    self.failures[key] = f"{type(exc).__name__}; see the server log"
                    log.exception("could not load %s@%s", *key)
                    continue
                inline = self._inline_budget_s if getattr(runtime, "inline_safe", False) else 0.0
                queue = BatchQueue(
                    runtime.predict, batching, name=f"{key[0]}-{key[1]}", inline_budget_s=inline
                )
                queue.start()
                self.loaded[key] = LoadedVersion(record, runtime, queue, self.hooks.get(key))
                self.failures.pop(key, None)
                log.info("loaded %s@%s", *key)
            # Swap the routing table in one assignment: a request sees the old or the new one.
            table = {d.name: self._routable(d) for d in deployments}
            self.deployments = table
            if self.on_change is not None:
                self.on_change(table)
            self._state = state
            keep = set(wanted) | {key for d in table.values() for key in _routed(d)}
            for key in [k for k in self.loaded if k not in keep]:
                gone = self.loaded.pop(key)
                await gone.queue.stop()
                gone.runtime.unload()
                log.info("unloaded %s@%s", *key)
            for key in [k for k in self.failures if k not in wanted]:
                del self.failures[key]
            return True

    def _routable(self, record: DeploymentRecord) -> DeploymentRecord:
        """``record``, or while a version it routes to failed to load, the record in force
        before it: a broken new version must leave the one serving now serving (readiness
        reports the failure, and reconcile retries it)."""
        current = self.deployments.get(record.name)
        if (
            current is not None
            and current.model == record.model
            and any(key not in self.loaded for key in _routed(record))
            and all(key in self.loaded for key in _routed(current))
        ):
            return current
        return record

    async def close(self) -> None:
        for loaded in self.loaded.values():
            await loaded.queue.stop()
            loaded.runtime.unload()
        self.loaded.clear()


def _routed(record: DeploymentRecord) -> set[tuple[str, int]]:
    """The versions requests to ``record`` can be routed to."""
    return {(record.model, v) for v in (record.version, *versions_to_load(record))}
