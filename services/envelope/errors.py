"""What the envelope package refuses: an envelope that fails a check, a key file that cannot be used."""

from __future__ import annotations

from services.platform.errors import Error


class EnvelopeError(Error):
    """A check on an envelope failed; `code` says which (docs/errors.md), the detail what exactly. The same
    codes are the reasons ingest dead-letters a record with."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code)


class KeyFileError(Error):
    """A key, pin or credential file is missing or not what it should be."""

    code = "key_file"
