"""What the notices package refuses, by code (docs/errors.md): a notice the caller did not send, a recall
or erasure that cannot be applied, a submission over its agency's rate or into a full inbox."""

from __future__ import annotations

from services.platform.errors import Error


class NoticeError(Error):
    def __init__(self, code: str, detail: str, retry_after_s: int | None = None) -> None:
        super().__init__(detail, code, retry_after_s)


class RecallRefused(NoticeError):
    """A recall record that cannot be applied (unknown notice, not the sender): dead-lettered."""

    code = "recall_refused"

    def __init__(self, detail: str) -> None:
        super().__init__(self.code, detail)
