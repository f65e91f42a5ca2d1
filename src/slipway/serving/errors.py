"""The one table that maps Slipway errors to HTTP status codes."""

from __future__ import annotations

from slipway import errors

# Most specific first: the first isinstance match wins.
STATUS: list[tuple[type[errors.SlipwayError], int]] = [
    (errors.PayloadTooLarge, 413),
    (errors.UnsupportedFormat, 415),
    (errors.UntrustedArtifact, 415),
    (errors.InvalidInput, 400),
    (errors.NotFound, 404),
    (errors.VersionConflict, 409),
    (errors.LastAdmin, 409),
    (errors.Unauthenticated, 401),
    (errors.PermissionDenied, 403),
    (errors.ApprovalRequired, 409),
    (errors.PromotionBlocked, 409),
    (errors.ConversionMismatch, 422),
    (errors.ModelNotReady, 503),
    (errors.RegistryUnavailable, 503),
    (errors.Overloaded, 503),
    (errors.DeadlineExceeded, 504),
    (errors.ArtifactCorrupt, 500),
    (errors.InferenceFailed, 500),
]


def status_for(exc: errors.SlipwayError) -> int:
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500
