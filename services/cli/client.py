"""The HTTP side of the CLI: one request helper that turns every failure into one readable line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from schemas.directory import DirectoryAgency, DirectoryDocument, SignedDirectory
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey
from services.platform.errors import Error
from services.trust.errors import DirectoryTrustError
from services.trust.signed_directory import verify_directory


class ClientError(Error):
    """What the CLI could not do; from a server's problem details it keeps the server's code."""

    code = "client_error"


class Api:
    """Authenticates with a bearer `token`, or with `auth` (a request signer) instead when given."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = 30.0, auth: httpx.Auth | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if auth is None and token is not None else {}
        self._client = httpx.Client(base_url=base_url, headers=headers, auth=auth, timeout=timeout)

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._send(method, path, **kwargs).json()

    def text(self, method: str, path: str, **kwargs: Any) -> str:
        """For routes that answer text/plain, such as signed notes."""
        return self._send(method, path, **kwargs).text

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self._client.base_url}: {exc}") from exc
        if response.status_code >= 400:
            code = None
            try:
                body = response.json()
                detail = body.get("detail", body)
                code = body.get("code") if isinstance(body.get("code"), str) else None
            except (ValueError, AttributeError):
                detail = response.text[:200]
            raise ClientError(f"{method} {path} failed with {response.status_code}: {detail}", code)
        return response

    def directory(self, pinned: PublicKey) -> TrustedDirectory:
        """The signed directory, checked against the key this identity pinned: the server is not trusted."""
        signed = SignedDirectory.model_validate(self.call("GET", "/v1/directory"))
        try:
            document = verify_directory(signed, pinned, datetime.now(UTC), DIRECTORY_MAX_AGE)
        except DirectoryTrustError as exc:
            raise ClientError(f"directory refused: {exc}") from exc
        return TrustedDirectory(document)


DIRECTORY_MAX_AGE = timedelta(minutes=10)


class TrustedDirectory:
    """Key lookups in a directory document whose signature was checked."""

    def __init__(self, document: DirectoryDocument) -> None:
        self.document = document

    def _agency(self, agency: str) -> DirectoryAgency:
        entry = self.document.agency(agency)
        if entry is None:
            raise ClientError(f"{agency} is not in the directory")
        return entry

    def signing_key(self, agency: str, at: datetime) -> Callable[[str], PublicKey]:
        """A lookup for keys of `agency` that were good at `at` (when the notice says it was sent): old
        notices verify with rotated-out keys; a key revoked before then is refused."""

        def lookup(kid: str) -> PublicKey:
            key = next((k for k in self._agency(agency).keys if k.kid == kid and k.use == "sig"), None)
            if key is None:
                raise EnvelopeError("unknown_key", f"{agency} has no signing key {kid} in the directory")
            if not key.valid_at(at):
                reason = "key_revoked" if key.revoked_at is not None else "key_not_valid"
                raise EnvelopeError(reason, f"key {kid} of {agency} was not valid at {at.isoformat()}")
            return PublicKey.from_jwk(agency, key.public_jwk())

        return lookup

    def encryption_key(self, agency: str) -> PublicKey:
        """The newest key an agency currently takes notices under."""
        usable = [k for k in self._agency(agency).keys if k.use == "enc" and k.status == "active"]
        if not usable:
            raise ClientError(f"{agency} has no active encryption key in the directory")
        newest = usable[-1]  # the directory lists keys in the order they were registered
        return PublicKey.from_jwk(agency, newest.public_jwk())
