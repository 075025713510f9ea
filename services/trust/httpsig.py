"""HTTP Message Signatures (RFC 9421) with Ed25519: an agency signs its API calls with its own directory key.

A signature covers `("@method" "@target-uri" "content-digest")` (RFC 9530 `sha-256`, also for an empty
body) with `created`, `keyid` (the key's RFC 7638 thumbprint), a random 128-bit `nonce` and
`alg="ed25519"`, under the label `sig1`. The RFC mechanics (signature base, structured fields, digests)
are the `http-message-signatures` library's; this module adds our policy on top: what must be covered,
how fresh, which directory key, and never the same nonce twice.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import http_sf
import httpx
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    MappingKeyResolver,
    algorithms,
)
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.envelope.errors import EnvelopeError, KeyFileError
from services.envelope.keys import PublicKey, SigningKey
from services.platform.database import utcnow
from services.trust.errors import SignatureError
from services.trust.models import SeenNonce
from services.trust.service import verification_key

LABEL = "sig1"
ALG = algorithms.ED25519.algorithm_id  # "ed25519"
COVERED = ("@method", "@target-uri", "content-digest")
NONCE_BYTES = 16
NONCE_MIN, NONCE_MAX = 16, 128  # characters the verifier accepts: some entropy, and it fits seen_nonces

KeyLookup = Callable[[str, datetime], Awaitable[PublicKey]]
Headers = Mapping[str, str] | Sequence[tuple[str, str]]


@dataclass(frozen=True)
class SignaturePolicy:
    """What a verifier demands; the defaults are deskbridge's, the RFC vectors need looser ones."""

    covered: tuple[str, ...] = COVERED
    freshness_s: int = 300
    skew_s: int = 30
    nonce_required: bool = True


@dataclass(frozen=True)
class VerifiedRequest:
    agency: str
    kid: str
    created: datetime
    nonce: str | None


@dataclass(frozen=True)
class _Message:
    """The request as the library reads it: method, absolute URL, header fields."""

    method: str
    url: str
    headers: httpx.Headers


class RequestSigner(httpx.Auth):
    """Signs every outgoing request with the agency's Ed25519 key instead of sending a bearer token."""

    requires_request_body = True

    def __init__(
        self, key: SigningKey, clock: Callable[[], datetime] = utcnow, also_cover: tuple[str, ...] = ()
    ) -> None:
        """`also_cover` names extra header fields (lowercase) the signature covers."""
        self._also_cover = also_cover
        private = key.ed25519()
        self._kid = key.kid
        self._clock = clock
        self._signer = HTTPMessageSigner(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.kid: private}),
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Passing the body makes the library add Content-Digest and cover it, also for an empty body.
        self._signer.sign(
            request,
            key_id=self._kid,
            created=self._clock(),
            nonce=secrets.token_urlsafe(NONCE_BYTES),
            label=LABEL,
            covered_component_ids=(*COVERED[:2], *self._also_cover),
            body=request.content,
        )
        yield request


def _parse_dictionary(headers: httpx.Headers, name: str) -> dict[str, Any]:
    value = headers.get(name)
    if not value:
        raise SignatureError("both Signature-Input and Signature are required")
    try:
        parsed = http_sf.parse(value.encode("latin-1"), tltype="dictionary")
    except (ValueError, TypeError, UnicodeEncodeError) as exc:
        raise SignatureError(f"{name} is not a structured-field dictionary (RFC 8941)") from exc
    assert isinstance(parsed, dict)
    return parsed


def _read_input(headers: httpx.Headers) -> tuple[list[str], dict[str, Any]]:
    """The covered component names and the signature parameters of the one signature present."""
    inputs = _parse_dictionary(headers, "Signature-Input")
    signatures = _parse_dictionary(headers, "Signature")
    if len(inputs) != 1 or inputs.keys() != signatures.keys():
        raise SignatureError(
            f"exactly one signature with the same label in Signature-Input and Signature is expected, "
            f"found {sorted(inputs)} and {sorted(signatures)}"
        )
    members, params = next(iter(inputs.values()))
    if not isinstance(members, list):
        raise SignatureError("Signature-Input must hold an inner list of covered components")
    covered = [str(value) for value, component_params in members if not component_params]
    return covered, params


def _check_input(covered: list[str], params: dict[str, Any], policy: SignaturePolicy, now: datetime) -> None:
    missing = [c for c in policy.covered if c not in covered]
    if missing:
        wanted = " ".join(f'"{c}"' for c in policy.covered)
        raise SignatureError(f"it must cover ({wanted}); {', '.join(missing)} not covered")
    alg = params.get("alg")
    if alg is not None and alg != ALG:
        raise SignatureError(f'alg "{alg}" is not accepted; sign with "{ALG}"')
    if type(params.get("keyid")) is not str:
        raise SignatureError("keyid (the signing key's thumbprint) is required")
    created = params.get("created")
    if type(created) is not int:
        raise SignatureError("created (an integer UNIX time) is required")
    age = int(now.timestamp()) - created
    if age > policy.freshness_s:
        raise SignatureError(f"created is {age} s old, the window is {policy.freshness_s} s")
    if -age > policy.skew_s:
        raise SignatureError(
            f"created is {-age} s in the future, clocks may differ by {policy.skew_s} s at most"
        )
    expires = params.get("expires")
    if expires is not None and (type(expires) is not int or expires < now.timestamp()):
        raise SignatureError("the signature has expired")
    nonce = params.get("nonce")
    if policy.nonce_required and (type(nonce) is not str or not NONCE_MIN <= len(nonce) <= NONCE_MAX):
        raise SignatureError(f"nonce (a random string of {NONCE_MIN} to {NONCE_MAX} characters) is required")


async def verify_request(
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    lookup: KeyLookup,
    policy: SignaturePolicy,
    now: datetime,
) -> VerifiedRequest:
    """Checks a signed request against `policy` as of `now`; the caller keeps the nonce (no I/O here
    but `lookup`, which returns the directory key for a kid at the signing time or raises EnvelopeError)."""
    fields = httpx.Headers(headers)
    covered, params = _read_input(fields)
    _check_input(covered, params, policy, now)
    kid: str = params["keyid"]
    created = datetime.fromtimestamp(params["created"], UTC)
    try:
        # created has whole seconds and the signature was made within the one after it: judging the key at
        # the end of that second keeps a key registered in the same second from counting as not yet valid.
        public = await lookup(kid, created + timedelta(microseconds=999_999))
    except EnvelopeError as exc:
        raise SignatureError(exc.detail) from exc
    try:
        key = public.ed25519()
    except KeyFileError as exc:
        raise SignatureError(f"key {kid} is not an Ed25519 key") from exc
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={kid: key}, private_keys={}),
    )
    # Freshness was checked above against `now`; the library's own clock check only needs our skew.
    verifier.max_clock_skew = timedelta(seconds=policy.skew_s)
    message = _Message(method.upper(), url, fields)
    try:
        results = verifier.verify(message, max_age=None)
    except HTTPMessageSignaturesException as exc:
        why = f" ({exc})" if str(exc) else ""
        raise SignatureError(f"the signature does not verify with key {kid}{why}") from exc
    if "content-digest" in policy.covered:
        try:
            verifier.verify_body(message, results, body)
        except HTTPMessageSignaturesException as exc:
            raise SignatureError(f"the body does not match Content-Digest ({exc})") from exc
    nonce = params.get("nonce")
    return VerifiedRequest(public.agency, kid, created, nonce if type(nonce) is str else None)


async def remember_nonce(session: AsyncSession, kid: str, nonce: str, now: datetime, keep_s: int) -> None:
    """Records a nonce once; a second use is a replay. Rows older than `keep_s` are pruned: by then a
    request carrying them is refused as stale anyway. The caller commits."""
    await session.execute(delete(SeenNonce).where(SeenNonce.seen_at < now - timedelta(seconds=keep_s)))
    session.add(SeenNonce(kid=kid, nonce=nonce, seen_at=now))
    try:
        await session.flush()
    except IntegrityError as exc:
        raise SignatureError(f"nonce {nonce} of key {kid} was already used: the request is a replay") from exc


async def authenticate_request(
    session: AsyncSession,
    method: str,
    url: str,
    headers: Headers,
    body: bytes,
    freshness_s: int,
    skew_s: int,
) -> VerifiedRequest:
    """A signed request checked against the directory's keys and the seen nonces; the caller commits."""

    async def directory_key(kid: str, signed_at: datetime) -> PublicKey:
        return await verification_key(session, kid, signed_at=signed_at)

    now = utcnow()
    policy = SignaturePolicy(freshness_s=freshness_s, skew_s=skew_s)
    verified = await verify_request(method, url, headers, body, directory_key, policy, now)
    assert verified.nonce is not None  # the policy requires one
    # A request signed up to skew_s ahead stays fresh that much longer, so its nonce is kept as long.
    await remember_nonce(session, verified.kid, verified.nonce, now, freshness_s + skew_s)
    return verified
