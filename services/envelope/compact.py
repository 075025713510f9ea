"""Compact JWS for deskbridge's small signed documents (the signed directory, receipts): Ed25519 over the
payload, with a `typ` naming the kind of document, so a signature over one kind never passes for another."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jws import JWSRegistry

from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey

ED25519 = ("Ed25519",)
ED25519_OR_LEGACY = ("Ed25519", "EdDSA")  # EdDSA: RFC 9864 deprecates it; accepted from older clients
# joserfc refuses payloads over 128,000 bytes by default; the signed directory keeps every key an agency
# ever had (rotated ones too), so it outgrows that at about 200 agencies. Receipts are bounded where they
# come in (AckIn), the directory by what its own gateway signed.
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def _registry(algorithms: Sequence[str]) -> JWSRegistry:
    registry = JWSRegistry(algorithms=list(algorithms))
    registry.max_payload_length = MAX_DOCUMENT_BYTES
    return registry


def sign_compact(payload: bytes, signer: SigningKey, typ: str) -> str:
    header = {"alg": "Ed25519", "kid": signer.kid, "typ": typ}
    return jws.serialize_compact(header, payload, signer.key, registry=_registry(ED25519))


def read_compact(token: str) -> tuple[dict[str, Any], bytes]:
    """The protected header and payload, NOT verified: what a verifier needs to find the key."""
    try:
        extracted = jws.extract_compact(token.encode())
    except (JoseError, ValueError) as exc:
        raise EnvelopeError("malformed", "not a compact JWS") from exc
    return dict(extracted.protected), extracted.payload


def verify_compact(token: str, key: PublicKey, typ: str, algorithms: Sequence[str] = ED25519) -> bytes:
    """The payload, once `key` is shown to have signed it as a document of kind `typ`."""
    try:
        verified = jws.deserialize_compact(token, key.key, registry=_registry(algorithms))
    except Exception as exc:  # any JOSE or decoding failure: the signature is not the key's
        raise EnvelopeError("bad_signature", f"the signature does not verify with key {key.kid}") from exc
    if verified.protected.get("typ") != typ:
        raise EnvelopeError("malformed", f"the signed document is not a {typ}")
    return verified.payload
