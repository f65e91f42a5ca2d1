"""The log of a periodic background job (reconcile, monitoring, rollout control, token refresh)
that keeps failing, e.g. while the registry database is unreachable.

A traceback every tick buries everything else in the log, so the first failure is logged with
its traceback, each one after it as one line with the count so far, and the first success after
them as one "recovered" line.
"""

from __future__ import annotations

import logging

from slipway.errors import RegistryUnavailable


class FailureLog:
    """Logs the failures of one periodic job to ``logger``; ``job`` names it in every line."""

    def __init__(self, logger: logging.Logger, job: str, consequence: str = "") -> None:
        self.logger, self.job = logger, job
        self.consequence = f"; {consequence}" if consequence else ""
        self.failures = 0  # in a row, since the last success

    def failed(self, exc: BaseException) -> None:
        """Log a failure of the job (call from the ``except`` that caught ``exc``)."""
        self.failures += 1
        if self.failures == 1:
            self.logger.error("%s failed%s", self.job, self.consequence, exc_info=exc)
        else:
            self.logger.warning(
                "%s failed again (%d times in a row)%s: %s",
                self.job,
                self.failures,
                self.consequence,
                _reason(exc),
            )

    def succeeded(self) -> None:
        """Note a success of the job: one line if it had been failing."""
        if self.failures:
            self.logger.warning("%s recovered after %d failed attempts", self.job, self.failures)
            self.failures = 0


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RegistryUnavailable):  # the driver's words, for the operator
        return f"the registry database cannot be reached ({exc.reason})"
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
