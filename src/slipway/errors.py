"""Every error Slipway raises on purpose.

    SlipwayError
    ├── NotFound
    │   ├── ModelNotFound
    │   ├── VersionNotFound
    │   ├── DeploymentNotFound
    │   ├── RolloutNotFound
    │   └── AlertRuleNotFound
    ├── InvalidInput
    │   ├── InvalidName
    │   ├── UnsafePath
    │   ├── SchemaMismatch
    │   ├── PayloadTooLarge
    │   ├── UnsupportedFormat
    │   │   └── MissingExtra
    │   ├── BundleInvalid
    │   └── HandlerRejected
    ├── VersionConflict
    ├── LastAdmin
    ├── Unauthenticated
    ├── PermissionDenied
    ├── ApprovalRequired
    ├── PromotionBlocked
    ├── AuditChainBroken
    ├── UntrustedArtifact
    ├── ArtifactCorrupt
    ├── ConversionMismatch
    ├── SchemaTooNew
    ├── RegistryUnavailable
    ├── ModelNotReady
    ├── Overloaded
    ├── DeadlineExceeded
    ├── InferenceFailed
    ├── HandlerFailed
    ├── PackagingFailed
    ├── ValidationFailed
    └── NotReady

No framework imports here: HTTP status codes are mapped in ``serving/errors.py``, exit codes in
``cli.py``.
"""

from __future__ import annotations


class SlipwayError(Exception):
    """Root of every error Slipway raises on purpose. ``str(err)`` is the user-facing message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(SlipwayError):
    """Something named does not exist."""


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__(f"model {model!r} not found; see `slipway models list`")


class VersionNotFound(NotFound):
    def __init__(self, model: str, version: int | str) -> None:
        self.model, self.version = model, version
        super().__init__(
            f"version {version} of model {model!r} not found; see `slipway models show {model}`"
        )


class DeploymentNotFound(NotFound):
    def __init__(self, deployment: str) -> None:
        self.deployment = deployment
        super().__init__(f"deployment {deployment!r} not found; see `slipway deployments list`")


class AlertRuleNotFound(NotFound):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"alert rule {name!r} not found; see `slipway alerts rules`")


class RolloutNotFound(NotFound):
    def __init__(self, what: str, hint: str = "see `slipway rollout status DEPLOYMENT`") -> None:
        self.what = what
        super().__init__(f"{what}; {hint}")


class InvalidInput(SlipwayError):
    """The caller sent something malformed."""


class InvalidName(InvalidInput):
    def __init__(self, kind: str, name: str) -> None:
        self.kind, self.name = kind, name
        super().__init__(
            f"invalid {kind} name {name!r}: use 1-64 characters from a-z, A-Z, 0-9, '.', '_', '-',"
            " starting with a letter or digit"
        )


class UnsafePath(InvalidInput):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"path {path!r} would leave the artifact store; refused")


class SchemaMismatch(InvalidInput):
    """Inputs do not match the version's signature."""


class PayloadTooLarge(InvalidInput):
    def __init__(self, what: str, limit: int) -> None:
        self.what, self.limit = what, limit
        super().__init__(f"{what} exceeds the limit of {limit}")


class UnsupportedFormat(InvalidInput):
    """A model format Slipway cannot (or is not set up to) load."""


class MissingExtra(UnsupportedFormat):
    """A model format whose optional runtime package is not installed here."""

    def __init__(self, format: str, module: str, install: str) -> None:
        self.format, self.module, self.install = format, module, install
        super().__init__(
            f"the {format} format needs the Python package {module!r}, which is not installed"
            f" in this environment; install it with `{install}`"
        )


class VersionConflict(SlipwayError):
    """A concurrent change won; retry with fresh state."""


class LastAdmin(SlipwayError):
    """A change to a user would leave no enabled admin: nobody could manage users and tokens."""

    def __init__(self, user: str) -> None:
        self.user = user
        super().__init__(
            f"{user!r} is the last enabled admin; disabling or demoting them would leave no"
            " enabled admin to manage users and tokens. Make another user admin first"
            " (`slipway users set-role USER admin`)"
        )


class Unauthenticated(SlipwayError):
    """No valid token came with a request that needs one."""

    def __init__(self, why: str = "this route needs a token") -> None:
        super().__init__(
            f"{why}; send it as 'Authorization: Bearer <token>' (the CLI and SDK read"
            " SLIPWAY_TOKEN). `slipway init` prints the first admin token, `slipway tokens create`"
            " makes more"
        )


class PermissionDenied(SlipwayError):
    """The caller is known but may not do this."""

    def __init__(self, actor: str, reason: str) -> None:
        self.actor, self.reason = actor, reason
        super().__init__(f"{actor!r} may not do this: {reason}")


class ApprovalRequired(SlipwayError):
    """A production deployment may only move to a version with an approved promotion request."""

    def __init__(self, deployment: str, ref: str, reason: str) -> None:
        self.deployment, self.ref, self.reason = deployment, ref, reason
        super().__init__(
            f"promoting {ref} on production deployment {deployment!r} needs an approved promotion"
            f" request: {reason}. Request one with `slipway approvals request {deployment} {ref}`"
        )


class PromotionBlocked(SlipwayError):
    """A rollout's own promotion gate (passing validation report, shadow agreement) is unmet."""

    def __init__(self, deployment: str, ref: str, reasons: list[str]) -> None:
        self.deployment, self.ref, self.reasons = deployment, ref, reasons
        super().__init__(f"{ref} may not be promoted on {deployment!r} yet: {'; '.join(reasons)}")


class AuditChainBroken(SlipwayError):
    """The audit log's hash chain does not verify: a record was changed, removed or inserted."""

    def __init__(self, seq: int, reason: str) -> None:
        self.seq, self.reason = seq, reason
        super().__init__(
            f"audit record {seq} breaks the chain: {reason}; every record before it verifies."
            " Restore the audit tables from a backup and compare with your exported checkpoints"
        )


class UntrustedArtifact(SlipwayError):
    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(
            f"{path!r} is a pickle-based file, which can run arbitrary code when loaded; refused."
            " Convert the model to ONNX, or pass trusted=True (--trusted on the command line)"
            " if you trust its source"
        )


class ArtifactCorrupt(SlipwayError):
    def __init__(self, digest: str, actual: str) -> None:
        self.digest, self.actual = digest, actual
        super().__init__(
            f"artifact sha256:{digest[:12]} failed verification (content hashes to"
            f" sha256:{actual[:12]}); the file was changed or damaged, register the model again"
        )


class ConversionMismatch(SlipwayError):
    """A converted model does not reproduce the original's outputs."""


class SchemaTooNew(SlipwayError):
    def __init__(self, found: str, known: str) -> None:
        self.found, self.known = found, known
        super().__init__(
            f"the registry database is at schema revision {found}, newer than this Slipway knows"
            f" ({known}); upgrade Slipway instead of using an older release on it"
        )


class RegistryUnavailable(SlipwayError):
    """The registry database cannot be reached right now (503 with ``Retry-After``).

    ``reason`` is the driver's own words, for logs and the operator's terminal; the message,
    which a server sends to its clients, names no host, port or database.
    """

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        self.reason, self.retry_after_s = reason, retry_after_s
        super().__init__(
            "the registry database cannot be reached; retry shortly, and check that it is"
            " running and that SLIPWAY_DATABASE_URL points at it"
        )


class ModelNotReady(SlipwayError):
    """The model exists but is not loaded (yet)."""


class Overloaded(SlipwayError):
    """Come back later (503 with ``Retry-After``): a bounded queue is full, or the model is
    being unloaded."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)

    @classmethod
    def full(cls, what: str, retry_after_s: float = 1.0) -> Overloaded:
        return cls(f"{what} is full; retry after {retry_after_s:g}s", retry_after_s)


class DeadlineExceeded(SlipwayError):
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        super().__init__(f"inference did not finish within {timeout_s:g}s")


class InferenceFailed(SlipwayError):
    """The runtime raised while running a batch."""


class BundleInvalid(InvalidInput):
    """A bundle directory that is incomplete, of an unknown layout, or altered since packaging."""

    def __init__(self, bundle: str, why: str) -> None:
        self.bundle, self.why = bundle, why
        super().__init__(f"{bundle} is not a usable Slipway bundle: {why}; package it again")


class HandlerRejected(InvalidInput):
    """A bundle's ``preprocess`` hook refused a request (it raised)."""

    def __init__(self, why: str) -> None:
        self.why = why
        super().__init__(f"the model's preprocess hook rejected the request: {why}")


class HandlerFailed(SlipwayError):
    """A bundle's ``postprocess`` hook raised, or a hook returned something other than arrays."""

    def __init__(self, hook: str, why: str) -> None:
        self.hook, self.why = hook, why
        super().__init__(f"the model's {hook} hook failed: {why}")


class PackagingFailed(SlipwayError):
    """A step of ``slipway package`` failed: resolving the lock, building the wheel, the
    handler's own tests."""


class ValidationFailed(SlipwayError):
    """``slipway validate``: a required gate of the promotion policy failed."""

    def __init__(self, ref: str, failed: list[str]) -> None:
        self.ref, self.failed = ref, failed
        super().__init__(
            f"{ref} failed validation: {'; '.join(failed)}; see the report for each check"
        )


class NotReady(SlipwayError):
    """``slipway readiness``: a required item of the production readiness checklist fails."""

    def __init__(self, ref: str, failed: list[str]) -> None:
        self.ref, self.failed = ref, failed
        super().__init__(
            f"{ref} is not ready for production: {', '.join(failed)} failed; each row's fix"
            " says what to run"
        )
