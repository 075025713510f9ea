"""Seal, verify and open notice envelopes: the one module that touches keys and JOSE.

An envelope is three standard layers (docs/envelope.md):
  inner  JWS compact, Ed25519, over the canonical JSON of the notice (non-repudiation);
  middle JWE general JSON, A256GCM content, ECDH-ES+A256KW with X25519 per recipient; its protected
         header carries the routing fields so nobody routes on plaintext;
  outer  JWS flattened JSON, Ed25519, over the JWE bytes, so ingest and audit check origin without keys
         to decrypt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any, TypeVar, cast

import pybase64
import rfc8785
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from joserfc import jwe, jws
from joserfc.errors import JoseError
from joserfc.jwe import JWERegistry
from joserfc.jwk import OKPKey
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter
from pydantic import BaseModel, ValidationError

from schemas.envelopes import (
    B64URL_ALPHABET,
    ENVELOPE_TYP,
    SEALED_TYP,
    SIGNED_TYP,
    FlattenedJws,
    GeneralJwe,
    RoutingHeader,
)
from schemas.notices import Notice
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey

SIGNATURE_ALGS = ("Ed25519", "EdDSA")  # EdDSA: RFC 9864 deprecates it; accepted from older clients
KEY_WRAP_ALG = "ECDH-ES+A256KW"
CONTENT_ALG = "A256GCM"
MAX_ENVELOPE_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class Freshness:
    """How old (`window`) or how far ahead (`skew`) of the receiving clock a `sent_at` may be."""

    window: timedelta
    skew: timedelta

    @classmethod
    def of(cls, freshness_s: float, clock_skew_s: float) -> Freshness:
        return cls(timedelta(seconds=freshness_s), timedelta(seconds=clock_skew_s))

    def check(self, sent_at: datetime, received_at: datetime) -> None:
        age = received_at - sent_at
        if age > self.window:
            raise EnvelopeError(
                "stale",
                f"sent_at is {age.total_seconds():.0f} s before it was received; "
                f"the freshness window is {self.window.total_seconds():.0f} s",
            )
        if -age > self.skew:
            raise EnvelopeError(
                "from_the_future",
                f"sent_at is {-age.total_seconds():.0f} s ahead of the receiver's clock; "
                f"the allowed skew is {self.skew.total_seconds():.0f} s",
            )


def _any(_: object) -> None:
    """Typed by RoutingHeader after decoding; joserfc only needs to know the names are ours."""


_ROUTING_PARAMS = {name: HeaderParameter(f"deskbridge {name}", _any) for name in RoutingHeader.model_fields}
_JWS_REGISTRY = JWSRegistry(algorithms=list(SIGNATURE_ALGS))
_JWE_REGISTRY = JWERegistry(
    header_registry=_ROUTING_PARAMS,
    algorithms=[KEY_WRAP_ALG, CONTENT_ALG],
    max_recipients=50,
)
# joserfc's default size limits (JWS payload 128,000 bytes, header 512; JWE ciphertext 64 KiB, protected
# header 1 KiB) refused a notice with a 40 KB attachment, or one addressed to some twenty agencies. The
# envelope's cap, which parse_envelope checks before joserfc sees anything, bounds every part, so each part
# may be as large as that cap. Set on our registries only, not on joserfc's defaults; the fixed-size parts
# (IV, tag, wrapped key, signature) keep joserfc's limits, far above what the algorithms produce.
_JWS_REGISTRY.max_header_length = _JWS_REGISTRY.max_payload_length = MAX_ENVELOPE_BYTES
_JWE_REGISTRY.max_protected_header_length = _JWE_REGISTRY.max_ciphertext_length = MAX_ENVELOPE_BYTES


def canonical_json(value: Any, plain: bool = False) -> bytes:
    """RFC 8785 (JCS): the bytes the inner signature covers and the audit log hashes, reproducible with any
    JCS library. Raises ValueError (mostly rfc8785.CanonicalizationError) for NaN and infinities, which
    JCS has no form for, for integers beyond +-(2**53 - 1), which a double cannot hold exactly, and for
    lone surrogates, which are not Unicode text.

    `plain`: the caller knows from its schema that `value` holds no floats, only integers within
    +-(2**53 - 1) and member names inside the Basic Multilingual Plane (where code point and UTF-16 order
    agree). JCS then writes exactly what Python's sorted compact JSON writes, which its C encoder does
    several times faster (the audit log hashes every entry twice)."""
    if plain:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return rfc8785.dumps(value)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# The last character of a canonical base64url string whose length is 2 or 3 modulo 4 carries 4 or 2 unused
# low bits, all zero (RFC 4648 section 3.5): these are the characters that may end such a string.
_LAST_OF_2 = frozenset(B64URL_ALPHABET[::16])
_LAST_OF_3 = frozenset(B64URL_ALPHABET[::4])


def _canonical_tail(value: str) -> bool:
    """Whether a string in the base64url alphabet is the one canonical unpadded spelling of some bytes,
    judged by its length and last character alone, without decoding it (for any other string: False,
    or True when only its alphabet is wrong)."""
    rest = len(value) % 4
    if rest == 0:
        return True
    if rest == 1:  # six bits more than whole bytes: no byte string encodes to this length
        return False
    return value[-1] in (_LAST_OF_2 if rest == 2 else _LAST_OF_3)


def _b64url_decode(value: str) -> bytes:
    """Strict: only the one canonical unpadded encoding of some bytes is accepted (RFC 7515 section 2),
    so no two spellings of one envelope exist and the JOSE library never meets what we let through.
    pybase64's vectorised decoder validates as it decodes (3 us for a 12 KB payload; the standard
    library's took 44 us). With altchars it would also take '+' and '/', which are not base64url, so they
    are refused first; padding in the value ('=') shows as a short result."""
    try:
        if _canonical_tail(value) and "+" not in value and "/" not in value:
            data = pybase64.b64decode(value + "=" * (-len(value) % 4), altchars=b"-_", validate=True)
            if len(data) == len(value) * 3 // 4:
                return data
    except ValueError:  # binascii.Error is one, and so is a value not in ASCII
        pass
    raise EnvelopeError("malformed", "a base64url field is not in canonical unpadded form")


def _check_b64url_fields(sealed: GeneralJwe, outer: FlattenedJws) -> None:
    """The fields parse_envelope does not decode; their schema type (B64Url) has checked the alphabet."""
    canonical = (
        _canonical_tail(outer.signature)
        and _canonical_tail(sealed.iv)
        and _canonical_tail(sealed.ciphertext)
        and _canonical_tail(sealed.tag)
        and all(_canonical_tail(entry.encrypted_key) for entry in sealed.recipients)
    )
    if not canonical:
        raise EnvelopeError("malformed", "a base64url field is not in canonical unpadded form")


# What the JOSE library and `cryptography` raise on input they cannot use, besides JoseError.
_LIBRARY_ERRORS = (JoseError, ValueError, KeyError, TypeError)


class _DuplicateMember(ValueError):
    pass


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _DuplicateMember
    return value


# One decoder for every header (it keeps no state between calls): json.loads with a hook builds a new one
# per call, which costs more than decoding a header.
_HEADER_JSON = json.JSONDecoder(object_pairs_hook=_unique_members)


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """A small JSON object (a protected header) in UTF-8, as the envelope's own JSON must be; a member
    named twice is refused, not resolved, so no two readers of one header can disagree on what it says
    (docs/envelope.md 4.4)."""
    try:
        value = _HEADER_JSON.decode(data.decode("utf-8"))
    except RecursionError as exc:
        raise EnvelopeError("malformed", f"{what} is nested too deeply") from exc
    except _DuplicateMember as exc:
        raise EnvelopeError("malformed", f"{what} names a member twice") from exc
    except ValueError as exc:  # also JSONDecodeError, UnicodeDecodeError, a BOM, and over-long numbers
        raise EnvelopeError("malformed", f"{what} is not JSON") from exc
    if not isinstance(value, dict):
        raise EnvelopeError("malformed", f"{what} is not a JSON object")
    return value


_Model = TypeVar("_Model", bound=BaseModel)


def _validated(model: type[_Model], data: bytes | dict[str, Any], what: str) -> _Model:
    """One pass from JSON bytes (or a parsed header) to the closed model; any failure is `malformed`."""
    try:
        if isinstance(data, dict):
            return model.model_validate(data)
        return model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":  # also not UTF-8, a lone surrogate, too deep, a number too long
            reason = first["msg"].removeprefix("Invalid JSON: ")
            raise EnvelopeError("malformed", f"{what} is not JSON: {reason}") from exc
        if first["type"] == "model_type":
            raise EnvelopeError("malformed", f"{what} is not a JSON object") from exc
        where = ".".join(str(p) for p in (what, *first["loc"]))
        raise EnvelopeError("malformed", f"{where}: {first['msg']}") from exc


@dataclass(frozen=True)
class ParsedEnvelope:
    """An envelope read but not yet trusted: enough to look up the signer's key."""

    raw: bytes
    outer: FlattenedJws
    outer_header: dict[str, Any]
    kid: str
    alg: str
    jwe: GeneralJwe
    routing: RoutingHeader

    @cached_property
    def sha256(self) -> str:
        """Hashed once, when first asked for: the gateway, ingest and audit each need it more than once."""
        return sha256_hex(self.raw)


def parse_envelope(raw: bytes | str) -> ParsedEnvelope:
    """Reads the outer JWS and the JWE's routing header; checks shape only, trusts nothing."""
    try:
        data = raw.encode() if isinstance(raw, str) else raw
    except UnicodeEncodeError as exc:
        raise EnvelopeError("malformed", "envelope is not valid UTF-8 text") from exc
    if len(data) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError("oversize", f"envelope is {len(data)} bytes, the limit is {MAX_ENVELOPE_BYTES}")
    outer = _validated(FlattenedJws, data, "envelope")
    outer_header = _json_object(_b64url_decode(outer.protected), "outer protected header")
    sealed = _validated(GeneralJwe, _b64url_decode(outer.payload), "JWE")
    jwe_header = _json_object(_b64url_decode(sealed.protected), "JWE protected header")
    routing = _validated(RoutingHeader, jwe_header, "JWE protected header")
    _check_b64url_fields(sealed, outer)
    alg, kid = outer_header.get("alg"), outer_header.get("kid")
    if alg not in SIGNATURE_ALGS:
        raise EnvelopeError("bad_algorithm", f"outer signature algorithm {alg!r} is not accepted")
    if not isinstance(kid, str) or not kid:
        raise EnvelopeError("malformed", "outer protected header has no kid")
    if outer_header.get("typ") != ENVELOPE_TYP or jwe_header.get("typ") != SEALED_TYP:
        raise EnvelopeError("malformed", "envelope typ headers are not deskbridge's")
    if jwe_header.get("enc") != CONTENT_ALG:
        raise EnvelopeError("bad_algorithm", f"content encryption must be {CONTENT_ALG}")
    for entry in sealed.recipients:
        if entry.header.get("alg") != KEY_WRAP_ALG:
            raise EnvelopeError("bad_algorithm", f"key wrapping must be {KEY_WRAP_ALG}")
    return ParsedEnvelope(data, outer, outer_header, kid, alg, sealed, routing)


def verify_outer(envelope: ParsedEnvelope, signer: PublicKey) -> None:
    """Checks the outer signature and that its key belongs to the named sender; needs no decryption key."""
    if signer.agency != envelope.routing.sender:
        raise EnvelopeError("signer_mismatch", f"key {signer.kid} is not a key of {envelope.routing.sender}")
    outer = envelope.outer
    try:
        # What joserfc checked before verifying: its rules for header parameters (crit, the types of the
        # registered ones, no others), and that the key may verify. Then Ed25519 straight over the segments
        # as received; parse_envelope has checked alg and that the signature is canonical base64url.
        _JWS_REGISTRY.check_header(envelope.outer_header)
        public = signer.key.get_op_key("verify")
        if not isinstance(public, Ed25519PublicKey):
            raise TypeError(f"key {signer.kid} is not an Ed25519 key")
        public.verify(_b64url_decode(outer.signature), f"{outer.protected}.{outer.payload}".encode())
    except (InvalidSignature, *_LIBRARY_ERRORS) as exc:
        raise EnvelopeError("bad_signature", "outer signature does not verify") from exc


def recipient_kids(envelope: ParsedEnvelope) -> list[str]:
    return [str(entry.header.get("kid", "")) for entry in envelope.jwe.recipients]


def seal_notice(notice: Notice, signer: SigningKey, recipients: Sequence[PublicKey]) -> bytes:
    """Signs, encrypts once for every recipient, and signs the result; returns the envelope bytes."""
    if notice.sender != signer.agency:
        raise EnvelopeError("signer_mismatch", "the notice's sender is not the signing agency")
    if sorted(r.agency for r in recipients) != sorted(notice.recipients):
        raise EnvelopeError("recipient_mismatch", "a key is needed for exactly each addressed agency")
    payload = canonical_json(notice.model_dump(mode="json", exclude_none=True))
    inner = jws.serialize_compact(
        {"alg": "Ed25519", "kid": signer.kid, "typ": SIGNED_TYP, "cty": "json"},
        payload,
        signer.key,
        registry=_JWS_REGISTRY,
    )
    routing = routing_of(notice)
    protected = {"enc": CONTENT_ALG, "typ": SEALED_TYP, "cty": "JOSE"}
    protected.update(routing.model_dump(mode="json", exclude_none=True))
    sealed = jwe.GeneralJSONEncryption(protected, inner.encode())
    for recipient in recipients:
        sealed.add_recipient({"alg": KEY_WRAP_ALG, "kid": recipient.kid}, recipient.key)
    jwe_json = jwe.encrypt_json(sealed, None, registry=_JWE_REGISTRY)
    outer = jws.serialize_json(
        {"protected": {"alg": "Ed25519", "kid": signer.kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP}},
        canonical_json(jwe_json),
        signer.key,
        registry=_JWS_REGISTRY,
    )
    return canonical_json(outer)


def open_envelope(
    envelope: ParsedEnvelope,
    my_keys: Mapping[str, OKPKey],
    signer_key: Callable[[str], PublicKey],
) -> Notice:
    """Decrypts with one of the reader's own X25519 keys and verifies the sender's inner signature.

    `signer_key(kid)` returns that key from the directory (or raises EnvelopeError for an unknown kid).
    """
    verify_outer(envelope, signer_key(envelope.kid))
    entry = next((e for e in envelope.jwe.recipients if str(e.header.get("kid")) in my_keys), None)
    if entry is None:
        raise EnvelopeError("not_a_recipient", "none of the envelope's recipient keys is ours")
    # joserfc would decrypt both (aad as extra authenticated data, unprotected as shared header); deskbridge
    # seals neither, and a partner's client need not understand them (docs/envelope.md 4.2).
    if envelope.jwe.aad is not None or envelope.jwe.unprotected is not None:
        raise EnvelopeError("undecryptable", "the JWE has aad or an unprotected header; we use neither")
    # RFC 7516 7.2.2: a recipient hands the library the shared fields plus its own entry.
    flattened = envelope.jwe.model_dump(exclude={"recipients"}, exclude_none=True)
    flattened.update(entry.model_dump())
    try:
        opened = jwe.decrypt_json(
            cast(Any, flattened), my_keys[str(entry.header["kid"])], registry=_JWE_REGISTRY
        )
    except _LIBRARY_ERRORS as exc:
        raise EnvelopeError("undecryptable", "the envelope does not decrypt with our key") from exc
    if opened.plaintext is None:
        raise EnvelopeError("undecryptable", "the envelope has no content")
    try:
        inner_header = _json_object(_b64url_decode(opened.plaintext.split(b".")[0].decode()), "inner header")
    except UnicodeDecodeError as exc:
        raise EnvelopeError("malformed", "inner JWS is not text") from exc
    inner_kid = inner_header.get("kid")
    if not isinstance(inner_kid, str):
        raise EnvelopeError("malformed", "inner JWS has no kid")
    inner_signer = signer_key(inner_kid)
    if inner_signer.agency != envelope.routing.sender:
        raise EnvelopeError("signer_mismatch", "the inner signature is not the sender's")
    try:
        signed = jws.deserialize_compact(opened.plaintext, inner_signer.key, registry=_JWS_REGISTRY)
    except _LIBRARY_ERRORS as exc:
        raise EnvelopeError("bad_signature", "inner signature does not verify") from exc
    try:
        notice = Notice.model_validate_json(signed.payload)
    except ValidationError as exc:
        raise EnvelopeError("malformed", f"signed notice is not valid: {exc.errors()[0]['msg']}") from exc
    _check_binding(envelope.routing, notice)
    return notice


def routing_of(notice: Notice) -> RoutingHeader:
    """The routing header a notice is sealed under: its metadata, none of its contents."""
    return RoutingHeader(
        sender=notice.sender,
        notice_id=notice.notice_id,
        notice_type=notice.type,
        priority=notice.priority,
        tlp=notice.tlp,
        case_ref=notice.case_ref,
        recipients=notice.recipients,
        sent_at=notice.sent_at,
        expires_at=notice.expires_at,
        in_reply_to=notice.in_reply_to,
        forwarded_from=notice.forwarded_from,
    )


def _check_binding(routing: RoutingHeader, notice: Notice) -> None:
    """The routing header must say exactly what the sender signed, so routing cannot lie."""
    if routing_of(notice) != routing:
        raise EnvelopeError("header_mismatch", "the routing header differs from the signed notice")
