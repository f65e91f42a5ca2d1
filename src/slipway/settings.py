"""One frozen settings object, built at the edge (CLI, server start) and passed in."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path

from slipway.errors import InvalidInput

MAX_WORKERS = 64  # server processes of one `serve --workers`

_PARSERS = {"int": int, "float": float, "str": str}
_KINDS = {"int": "a whole number", "float": "a number", "str": "text"}

# What each setting may hold beyond its type, checked however the settings are built (the
# environment, flags, a test): a zero interval would be a busy loop, a zero or negative limit
# refuses everything or nothing, and a misspelt mode was silently the default.
_AT_LEAST_1 = (
    "max_body_bytes", "max_upload_bytes", "max_rows", "max_queue_rows", "max_batch_size",
    "onnx_threads", "max_tokens", "context_tokens", "evidence_max_samples",
    "evidence_max_request_ids", "shadow_workers", "events_batch_size",
    "drift_window_slots", "drift_min_samples", "audit_batch_size",
)  # fmt: skip
_AT_LEAST_0 = (  # a side queue of 0 holds nothing: every item is dropped and counted
    "max_batch_delay_ms", "inline_batch_max_ms", "drift_capture_per_s", "alert_webhook_retries",
    "alert_webhook_backoff_s", "drift_psi_threshold", "drift_wasserstein_threshold",
    "shadow_queue_size", "events_queue_size", "drift_queue_size", "audit_queue_records",
    "audit_queue_bytes",
)  # fmt: skip
_ABOVE_0 = (
    "request_timeout_s", "head_timeout_s", "generation_timeout_s", "reconcile_interval_s",
    "evidence_flush_interval_s", "rollout_interval_s", "rollout_lease_s", "shadow_timeout_s",
    "events_flush_interval_s", "monitor_interval_s", "drift_interval_s", "drift_window_size",
    "token_refresh_s", "audit_flush_interval_s",
)  # fmt: skip
# The choices of the settings that name a mode; the modules that act on them check against
# these too (the ONNX runtime's device, the audit recorder's and events sink's modes).
DEVICES = ("cpu", "gpu", "auto")
EVENTS_MODES = ("binary", "batch")
DRIFT_WINDOWS = ("time", "rows")
AUDIT_MODES = ("fail-open", "fail-closed", "off")
_CHOICES = {
    "device": DEVICES,
    "events_mode": EVENTS_MODES,
    "drift_window": DRIFT_WINDOWS,
    "audit_predictions": AUDIT_MODES,
    "monitoring": (0, 1),
    "alert_evaluation": (0, 1),
    "auth": (0, 1),
    "grpc_reuse_port": (0, 1),
}
_URLS = ("events_url", "otlp_endpoint", "alert_webhooks")  # alert_webhooks: comma-separated


class SettingRefused(InvalidInput):
    """A setting's value breaks its rule; named as the environment variable that sets it."""

    def __init__(self, name: str, rule: str, value: object, *, flag: bool = False) -> None:
        self.name, self.rule, self.value = name, rule, value
        where = f"--{name.replace('_', '-')}" if flag else f"setting SLIPWAY_{name.upper()}"
        super().__init__(f"{where} {rule}; it is {value!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Where Slipway keeps its state and the server's limits.

    Built from the environment with :meth:`from_env`; tests build it directly.
    """

    home: Path
    database_url: str
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    max_upload_bytes: int = 512 * 1024 * 1024
    max_rows: int = 4096
    request_timeout_s: float = 10.0
    # A client must send a request's line and headers within this, and pause its body no longer.
    head_timeout_s: float = 10.0
    max_queue_rows: int = 8192
    max_batch_size: int = 32
    max_batch_delay_ms: float = 2.0
    # A batch whose estimated cost (measured seconds per row × rows) is within this runs on the
    # event loop instead of the inference thread, for runtimes that allow it; 0: never.
    inline_batch_max_ms: float = 0.5
    onnx_threads: int = 1
    # Model formats (docs/formats.md): ONNX device ("cpu", "gpu", "auto"; a missing GPU provider
    # falls back to CPU with a log line) and the bounds on text generation (GGUF).
    device: str = "cpu"
    max_tokens: int = 64
    generation_timeout_s: float = 30.0
    context_tokens: int = 512
    reconcile_interval_s: float = 2.0
    # Rollouts: evidence flush, controller period and lease, shadow queue (see docs/rollouts.md).
    evidence_flush_interval_s: float = 2.0
    evidence_max_samples: int = 200
    evidence_max_request_ids: int = 20000
    rollout_interval_s: float = 5.0
    rollout_lease_s: float = 15.0
    shadow_queue_size: int = 1000
    shadow_workers: int = 4
    shadow_timeout_s: float = 2.0
    # Ecosystem protocols (docs/protocols.md). grpc_port: -1 off, 0 any free port.
    grpc_port: int = -1
    grpc_reuse_port: int = 0  # 1: workers of one server share the gRPC port (SO_REUSEPORT)
    workers: int = 1  # server processes on one port (`serve --workers`; docs/serving.md)
    scoring_deployment: str = ""  # what MLflow's root /invocations serves; "" = the only one
    events_url: str = ""  # CloudEvents HTTP sink for prediction events; "" = off
    events_mode: str = "binary"  # "binary": one POST per event (as KServe); "batch"
    events_batch_size: int = 64
    events_queue_size: int = 10000
    events_flush_interval_s: float = 1.0
    otlp_endpoint: str = ""  # OTLP/HTTP traces endpoint; "" = tracing off
    # Monitoring (docs/monitoring.md): capture queue, drift windows and verdicts, alerts.
    monitoring: int = 1  # 0 turns drift capture, drift evaluation and alerting off
    monitor_interval_s: float = 5.0  # alert evaluation, traffic sampling, capture folding
    drift_interval_s: float = 30.0  # drift tests at most this often (they change slowly)
    drift_queue_size: int = 10000
    drift_capture_per_s: float = 250.0  # requests a second per deployment captured; 0: all
    drift_window: str = "time"  # "time" (seconds) or "rows"
    drift_window_size: float = 3600.0
    drift_window_slots: int = 12
    drift_min_samples: int = 100
    drift_alpha: float = 0.01
    drift_psi_threshold: float = 0.2
    drift_wasserstein_threshold: float = 0.25
    alert_evaluation: int = 1  # 0: this process evaluates no alert rules (serve --workers)
    alert_rules_file: str = ""  # TOML file of [[rules]]; "" = API rules only
    alert_webhooks: str = ""  # comma-separated URLs that get every alert event
    alert_webhook_retries: int = 3
    alert_webhook_backoff_s: float = 0.5
    metrics_multiprocess_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR of a multi-worker server
    nvml_library: str = ""  # GPU metrics: "" the driver's libnvidia-ml, a path, or "off"
    # Governance (docs/governance.md, docs/security.md): tokens and prediction audit records.
    auth: int = 1  # 0 turns token checks off; the server then refuses any host but 127.0.0.1
    allowed_origins: str = ""  # comma-separated browser origins allowed to change state
    token_refresh_s: float = 2.0  # how soon a token made or revoked elsewhere takes effect
    audit_predictions: str = "fail-open"  # "fail-open" (count drops), "fail-closed" (503), "off"
    audit_queue_records: int = 10000
    audit_queue_bytes: int = 64 * 1024 * 1024
    audit_batch_size: int = 500
    audit_flush_interval_s: float = 0.2

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                self._refuse(field.name, "must be a finite number")
        for name in _AT_LEAST_1:
            if getattr(self, name) < 1:
                self._refuse(name, "must be at least 1")
        for name in _AT_LEAST_0:
            if getattr(self, name) < 0:
                self._refuse(name, "must not be negative")
        for name in _ABOVE_0:
            if getattr(self, name) <= 0:
                self._refuse(name, "must be more than 0")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                self._refuse(name, f"must be one of {', '.join(map(str, choices))}")
        if not 1 <= self.workers <= MAX_WORKERS:
            self._refuse("workers", f"must be between 1 and {MAX_WORKERS}")
        if not -1 <= self.grpc_port <= 65535:
            self._refuse("grpc_port", "must be -1 (off), 0 (any free port) or a port up to 65535")
        if not 0 < self.drift_alpha < 1:
            self._refuse("drift_alpha", "must be between 0 and 1")
        for name in _URLS:
            for url in filter(None, (u.strip() for u in getattr(self, name).split(","))):
                if not url.startswith(("http://", "https://")):
                    self._refuse(name, f"must hold http:// or https:// URLs, not {url!r}")

    def _refuse(self, name: str, rule: str) -> None:
        raise SettingRefused(name, rule, getattr(self, name))

    @property
    def drain_s(self) -> int:
        """Seconds the server gives in-flight requests to finish after SIGTERM."""
        return int(self.request_timeout_s) + 5

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: object) -> Settings:
        home = Path(env.get("SLIPWAY_HOME") or Path.home() / ".slipway").expanduser()
        url = env.get("SLIPWAY_DATABASE_URL") or f"sqlite:///{home / 'registry.db'}"
        values: dict[str, object] = {"home": home, "database_url": url}
        for field in dataclasses.fields(cls):
            key = "SLIPWAY_" + field.name.upper()
            if field.name in values or key not in env:
                continue
            kind = str(field.type)
            try:
                values[field.name] = _PARSERS[kind](env[key])
            except ValueError:
                raise InvalidInput(
                    f"{key}={env[key]!r} is not a valid setting: it takes {_KINDS[kind]}"
                ) from None
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        port = values.get("port", cls.port)
        if isinstance(port, int) and not 0 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range: use 0-65535 (0: any free port)")
        try:
            return cls(**values)  # type: ignore[arg-type]
        except SettingRefused as exc:
            if exc.name not in given:
                raise
            # Given by the caller, as a command's flag (--workers 0): named so.
            raise SettingRefused(exc.name, exc.rule, exc.value, flag=True) from None
