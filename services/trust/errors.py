"""What the trust package refuses: a directory change, a caller it cannot authenticate or admit, a request
signature, a directory document it cannot trust."""

from __future__ import annotations

from services.platform.errors import Error


class DirectoryError(Error):
    """A directory request that cannot be honoured (unknown agency, invalid key, a duplicate ...)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code)


class AuthError(Error):
    """The caller is not authenticated (`unauthenticated`) or may not do this (`forbidden`)."""

    code = "unauthenticated"


class SignatureError(AuthError):
    """A signed request was refused; `detail` says what failed, in words for the caller."""

    code = "bad_request_signature"

    def __init__(self, detail: str) -> None:
        super().__init__(f"request signature: {detail}")


class DirectoryTrustError(Error):
    """The directory document cannot be trusted: bad signature, wrong key, too old, malformed."""

    code = "directory_untrusted"
