"""Prediction events as CloudEvents to an HTTP sink, the way KServe's payload logger sends them.

Each served request becomes two events with the same ``id`` (the request id): type
``org.kubeflow.serving.inference.request`` carrying the inputs and
``org.kubeflow.serving.inference.response`` carrying the outputs, both as Open Inference
Protocol V2 JSON, with the extension attributes ``inferenceservicename`` (the deployment),
``component`` and ``endpoint`` (``model@version``) that KServe consumers read.

Off the request path: ``offer`` appends plain references to a bounded deque (when it is full the
event is dropped and counted, never waited for). A background task takes up to
``events_batch_size`` requests at a time, encodes them and delivers them:

* ``binary`` mode (default, what KServe's logger does): one POST per event, attributes in
  ``ce-*`` headers, data in the body; the batch goes out concurrently over kept-alive
  connections;
* ``batch`` mode: one POST per batch in the CloudEvents JSON batch format
  (``application/cloudevents-batch+json``, an array of structured events).

A sink that is down loses events (counted as failed), never requests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import numpy as np
from prometheus_client import CollectorRegistry, Counter

from slipway.runtimes.base import v2_datatype
from slipway.settings import EVENTS_MODES

if TYPE_CHECKING:  # imported by start(): a server without a sink never loads it
    import httpx

log = logging.getLogger("slipway.serving.events")

REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """One served request, as handed over on the request path (arrays are not copied)."""

    request_id: str
    deployment: str
    model: str
    version: int
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]
    time: dt.datetime


def _tensors(arrays: dict[str, np.ndarray]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for name, array in arrays.items():
        if array.dtype == object:
            data = [
                v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in array.ravel()
            ]
        else:
            data = array.ravel().tolist()
        out.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": v2_datatype(array.dtype),
                "data": data,
            }
        )
    return out


def event_attributes(event: PredictionEvent, kind: str, source: str) -> dict[str, str]:
    """The CloudEvents attributes of the request or response event of ``event``."""
    return {
        "specversion": "1.0",
        "id": event.request_id,
        "type": REQUEST_TYPE if kind == "request" else RESPONSE_TYPE,
        "source": f"{source}/deployments/{event.deployment}",
        "time": event.time.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "inferenceservicename": event.deployment,
        "component": "predictor",
        "endpoint": f"{event.model}@{event.version}",
    }


def event_data(event: PredictionEvent, kind: str) -> dict[str, object]:
    """V2 JSON: the inference request (inputs) or the inference response (outputs)."""
    if kind == "request":
        return {"id": event.request_id, "inputs": _tensors(event.inputs)}
    return {
        "id": event.request_id,
        "model_name": event.deployment,
        "model_version": str(event.version),
        "outputs": _tensors(event.outputs),
    }


class CloudEventsSink:
    """A bounded queue of prediction events and the task that delivers them to ``url``."""

    def __init__(
        self,
        url: str,
        *,
        mode: str = "binary",
        batch_size: int = 64,
        queue_size: int = 10000,
        flush_interval_s: float = 1.0,
        source: str = "slipway",
        registry: CollectorRegistry | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        if mode not in EVENTS_MODES:
            raise ValueError(f"events mode must be one of {', '.join(EVENTS_MODES)}, got {mode!r}")
        self.url = url
        self.mode = mode
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.source = source
        self._queue: collections.deque[PredictionEvent] = collections.deque(maxlen=queue_size)
        self._client = client
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wakeup: asyncio.Event | None = None
        registry = registry or CollectorRegistry()
        self.events = Counter(
            "slipway_cloudevents",
            "Prediction CloudEvents by outcome (sent, failed, dropped when the queue was full).",
            ["outcome"],
            registry=registry,
        )

    def offer(
        self,
        request_id: str | None,
        deployment: str,
        model: str,
        version: int,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
    ) -> None:
        """Queue one served request; never blocks (a full queue drops and counts it)."""
        if len(self._queue) == self._queue.maxlen:
            self.events.labels("dropped").inc(2)
            return
        self._queue.append(
            PredictionEvent(
                request_id or uuid.uuid4().hex,
                deployment,
                model,
                version,
                inputs,
                outputs,
                dt.datetime.now(dt.UTC),
            )
        )
        if len(self._queue) >= self.batch_size and self._wakeup is not None:
            self._wakeup.set()

    def start(self) -> None:
        if self._task is None:
            import httpx

            self._client = self._client or httpx.AsyncClient(timeout=10.0)
            self._wakeup = asyncio.Event()
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (for at most ``timeout_s``; the rest counts as dropped)."""
        if self._task is not None:
            # Asked to finish rather than cancelled: a cancel mid-send would lose the batch
            # in flight without counting it.
            self._stopping = True
            assert self._wakeup is not None
            self._wakeup.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            if not self._task.done():
                self._task.cancel()
            self._task = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drain(), timeout_s)
        if self._queue:
            self.events.labels("dropped").inc(2 * len(self._queue))
            self._queue.clear()
        if self._client is not None:
            await self._client.aclose()

    async def _drain(self) -> None:
        while self._queue:
            await self.flush()

    async def _run(self) -> None:
        assert self._wakeup is not None
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), self.flush_interval_s)
            self._wakeup.clear()
            await self._drain()

    async def flush(self) -> None:
        """Send one batch (up to ``batch_size`` requests, two events each)."""
        batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
        if not batch:
            return
        assert self._client is not None
        import httpx  # loaded by start() already

        try:
            if self.mode == "batch":
                await self._send_batch(batch)
            else:
                await asyncio.gather(
                    *(self._send_binary(e, k) for e in batch for k in ("request", "response"))
                )
        except (httpx.HTTPError, OSError) as exc:
            self.events.labels("failed").inc(2 * len(batch))
            log.warning("CloudEvents sink %s unreachable: %s", self.url, exc)

    async def _send_binary(self, event: PredictionEvent, kind: str) -> None:
        assert self._client is not None
        attributes = event_attributes(event, kind, self.source)
        headers = {"content-type": attributes.pop("datacontenttype")}
        headers.update({f"ce-{key}": value for key, value in attributes.items()})
        response = await self._client.post(
            self.url, content=_encoder.encode(event_data(event, kind)), headers=headers
        )
        self._count(response, 1)

    async def _send_batch(self, batch: list[PredictionEvent]) -> None:
        assert self._client is not None
        events = [
            {**event_attributes(e, k, self.source), "data": event_data(e, k)}
            for e in batch
            for k in ("request", "response")
        ]
        response = await self._client.post(
            self.url, content=_encoder.encode(events), headers={"content-type": BATCH_CONTENT_TYPE}
        )
        self._count(response, len(events))

    def _count(self, response: httpx.Response, n: int) -> None:
        if response.is_success:
            self.events.labels("sent").inc(n)
        else:
            self.events.labels("failed").inc(n)
            log.warning("CloudEvents sink %s answered %s", self.url, response.status_code)


def sink_from_settings(
    url: str,
    mode: str,
    *,
    batch_size: int,
    queue_size: int,
    flush_interval_s: float,
    registry: CollectorRegistry | None = None,
) -> CloudEventsSink | None:
    """The sink the settings ask for, or None when ``url`` is empty (events off)."""
    if not url:
        return None
    return CloudEventsSink(
        url,
        mode=mode,
        batch_size=batch_size,
        queue_size=queue_size,
        flush_interval_s=flush_interval_s,
        registry=registry,
    )
