"""The HTTP side of the CLI: one request helper that turns every failure into one readable line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from joserfc.jwk import OKPKey

from services.common.envelope import EnvelopeError, PublicKey


class ClientError(Exception):
    pass


class Api:
    """Authenticates with a bearer `token`, or with `auth` (a request signer) instead when given."""

    def __init__(
        self, base_url: str, token: str | None = None, timeout: float = 30.0, auth: httpx.Auth | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if auth is None and token is not None else {}
        self._client = httpx.Client(base_url=base_url, headers=headers, auth=auth, timeout=timeout)
        self._keys: dict[str, PublicKey] = {}

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *_: object) -> None:
        self._client.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach {self._client.base_url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                body = response.json()
                detail = body.get("detail", body)
            except ValueError:
                detail = response.text[:200]
            raise ClientError(f"{method} {path} failed with {response.status_code}: {detail}")
        return response.json()

    def key_lookup(self, agency: str) -> Callable[[str], PublicKey]:
        """Verification keys come from the directory, by kid, cached for this run."""

        def lookup(kid: str) -> PublicKey:
            if kid not in self._keys:
                self._load(agency)
            if kid not in self._keys or self._keys[kid].agency != agency:
                raise EnvelopeError("unknown_key", f"{agency} has no key {kid} in the directory")
            return self._keys[kid]

        return lookup

    def _load(self, agency: str) -> None:
        jwks = self.call("GET", f"/v1/directory/agencies/{agency}/jwks")
        for jwk in jwks["keys"]:
            if jwk.get("use") == "sig" and jwk.get("status") == "active":
                public = OKPKey.import_key({k: jwk[k] for k in ("kty", "crv", "x")})
                self._keys[jwk["kid"]] = PublicKey(agency, jwk["kid"], public)
