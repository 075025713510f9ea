"""The one family of errors deskbridge names. Each has a stable `code` (docs/errors.md lists them all)
and a `detail` that says what failed in words a person can act on; services/platform/problems.py is the
one place a code becomes an HTTP status (RFC 9457) or the CLI's one line. No service knows HTTP."""

from __future__ import annotations


class Error(Exception):
    """The base of every named error; subclasses are per domain, each code is its own kind of failure."""

    code: str = "internal_error"
    retry_after_s: int | None = None  # set where waiting helps: rate limits, a part out of reach

    def __init__(self, detail: str, code: str | None = None, retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s


class Unavailable(Error):
    """A part deskbridge needs is out of reach or not set up; nothing was done, so the caller may retry."""

    code = "unavailable"
    retry_after_s = 5


class BrokerUnavailable(Unavailable):
    """Kafka did not acknowledge in time: the caller must not report success."""

    code = "kafka_unavailable"


class DatabaseUnavailable(Unavailable):
    """Connecting to the database failed at the network level (refused, reset, unresolvable, timed out)."""

    code = "database_unavailable"
