"""The lean envelope parse at its edges: canonical base64url judged without decoding, JSON read in one pass
(duplicate members, bytes that are not UTF-8, huge numbers, deep nesting), the outer signature verified
straight over the segments, the hash taken once. Every defect must be the documented refusal
(docs/envelope.md 4.4, 5), never another exception."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import OKPKey

from schemas.envelopes import FlattenedJws
from services.envelope import service
from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import B64URL_ALPHABET, ParsedEnvelope, parse_envelope, verify_outer
from tests.envelope.test_service import DESK, PARTNERS, World, b64, expect, make_notice, seal, unb64


@pytest.fixture(scope="module")
def world() -> World:
    keys = {name: AgencyKeys.generate(name) for name in (DESK, *PARTNERS)}
    return World(keys, {k.signing_kid: k.public_keys()[0] for k in keys.values()})


@pytest.fixture(scope="module")
def envelope(world: World) -> bytes:
    return seal(world, make_notice(list(PARTNERS[:2])))


def _reference_decode(value: str) -> bytes | None:
    """The check parse_envelope made before: decode leniently, re-encode, compare."""
    try:
        data = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if base64.urlsafe_b64encode(data).rstrip(b"=").decode() == value else None


def _fast_decode(value: str) -> bytes | None:
    try:
        return service._b64url_decode(value)
    except EnvelopeError as error:
        assert error.code == "malformed"
        return None


def _schema_admits(value: str) -> bool:
    try:
        FlattenedJws(protected="", payload="", signature=value)
    except ValueError:
        return False
    return True


# Canonical encodings, then one character changed, dropped or added, so that near misses are common.
_NEAR = "=+/ \n\t.é\x00" + B64URL_ALPHABET
_ENCODED = st.binary(max_size=40).map(b64)
_STRINGS = st.one_of(
    st.text(alphabet=_NEAR, max_size=40),
    st.text(max_size=12),
    st.tuples(_ENCODED, st.integers(0, 40), st.sampled_from(_NEAR)).map(
        lambda t: t[0][: t[1]] + t[2] + t[0][t[1] + 1 :]
    ),
    st.tuples(_ENCODED, st.sampled_from(_NEAR)).map(lambda t: t[0] + t[1]),
    _ENCODED,
)


@settings(max_examples=1500, deadline=None, database=None)
@given(value=_STRINGS)
def test_the_fast_base64url_decode_agrees_with_decode_and_reencode(value: str) -> None:
    assert _fast_decode(value) == _reference_decode(value)


@settings(max_examples=1500, deadline=None, database=None)
@given(value=_STRINGS)
def test_the_schema_alphabet_and_the_tail_check_agree_with_decode_and_reencode(value: str) -> None:
    """What the fields parse_envelope does not decode get: the B64Url pattern, then length and last char."""
    fast = _schema_admits(value) and service._canonical_tail(value)
    assert fast == (_reference_decode(value) is not None)


# --------------------------------------------------------------------------- one field at a time


def _parts(envelope: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the envelope object, the JWE object), read without our parser."""
    outer = json.loads(envelope)
    return outer, json.loads(unb64(outer["payload"]))


def _build(outer: dict[str, Any], jwe: dict[str, Any] | None) -> bytes:
    """The envelope again, its payload the JWE re-encoded unless `jwe` is None (no signature made)."""
    if jwe is not None:
        outer = {**outer, "payload": b64(json.dumps(jwe).encode())}
    return json.dumps(outer).encode()


def _placed(envelope: bytes, field: str, value: str) -> bytes:
    """The envelope with one base64url field replaced by `value` (no signature made: parse checks none)."""
    outer, jwe = _parts(envelope)
    if field.startswith("outer."):
        outer[field.removeprefix("outer.")] = value
        return _build(outer, None if field == "outer.payload" else jwe)
    if field == "encrypted_key":
        jwe["recipients"][0]["encrypted_key"] = value
    else:
        jwe[field] = value
    return _build(outer, jwe)


def _variants(value: str) -> dict[str, str]:
    """Spellings of `value` that are not canonical unpadded base64url (or not base64url at all)."""
    rest = len(value) % 4
    found = {
        "space": value[:3] + " " + value[3:],
        "newline": value + "\n",
        "tab": "\t" + value,
        "plus": "+" + value[1:],
        "slash": value[:-2] + "/" + value[-1],
        "dot": value[:5] + "." + value[6:],
        "non-ascii": value[:-1] + "é",
        "a character too many": value + "A" * (1 - rest if rest <= 1 else 5 - rest),
    }
    if rest:
        found["padded"] = value + "=" * (4 - rest)
        last = B64URL_ALPHABET.index(value[-1])
        found["lowest unused bit set"] = value[:-1] + B64URL_ALPHABET[last | 1]
        found["highest unused bit set"] = value[:-1] + B64URL_ALPHABET[last | (8 if rest == 2 else 2)]
    return found


# Not decoded by parse_envelope: judged by the schema's alphabet and the tail check.
TAIL_CHECKED = ("outer.signature", "iv", "ciphertext", "tag", "encrypted_key")


@pytest.mark.parametrize("length", [7, 8, 9], ids=["len=2mod4", "len=3mod4", "len=0mod4"])
@pytest.mark.parametrize("field", TAIL_CHECKED)
def test_non_canonical_spellings_of_fields_not_decoded(envelope: bytes, field: str, length: int) -> None:
    value = b64(os.urandom(length))
    assert len(value) % 4 == {7: 2, 8: 3, 9: 0}[length]
    parse_envelope(_placed(envelope, field, value))  # the canonical spelling passes the parse
    for name, variant in _variants(value).items():
        assert _reference_decode(variant) is None, name
        expect("malformed", partial(parse_envelope, _placed(envelope, field, variant)))


def _header_with_length(header: dict[str, Any], rest: int) -> bytes:
    """The JSON text of `header`, padded with trailing white space to a length of `rest` modulo 3."""
    text = json.dumps(header).encode()
    return text + b" " * ((rest - len(text)) % 3)


DECODED = ("outer.protected", "outer.payload", "protected")


@pytest.mark.parametrize("rest", [1, 2, 0], ids=["len=2mod4", "len=3mod4", "len=0mod4"])
@pytest.mark.parametrize("field", DECODED)
def test_non_canonical_spellings_of_decoded_fields(envelope: bytes, field: str, rest: int) -> None:
    outer, jwe = _parts(envelope)
    source = {
        "outer.protected": json.loads(unb64(outer["protected"])),
        "outer.payload": jwe,
        "protected": json.loads(unb64(jwe["protected"])),
    }[field]
    value = b64(_header_with_length(source, rest))
    parse_envelope(_placed(envelope, field, value))
    for name, variant in _variants(value).items():
        assert _reference_decode(variant) is None, name
        expect("malformed", partial(parse_envelope, _placed(envelope, field, variant)))


@pytest.mark.parametrize("field", DECODED)
def test_an_empty_decoded_segment_is_malformed(envelope: bytes, field: str) -> None:
    expect("malformed", lambda: parse_envelope(_placed(envelope, field, "")))


def test_an_empty_signature_parses_and_does_not_verify(world: World, envelope: bytes) -> None:
    parsed = parse_envelope(_placed(envelope, "outer.signature", ""))
    expect("bad_signature", lambda: verify_outer(parsed, world.lookup(parsed.kid)))


# --------------------------------------------------------------------------- the JSON


def _resigned(world: World, header: bytes, payload: bytes, signer: str = DESK) -> bytes:
    """An outer JWS over exactly these header and payload bytes, by the signer's real key."""
    protected, body = b64(header), b64(payload)
    private = world.keys[signer].signing.get_op_key("sign")
    assert isinstance(private, Ed25519PrivateKey)
    signature = b64(private.sign(f"{protected}.{body}".encode()))
    return json.dumps({"payload": body, "protected": protected, "signature": signature}).encode()


def _outer_header(envelope: bytes) -> dict[str, Any]:
    header: dict[str, Any] = json.loads(unb64(json.loads(envelope)["protected"]))
    return header


def _payload(envelope: bytes) -> bytes:
    return unb64(json.loads(envelope)["payload"])


def test_a_member_named_twice_in_the_outer_protected_header_is_malformed(
    world: World, envelope: bytes
) -> None:
    header = json.dumps(_outer_header(envelope))
    doubled = header[:-1] + ', "kid": "someone-else"}'
    detail = expect(
        "malformed", lambda: parse_envelope(_resigned(world, doubled.encode(), _payload(envelope)))
    )
    assert "twice" in detail.detail


def test_a_member_named_twice_in_the_jwe_protected_header_is_malformed(envelope: bytes) -> None:
    outer, jwe = _parts(envelope)
    header = unb64(jwe["protected"]).decode()
    jwe["protected"] = b64((header[:-1] + ',"recipients":["ph-police"]}').encode())
    detail = expect("malformed", lambda: parse_envelope(_build(outer, jwe)))
    assert "twice" in detail.detail


def test_in_the_envelope_and_jwe_objects_the_last_of_a_doubled_member_counts(
    world: World, envelope: bytes
) -> None:
    """As json.loads and JSON.parse read them, and as before (docs/envelope.md 4.4): only the protected
    headers, which carry what the envelope is routed and checked by, refuse a doubled member."""
    outer = json.loads(envelope)
    text = json.dumps(outer)
    doubled = ('{"payload": "e30", "signature": "AAAA", ' + text[1:]).encode()
    parsed = parse_envelope(doubled)
    assert parsed.outer.payload == outer["payload"] and parsed.outer.signature == outer["signature"]
    verify_outer(parsed, world.lookup(parsed.kid))
    jwe_text = _payload(envelope).decode()
    doubled_jwe = ('{"ciphertext": "AAAA", ' + jwe_text[1:]).encode()
    reparsed = parse_envelope(_resigned(world, unb64(outer["protected"]), doubled_jwe))
    assert reparsed.jwe.ciphertext == json.loads(jwe_text)["ciphertext"]


def _utf16(text: bytes) -> bytes:
    return text.decode().encode("utf-16-le")


NOT_UTF8: dict[str, Callable[[bytes], bytes]] = {
    "a stray byte in a member name": lambda e: e.replace(b'"payload"', b'"pay\xffload"', 1),
    "a stray byte in a value": lambda e: e.replace(b'"signature":"', b'"signature":"\xff', 1),
    "a lone surrogate escape": lambda e: e.replace(b'"signature":"', b'"signature":"\\ud800', 1),
    "UTF-16": lambda e: e.decode().encode("utf-16"),
    "a byte order mark": lambda e: b"\xef\xbb\xbf" + e,
}


@pytest.mark.parametrize("make", list(NOT_UTF8.values()), ids=list(NOT_UTF8))
def test_an_envelope_that_is_not_utf8_json_is_malformed(
    envelope: bytes, make: Callable[[bytes], bytes]
) -> None:
    bad = make(envelope)
    assert bad != envelope
    expect("malformed", lambda: parse_envelope(bad))


HEADER_NOT_UTF8: dict[str, Callable[[bytes], bytes]] = {
    "a stray byte": lambda h: h.replace(b'"kid":"', b'"kid":"\xff', 1),
    "latin-1": lambda h: h.replace(b'"kid":"', '"kid":"é'.encode("latin-1"), 1),
    "UTF-16": _utf16,
    "UTF-32 with its mark": lambda h: h.decode().encode("utf-32"),
    "a byte order mark": lambda h: b"\xef\xbb\xbf" + h,
}


@pytest.mark.parametrize("make", list(HEADER_NOT_UTF8.values()), ids=list(HEADER_NOT_UTF8))
def test_a_protected_header_that_is_not_utf8_json_is_malformed(
    world: World, envelope: bytes, make: Callable[[bytes], bytes]
) -> None:
    header = json.dumps(_outer_header(envelope), separators=(",", ":")).encode()
    bad = _resigned(world, make(header), _payload(envelope))
    expect("malformed", lambda: parse_envelope(bad))


HUGE = "9" * 5000


@pytest.mark.parametrize(
    "make",
    [
        lambda e: e.replace(b'"signature":"', f'"signature":{HUGE},"x":"'.encode(), 1),
        lambda e: e.replace(b'"signature":"', b'"signature":1e999999,"x":"', 1),
        lambda e: e[:-1] + f',"n":{HUGE}}}'.encode(),
    ],
    ids=["huge integer", "huge exponent", "huge extra member"],
)
def test_a_huge_number_in_the_envelope_is_malformed(envelope: bytes, make: Callable[[bytes], bytes]) -> None:
    expect("malformed", lambda: parse_envelope(make(envelope)))


@pytest.mark.parametrize("number", [HUGE, "1e999999", "-1e999999", f"0.{HUGE}"])
def test_a_huge_number_in_the_outer_header_is_refused(world: World, envelope: bytes, number: str) -> None:
    """Refused as malformed, or (an unknown header parameter) when the signature is checked; never a crash."""
    header = json.dumps(_outer_header(envelope))[:-1] + f', "n": {number}}}'
    try:
        parsed = parse_envelope(_resigned(world, header.encode(), _payload(envelope)))
        verify_outer(parsed, world.lookup(parsed.kid))
    except EnvelopeError as error:
        assert error.code in {"malformed", "bad_signature"}, error.code
    else:
        raise AssertionError("accepted")


@pytest.mark.parametrize("number", [HUGE, "1e999999", "-1e999999"])
def test_a_huge_number_in_the_routing_header_is_malformed(envelope: bytes, number: str) -> None:
    outer, jwe = _parts(envelope)
    jwe_header = json.dumps({**json.loads(unb64(jwe["protected"])), "sent_at": "NUMBER"})
    jwe["protected"] = b64(jwe_header.replace('"NUMBER"', number).encode())
    expect("malformed", lambda: parse_envelope(_build(outer, jwe)))


@pytest.mark.parametrize(
    "sent_at", ["1767225600", "1767225600.5", '"1767225600"', '"2026-01-01 00:00:00Z"', '"2026-01-01T00:00Z"']
)
def test_a_time_that_is_not_rfc_3339_text_is_malformed(envelope: bytes, sent_at: str) -> None:
    """Unix time (a number or digits) and other spellings pydantic would read are not RFC 3339."""
    outer, jwe = _parts(envelope)
    jwe_header = json.dumps({**json.loads(unb64(jwe["protected"])), "sent_at": "TIME"})
    jwe["protected"] = b64(jwe_header.replace('"TIME"', sent_at).encode())
    expect("malformed", lambda: parse_envelope(_build(outer, jwe)))


DEEP = 100_000


def test_deeply_nested_json_is_malformed(world: World, envelope: bytes) -> None:
    expect("malformed", lambda: parse_envelope(b"[" * DEEP + b"]" * DEEP))
    expect("malformed", lambda: parse_envelope(envelope[:-1] + b',"x":' + b"[" * DEEP + b"]" * DEEP + b"}"))
    nested = b'{"alg":"Ed25519","x":' + b"[" * DEEP + b"]" * DEEP + b"}"
    expect("malformed", lambda: parse_envelope(_resigned(world, nested, _payload(envelope))))
    outer, jwe = _parts(envelope)
    deep_jwe = json.dumps(jwe)[:-1] + ', "unprotected": {"x": ' + "[" * DEEP + "]" * DEEP + "}}"
    outer["payload"] = b64(deep_jwe.encode())
    expect("malformed", lambda: parse_envelope(_build(outer, None)))


# --------------------------------------------------------------------------- the outer signature


def test_the_legacy_eddsa_alg_still_verifies(world: World, envelope: bytes) -> None:
    header = {**_outer_header(envelope), "alg": "EdDSA"}
    parsed = parse_envelope(_resigned(world, json.dumps(header).encode(), _payload(envelope)))
    verify_outer(parsed, world.lookup(parsed.kid))


@pytest.mark.parametrize(
    "extra",
    [{"x-unknown": 1}, {"crit": ["x-unknown"], "x-unknown": 1}, {"crit": ["b64"]}, {"cty": 7}, {"jku": 7}],
    ids=["unknown parameter", "crit unknown", "crit missing", "cty not a string", "jku not a string"],
)
def test_joserfc_header_rules_still_hold_for_a_validly_signed_outer(
    world: World, envelope: bytes, extra: dict[str, Any]
) -> None:
    """docs/envelope.md 7: an unknown header parameter in a JWS header is bad_signature, as when joserfc
    verified the outer signature itself."""
    header = {**_outer_header(envelope), **extra}
    parsed = parse_envelope(_resigned(world, json.dumps(header).encode(), _payload(envelope)))
    expect("bad_signature", lambda: verify_outer(parsed, world.lookup(parsed.kid)))


def test_a_key_that_is_not_ed25519_does_not_verify(world: World, envelope: bytes) -> None:
    parsed = parse_envelope(envelope)
    x25519 = world.encryption_key(DESK)
    expect("bad_signature", lambda: verify_outer(parsed, PublicKey(DESK, parsed.kid, x25519.key)))


def test_a_key_not_for_verifying_does_not_verify(world: World, envelope: bytes) -> None:
    parsed = parse_envelope(envelope)
    jwk = {**world.lookup(parsed.kid).key.as_dict(), "key_ops": ["sign"]}
    restricted = PublicKey(DESK, parsed.kid, OKPKey.import_key(jwk))
    expect("bad_signature", lambda: verify_outer(parsed, restricted))


def test_the_signature_covers_the_segments_as_sent(world: World, envelope: bytes) -> None:
    """Another spelling of the same header JSON (white space) is other bytes: its signature does not carry."""
    outer = json.loads(envelope)
    respelled = b64(json.dumps(_outer_header(envelope), indent=1).encode())
    parsed = parse_envelope(json.dumps({**outer, "protected": respelled}).encode())
    expect("bad_signature", lambda: verify_outer(parsed, world.lookup(parsed.kid)))


# --------------------------------------------------------------------------- the hash


def test_the_hash_is_taken_once(envelope: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counted(data: bytes) -> str:
        calls.append(data)
        return hashlib.sha256(data).hexdigest()

    monkeypatch.setattr(service, "sha256_hex", counted)
    parsed: ParsedEnvelope = parse_envelope(envelope)
    assert parsed.sha256 == parsed.sha256 == hashlib.sha256(envelope).hexdigest()
    assert calls == [envelope]
