"""The envelope against an independent JOSE library.

Our code (services.envelope, built on joserfc) must produce what jwcrypto — which knows nothing
of deskbridge — verifies and decrypts, and must open what jwcrypto produces; every tampering must be
refused with a stable `EnvelopeError.code`. Pure unit tests: keys are generated in memory, the only
file system use is the key-file test, which writes to pytest's tmp_path.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import event, given, settings
from hypothesis import strategies as st
from joserfc.jwk import OKPKey
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws
from jwcrypto.common import json_encode

from schemas.notices import Notice
from services.envelope.errors import EnvelopeError
from services.envelope.keys import KEYS_FILE, AgencyKeys, PublicKey, import_public
from services.envelope.service import (
    MAX_ENVELOPE_BYTES,
    open_envelope,
    parse_envelope,
    seal_notice,
    verify_outer,
)
from tests.support.sealing import notice_body

# Spelled out here rather than imported, so the tests pin the wire values (docs/envelope.md).
ENVELOPE_TYP = "deskbridge-envelope+jws"
SEALED_TYP = "deskbridge-notice+jwe"
SIGNED_TYP = "deskbridge-notice+jws"

DESK = "kr-desk"
PARTNERS = ("kh-police", "th-police", "vn-police")
OUTSIDER = "ph-police"


# --------------------------------------------------------------------------- keys and directory


@dataclass(frozen=True)
class World:
    """Every agency's key pair and the directory of public signing keys (kid -> PublicKey)."""

    keys: dict[str, AgencyKeys]
    directory: dict[str, PublicKey]

    def lookup(self, kid: str) -> PublicKey:
        try:
            return self.directory[kid]
        except KeyError:
            raise EnvelopeError("unknown_key", f"no key {kid} in the directory") from None

    def encryption_key(self, agency: str) -> PublicKey:
        return self.keys[agency].public_keys()[1]

    def open_as(self, agency: str, envelope: bytes | str) -> Notice:
        return open_envelope(parse_envelope(envelope), self.keys[agency].decryption_keys(), self.lookup)


@pytest.fixture(scope="module")
def world() -> World:
    keys = {name: AgencyKeys.generate(name) for name in (DESK, *PARTNERS, OUTSIDER)}
    directory = {k.signing_kid: k.public_keys()[0] for k in keys.values()}
    return World(keys, directory)


def _jwc_private(key: OKPKey) -> jwc_jwk.JWK:
    return jwc_jwk.JWK(**key.as_dict(private=True))


def _jwc_public(agency: AgencyKeys, use: str) -> jwc_jwk.JWK:
    """A public JWK exactly as the directory publishes it, imported by jwcrypto."""
    (jwk,) = [j for j in agency.public_jwks() if j["use"] == use]
    return jwc_jwk.JWK(**jwk)


# --------------------------------------------------------------------------- notices


def make_notice(recipients: list[str], sender: str = DESK, **overrides: Any) -> Notice:
    body = notice_body(recipients, sender=sender, sent_at="2025-03-31T09:00:00Z", **overrides)
    return Notice.model_validate(body)


def notice_bytes(notice: Notice) -> bytes:
    """The canonical JSON (RFC 8785) the inner signature covers, computed without our helpers."""
    return rfc8785.dumps(notice.model_dump(mode="json", exclude_none=True))


def routing_fields(notice: Notice) -> dict[str, Any]:
    """Our routing fields of the JWE protected header, written out from the notice by hand."""
    n = notice.model_dump(mode="json")
    fields = {
        "sender": n["sender"],
        "notice_id": n["notice_id"],
        "notice_type": n["type"],
        "priority": n["priority"],
        "tlp": n["tlp"],
        "case_ref": n["case_ref"],
        "recipients": n["recipients"],
        "sent_at": n["sent_at"],
        "expires_at": n["expires_at"],
        "in_reply_to": n["in_reply_to"],
    }
    return {k: v for k, v in fields.items() if v is not None}


def seal(world: World, notice: Notice) -> bytes:
    return seal_notice(
        notice, world.keys[notice.sender].signer(), [world.encryption_key(r) for r in notice.recipients]
    )


# --------------------------------------------------------------------------- jwcrypto builders


B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def jwc_inner(payload: bytes, signer: AgencyKeys, alg: str = "Ed25519", **header: Any) -> str:
    token = jwc_jws.JWS(payload)
    protected = {"alg": alg, "kid": signer.signing_kid, "typ": SIGNED_TYP, "cty": "json", **header}
    token.add_signature(_jwc_private(signer.signing), protected=json_encode(protected))
    return token.serialize(compact=True)


def jwc_seal(
    plaintext: bytes,
    routing: Mapping[str, Any],
    recipients: list[AgencyKeys],
    wrap_algs: list[str] | None = None,
    aad: bytes | None = None,
    unprotected: Mapping[str, Any] | None = None,
    **header: Any,
) -> dict[str, Any]:
    """JWE general JSON made by jwcrypto; returns the parsed JSON object."""
    protected = {"enc": "A256GCM", "typ": SEALED_TYP, "cty": "JOSE", **routing, **header}
    shared = None if unprotected is None else json_encode(unprotected)
    token = jwc_jwe.JWE(
        plaintext, protected=json_encode(protected), unprotected=shared, aad=aad, flattened=False
    )
    for i, recipient in enumerate(recipients):
        alg = wrap_algs[i] if wrap_algs else "ECDH-ES+A256KW"
        token.add_recipient(
            _jwc_public(recipient, "enc"), header=json_encode({"alg": alg, "kid": recipient.encryption_kid})
        )
    value: dict[str, Any] = json.loads(token.serialize())
    return value


def jwc_outer(
    jwe: Mapping[str, Any] | bytes, signer: AgencyKeys, alg: str = "Ed25519", **header: Any
) -> bytes:
    payload = jwe if isinstance(jwe, bytes) else json.dumps(jwe).encode()
    token = jwc_jws.JWS(payload)
    protected = {"alg": alg, "kid": signer.signing_kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP, **header}
    token.add_signature(_jwc_private(signer.signing), protected=json_encode(protected))
    return token.serialize().encode()


def jwc_envelope(
    world: World, notice: Notice, alg: str = "Ed25519", routing: Mapping[str, Any] | None = None
) -> bytes:
    """An envelope made entirely by jwcrypto."""
    sender = world.keys[notice.sender]
    inner = jwc_inner(notice_bytes(notice), sender, alg=alg)
    sealed = jwc_seal(
        inner.encode(),
        routing_fields(notice) if routing is None else routing,
        [world.keys[r] for r in notice.recipients],
    )
    return jwc_outer(sealed, sender, alg=alg)


def split(envelope: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(outer protected header, JWE object) of an envelope, read without our parser."""
    outer = json.loads(envelope)
    return json.loads(unb64(outer["protected"])), json.loads(unb64(outer["payload"]))


def jwc_decrypt(world: World, agency: str, envelope: bytes) -> bytes:
    """The inner compact JWS, as jwcrypto decrypts it with one recipient's key."""
    _, sealed = split(envelope)
    token = jwc_jwe.JWE()
    token.deserialize(json.dumps(sealed), _jwc_private(world.keys[agency].encryption))
    plaintext: bytes = token.payload
    return plaintext


def flip_bit(value: str) -> str:
    data = bytearray(unb64(value))
    data[len(data) // 2] ^= 0x01
    return b64(bytes(data))


def expect(reason: str, action: Callable[[], object]) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as caught:
        action()
    assert caught.value.code == reason, f"{caught.value.code}: {caught.value.detail}"
    return caught.value


# =========================================================================== 1. round trip, our code


@pytest.mark.parametrize("count", [1, 3])
def test_round_trip_every_recipient_opens_the_same_notice(world: World, count: int) -> None:
    notice = make_notice(list(PARTNERS[:count]))
    envelope = seal(world, notice)

    parsed = parse_envelope(envelope)
    assert parsed.routing.sender == DESK
    assert parsed.kid == world.keys[DESK].signing_kid
    assert len(parsed.jwe.recipients) == count
    assert {str(e.header["kid"]) for e in parsed.jwe.recipients} == {
        world.keys[p].encryption_kid for p in PARTNERS[:count]
    }
    for partner in PARTNERS[:count]:
        opened = world.open_as(partner, envelope)
        assert opened == notice
        assert notice_bytes(opened) == notice_bytes(notice)


@pytest.mark.parametrize("count", [1, 3])
def test_a_non_recipient_cannot_open(world: World, count: int) -> None:
    envelope = seal(world, make_notice(list(PARTNERS[:count])))
    expect("not_a_recipient", lambda: world.open_as(OUTSIDER, envelope))
    expect("not_a_recipient", lambda: world.open_as(DESK, envelope))  # the sender did not encrypt to itself


def test_a_foreign_key_under_a_recipients_kid_does_not_decrypt(world: World) -> None:
    envelope = seal(world, make_notice([PARTNERS[0]]))
    stolen_kid = {world.keys[PARTNERS[0]].encryption_kid: world.keys[OUTSIDER].encryption}
    expect("undecryptable", lambda: open_envelope(parse_envelope(envelope), stolen_kid, world.lookup))


def test_optional_fields_survive_the_round_trip(world: World) -> None:
    original = make_notice([PARTNERS[0]], sender=PARTNERS[1])
    reply = make_notice(
        [PARTNERS[0], DESK],
        type="reply",
        in_reply_to=str(original.notice_id),
        expires_at="2025-04-07T09:00:00+09:00",
        details="Ünïcødé — 감금 «quoted» \u2028 line separator",
    )
    assert world.open_as(DESK, seal(world, reply)) == reply


# =========================================================================== 2. jwcrypto reads ours


def test_public_jwks_kids_are_rfc7638_thumbprints(world: World) -> None:
    desk = world.keys[DESK]
    for jwk in desk.public_jwks():
        assert "d" not in jwk
        assert jwc_jwk.JWK(**jwk).thumbprint() == jwk["kid"]
    assert {j["kid"] for j in desk.public_jwks()} == {desk.signing_kid, desk.encryption_kid}


@pytest.mark.parametrize("count", [1, 3])
def test_jwcrypto_verifies_decrypts_and_verifies_ours(world: World, count: int) -> None:
    notice = make_notice(list(PARTNERS[:count]))
    envelope = seal(world, notice)
    sender_key = _jwc_public(world.keys[DESK], "sig")

    outer = jwc_jws.JWS()
    outer.deserialize(envelope.decode(), sender_key)  # raises unless the outer signature verifies
    assert outer.jose_header == {
        "alg": "Ed25519",
        "kid": world.keys[DESK].signing_kid,
        "typ": ENVELOPE_TYP,
        "cty": SEALED_TYP,
    }
    sealed = json.loads(outer.payload)
    assert len(sealed["recipients"]) == count
    assert json.loads(unb64(sealed["protected"])) == {
        "enc": "A256GCM",
        "typ": SEALED_TYP,
        "cty": "JOSE",
        **routing_fields(notice),
    }

    for partner in PARTNERS[:count]:
        token = jwc_jwe.JWE()
        token.deserialize(outer.payload.decode(), _jwc_private(world.keys[partner].encryption))
        headers = token.jose_header if isinstance(token.jose_header, list) else [token.jose_header]
        assert {h["alg"] for h in headers} == {"ECDH-ES+A256KW"}
        assert {h["enc"] for h in headers} == {"A256GCM"}
        assert {h["epk"]["crv"] for h in headers} == {"X25519"}

        inner = jwc_jws.JWS()
        inner.deserialize(token.payload.decode(), sender_key)
        assert inner.jose_header == {
            "alg": "Ed25519",
            "kid": world.keys[DESK].signing_kid,
            "typ": SIGNED_TYP,
            "cty": "json",
        }
        assert inner.payload == notice_bytes(notice)
        assert Notice.model_validate_json(inner.payload) == notice


def test_a_float_coordinate_is_signed_in_its_rfc8785_form(world: World) -> None:
    """JCS writes the double 11.0 as 11 and 0.00001 as 0.00001, where Python's json writes 11.0 and 1e-05."""
    location = {"country": "KH", "coordinates": {"lat": 11.0, "lon": 0.00001}}
    notice = make_notice([PARTNERS[0]], locations=[location])
    envelope = seal(world, notice)
    sender_key = _jwc_public(world.keys[DESK], "sig")
    inner = jwc_jws.JWS()
    inner.deserialize(jwc_decrypt(world, PARTNERS[0], envelope).decode(), sender_key)  # verifies
    assert b'"coordinates":{"lat":11,"lon":0.00001}' in inner.payload
    assert b"11.0" not in inner.payload and b"1e-05" not in inner.payload
    assert inner.payload == notice_bytes(notice)
    assert world.open_as(PARTNERS[0], envelope) == notice


def test_jwcrypto_rejects_ours_with_the_wrong_keys(world: World) -> None:
    envelope = seal(world, make_notice([PARTNERS[0]]))
    with pytest.raises(jwc_jws.InvalidJWSSignature):
        jwc_jws.JWS().deserialize(envelope.decode(), _jwc_public(world.keys[OUTSIDER], "sig"))
    _, sealed = split(envelope)
    with pytest.raises(jwc_jwe.InvalidJWEData):
        jwc_jwe.JWE().deserialize(json.dumps(sealed), _jwc_private(world.keys[OUTSIDER].encryption))


# =========================================================================== 3. we read jwcrypto's


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's SecurityWarning: accepted on purpose
@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
def test_we_open_an_envelope_made_by_jwcrypto(world: World, alg: str) -> None:
    notice = make_notice(list(PARTNERS[:2]))
    envelope = jwc_envelope(world, notice, alg=alg)

    parsed = parse_envelope(envelope)
    assert parsed.alg == alg
    assert parsed.kid == world.keys[DESK].signing_kid
    verify_outer(parsed, world.lookup(parsed.kid))
    for partner in PARTNERS[:2]:
        assert world.open_as(partner, envelope) == notice
    expect("not_a_recipient", lambda: world.open_as(PARTNERS[2], envelope))


def test_we_open_a_jwcrypto_reply_with_optional_routing_fields(world: World) -> None:
    reply = make_notice(
        [DESK, PARTNERS[1]],
        sender=PARTNERS[0],
        type="reply",
        in_reply_to=str(uuid.uuid4()),
        expires_at="2025-04-01T09:00:00Z",
    )
    envelope = jwc_envelope(world, reply)
    assert world.open_as(DESK, envelope) == reply
    assert world.open_as(PARTNERS[1], envelope) == reply


def test_we_open_a_single_recipient_general_jwe_from_jwcrypto(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    assert world.open_as(PARTNERS[0], jwc_envelope(world, notice)) == notice


def test_an_envelope_signed_over_the_old_canonical_form_still_opens(world: World) -> None:
    """Before RFC 8785 the notice was signed as Python's json.dumps wrote it ("lat":11.0). Receivers
    verify the bytes as sent and never re-canonicalize, so such envelopes open as before."""
    notice = make_notice(
        [PARTNERS[0]], locations=[{"country": "KH", "coordinates": {"lat": 11.0, "lon": 1e-05}}]
    )
    value = notice.model_dump(mode="json", exclude_none=True)
    old_form = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert b'"lat":11.0,"lon":1e-05' in old_form and old_form != notice_bytes(notice)
    sender = world.keys[DESK]
    sealed = jwc_seal(jwc_inner(old_form, sender).encode(), routing_fields(notice), [world.keys[PARTNERS[0]]])
    assert world.open_as(PARTNERS[0], jwc_outer(sealed, sender)) == notice


# =========================================================================== 4. tampering


@pytest.fixture(scope="module")
def sealed_pair(world: World) -> tuple[Notice, bytes]:
    notice = make_notice(list(PARTNERS[:2]))
    return notice, seal(world, notice)


def resealed(world: World, sealed: Mapping[str, Any]) -> bytes:
    """The JWE re-signed by the desk, so that only the JWE's own checks can catch a change."""
    return jwc_outer(sealed, world.keys[DESK])


def test_an_untouched_resigned_envelope_still_opens(world: World, sealed_pair: tuple[Notice, bytes]) -> None:
    """Control for the tests below: re-signing alone changes nothing."""
    notice, envelope = sealed_pair
    _, sealed = split(envelope)
    assert world.open_as(PARTNERS[0], resealed(world, sealed)) == notice


@pytest.mark.parametrize("field", ["ciphertext", "tag", "iv"])
def test_altered_jwe_fields(world: World, sealed_pair: tuple[Notice, bytes], field: str) -> None:
    _, envelope = sealed_pair
    outer, sealed = json.loads(envelope), split(envelope)[1]
    sealed[field] = flip_bit(sealed[field])

    # as it travels: the outer signature no longer covers it
    outer["payload"] = b64(json.dumps(sealed).encode())
    expect("bad_signature", lambda: world.open_as(PARTNERS[0], json.dumps(outer).encode()))
    expect(
        "bad_signature",
        lambda: verify_outer(parse_envelope(json.dumps(outer)), world.lookup(outer_kid(outer))),
    )
    # re-signed by the sender: AES-GCM refuses it
    expect("undecryptable", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


def outer_kid(outer: Mapping[str, Any]) -> str:
    kid: str = json.loads(unb64(outer["protected"]))["kid"]
    return kid


def test_altered_encrypted_key(world: World, sealed_pair: tuple[Notice, bytes]) -> None:
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    sealed["recipients"][0]["encrypted_key"] = flip_bit(sealed["recipients"][0]["encrypted_key"])
    tampered = resealed(world, sealed)
    expect("undecryptable", lambda: world.open_as(PARTNERS[0], tampered))
    assert world.open_as(PARTNERS[1], tampered) == sealed_pair[0]  # the other recipient's entry is intact


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "routine"},
        {"tlp": "red"},
        {"typ": SEALED_TYP, "extra": "field"},
        {"cty": "json"},
    ],
    ids=["priority", "tlp", "extra-field", "cty"],
)
def test_altered_jwe_protected_header(
    world: World, sealed_pair: tuple[Notice, bytes], change: dict[str, str]
) -> None:
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    header = json.loads(unb64(sealed["protected"]))
    header.update(change)
    sealed["protected"] = b64(json.dumps(header).encode())
    expect("undecryptable", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


def test_altered_outer_signature(world: World, sealed_pair: tuple[Notice, bytes]) -> None:
    _, envelope = sealed_pair
    outer = json.loads(envelope)
    outer["signature"] = flip_bit(outer["signature"])
    tampered = json.dumps(outer).encode()
    parsed = parse_envelope(tampered)  # shape is fine: parsing trusts nothing
    expect("bad_signature", lambda: verify_outer(parsed, world.lookup(parsed.kid)))
    expect("bad_signature", lambda: world.open_as(PARTNERS[0], tampered))


def test_outer_signed_by_another_key_of_the_sender_name(
    world: World, sealed_pair: tuple[Notice, bytes]
) -> None:
    """A kid that names the desk's key but a signature by someone else's key."""
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    forged = jwc_jws.JWS(json.dumps(sealed).encode())
    forged.add_signature(
        _jwc_private(world.keys[OUTSIDER].signing),
        protected=json_encode(
            {"alg": "Ed25519", "kid": world.keys[DESK].signing_kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP}
        ),
    )
    expect("bad_signature", lambda: world.open_as(PARTNERS[0], forged.serialize()))


def test_outer_signed_by_an_agency_that_is_not_the_sender(
    world: World, sealed_pair: tuple[Notice, bytes]
) -> None:
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    tampered = jwc_outer(sealed, world.keys[OUTSIDER])
    parsed = parse_envelope(tampered)
    expect("signer_mismatch", lambda: verify_outer(parsed, world.lookup(parsed.kid)))
    expect("signer_mismatch", lambda: world.open_as(PARTNERS[0], tampered))


def test_outer_alg_none(world: World, sealed_pair: tuple[Notice, bytes]) -> None:
    _, envelope = sealed_pair
    outer = json.loads(envelope)
    header = {"alg": "none", "kid": world.keys[DESK].signing_kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP}
    outer["protected"] = b64(json.dumps(header).encode())
    outer["signature"] = ""
    expect("bad_algorithm", lambda: parse_envelope(json.dumps(outer)))


@pytest.mark.parametrize("alg", ["HS256", "ES256"])
def test_outer_unexpected_alg(world: World, sealed_pair: tuple[Notice, bytes], alg: str) -> None:
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    key = (
        jwc_jwk.JWK.generate(kty="oct", size=256)
        if alg == "HS256"
        else jwc_jwk.JWK.generate(kty="EC", crv="P-256")
    )
    token = jwc_jws.JWS(json.dumps(sealed).encode())
    header = {"alg": alg, "kid": world.keys[DESK].signing_kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP}
    token.add_signature(key, protected=json_encode(header))
    expect("bad_algorithm", lambda: parse_envelope(token.serialize()))


def test_hs256_keyed_with_the_senders_public_key_is_refused(
    world: World, sealed_pair: tuple[Notice, bytes]
) -> None:
    """The classic algorithm-confusion forgery: HMAC keyed with the (public) verification key bytes."""
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    public_x = world.keys[DESK].public_jwks()[0]["x"]
    key = jwc_jwk.JWK(kty="oct", k=public_x)
    token = jwc_jws.JWS(json.dumps(sealed).encode())
    header = {"alg": "HS256", "kid": world.keys[DESK].signing_kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP}
    token.add_signature(key, protected=json_encode(header))
    expect("bad_algorithm", lambda: world.open_as(PARTNERS[0], token.serialize()))


@pytest.mark.parametrize(
    "wrap_algs",
    [
        ["ECDH-ES+A128KW", "ECDH-ES+A128KW"],
        ["ECDH-ES+A192KW", "ECDH-ES+A192KW"],
        ["ECDH-ES+A256KW", "ECDH-ES+A128KW"],
    ],
    ids=["A128KW", "A192KW", "mixed"],
)
def test_key_wrap_alg_other_than_ecdh_es_a256kw(world: World, wrap_algs: list[str]) -> None:
    notice = make_notice(list(PARTNERS[:2]))
    inner = jwc_inner(notice_bytes(notice), world.keys[DESK])
    sealed = jwc_seal(
        inner.encode(), routing_fields(notice), [world.keys[p] for p in PARTNERS[:2]], wrap_algs
    )
    expect("bad_algorithm", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


@pytest.mark.parametrize("alg", ["RSA-OAEP-256", "dir", "A256KW", None])
def test_key_wrap_alg_relabelled(world: World, sealed_pair: tuple[Notice, bytes], alg: str | None) -> None:
    _, envelope = sealed_pair
    _, sealed = split(envelope)
    if alg is None:
        del sealed["recipients"][1]["header"]["alg"]
    else:
        sealed["recipients"][1]["header"]["alg"] = alg
    expect("bad_algorithm", lambda: parse_envelope(resealed(world, sealed)))


@pytest.mark.parametrize(
    "extra",
    [{"aad": b"extra"}, {"unprotected": {"jku": "https://example.org/jwks"}}, {"unprotected": {}}],
    ids=["sealed-with-aad", "unprotected-registered-parameter", "unprotected-empty"],
)
def test_a_jwe_with_aad_or_an_unprotected_header_is_refused(world: World, extra: dict[str, Any]) -> None:
    """docs/envelope.md 4.2: deskbridge seals neither. These JWEs decrypt (the aad is authenticated, the
    unprotected header is outside the tag) and the outer signature holds, yet the recipient refuses them."""
    notice = make_notice([PARTNERS[0]])
    inner = jwc_inner(notice_bytes(notice), world.keys[DESK])
    sealed = jwc_seal(inner.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]], **extra)
    assert set(extra) <= set(sealed)
    envelope = resealed(world, sealed)
    assert jwc_decrypt(world, PARTNERS[0], envelope).decode() == inner
    verify_outer(parse_envelope(envelope), world.lookup(world.keys[DESK].signing_kid))
    expect("undecryptable", lambda: world.open_as(PARTNERS[0], envelope))


def test_content_encryption_other_than_a256gcm(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    inner = jwc_inner(notice_bytes(notice), world.keys[DESK])
    sealed = jwc_seal(inner.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]], enc="A128GCM")
    expect("bad_algorithm", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


@pytest.mark.parametrize(
    "change",
    [
        {"priority": "routine"},
        {"tlp": "clear"},
        {"notice_type": "intel_report"},
        {"case_ref": "KD-2025-0001"},
        {"notice_id": "00000000-0000-4000-8000-000000000000"},
        {"recipients": ["kh-police"]},
        {"recipients": ["th-police", "kh-police"]},
        {"sent_at": "2025-03-31T09:00:01Z"},
        {"expires_at": "2030-01-01T00:00:00Z"},
        {"in_reply_to": "00000000-0000-4000-8000-000000000000"},
    ],
    ids=lambda change: "-".join(f"{k}={v}" for k, v in change.items())[:40],
)
def test_routing_header_that_differs_from_the_signed_notice(
    world: World, sealed_pair: tuple[Notice, bytes], change: dict[str, Any]
) -> None:
    """Decrypt ours with jwcrypto, re-encrypt the same inner JWS under a lying routing header, re-sign."""
    notice, envelope = sealed_pair
    inner = jwc_decrypt(world, PARTNERS[0], envelope)
    lying = {**routing_fields(notice), **change}
    sealed = jwc_seal(inner, lying, [world.keys[p] for p in PARTNERS[:2]])
    tampered = resealed(world, sealed)
    assert parse_envelope(tampered).routing.model_dump(mode="json", exclude_none=True) != routing_fields(
        notice
    )
    expect("header_mismatch", lambda: world.open_as(PARTNERS[0], tampered))


def test_routing_sender_that_differs_from_the_notice_sender(world: World) -> None:
    """The desk signs all three layers, but the notice inside claims another sender."""
    notice = make_notice([PARTNERS[0]], sender=PARTNERS[1])
    desk = world.keys[DESK]
    inner = jwc_inner(notice_bytes(notice), desk)
    sealed = jwc_seal(inner.encode(), {**routing_fields(notice), "sender": DESK}, [world.keys[PARTNERS[0]]])
    expect("header_mismatch", lambda: world.open_as(PARTNERS[0], jwc_outer(sealed, desk)))


def test_inner_signature_by_another_agency(world: World) -> None:
    """Routing header and outer signature say the desk, the inner JWS is signed by a partner."""
    notice = make_notice([PARTNERS[0]])
    inner = jwc_inner(notice_bytes(notice), world.keys[PARTNERS[1]])
    sealed = jwc_seal(inner.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]])
    expect("signer_mismatch", lambda: world.open_as(PARTNERS[0], jwc_outer(sealed, world.keys[DESK])))


def test_inner_signature_claiming_the_desks_kid_with_another_key(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    token = jwc_jws.JWS(notice_bytes(notice))
    header = {"alg": "Ed25519", "kid": world.keys[DESK].signing_kid, "typ": SIGNED_TYP, "cty": "json"}
    token.add_signature(_jwc_private(world.keys[OUTSIDER].signing), protected=json_encode(header))
    sealed = jwc_seal(
        token.serialize(compact=True).encode(), routing_fields(notice), [world.keys[PARTNERS[0]]]
    )
    expect("bad_signature", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


def test_inner_payload_swapped_under_a_valid_header(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    header, _, signature = jwc_inner(notice_bytes(notice), world.keys[DESK]).split(".")
    other = notice.model_copy(update={"summary": "a different summary"})
    swapped = f"{header}.{b64(notice_bytes(other))}.{signature}"
    sealed = jwc_seal(swapped.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]])
    expect("bad_signature", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


def test_inner_alg_none_is_refused(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    header = {"alg": "none", "kid": world.keys[DESK].signing_kid, "typ": SIGNED_TYP, "cty": "json"}
    unsigned = f"{b64(json.dumps(header).encode())}.{b64(notice_bytes(notice))}."
    sealed = jwc_seal(unsigned.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]])
    with pytest.raises(EnvelopeError) as caught:
        world.open_as(PARTNERS[0], resealed(world, sealed))
    assert caught.value.code in {"bad_algorithm", "bad_signature"}


@pytest.mark.parametrize(
    "plaintext",
    [b"not a jws", b"\xff\xfe.\x00.", b"e30.e30.", b"W10.e30.AAAA"],
    ids=["text", "binary", "empty-objects", "array-header"],
)
def test_inner_that_is_not_a_jws(world: World, plaintext: bytes) -> None:
    """A sender that signs the outer layer can still put junk inside: refused as an EnvelopeError."""
    notice = make_notice([PARTNERS[0]])
    sealed = jwc_seal(plaintext, routing_fields(notice), [world.keys[PARTNERS[0]]])
    with pytest.raises(EnvelopeError) as caught:
        world.open_as(PARTNERS[0], resealed(world, sealed))
    assert caught.value.code in {"malformed", "bad_signature", "unknown_key"}


def test_inner_signed_payload_that_is_not_a_notice(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    inner = jwc_inner(b'{"summary":"no notice"}', world.keys[DESK])
    sealed = jwc_seal(inner.encode(), routing_fields(notice), [world.keys[PARTNERS[0]]])
    expect("malformed", lambda: world.open_as(PARTNERS[0], resealed(world, sealed)))


def _outer_with(envelope: bytes, **fields: Any) -> bytes:
    outer = json.loads(envelope)
    outer.update(fields)
    return json.dumps({k: v for k, v in outer.items() if v is not None}).encode()


def _with_jwe(envelope: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    _, sealed = split(envelope)
    change(sealed)
    return _outer_with(envelope, payload=b64(json.dumps(sealed).encode()))


def _with_jwe_header(envelope: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    def inner(sealed: dict[str, Any]) -> None:
        header = json.loads(unb64(sealed["protected"]))
        change(header)
        sealed["protected"] = b64(json.dumps(header).encode())

    return _with_jwe(envelope, inner)


def _with_outer_header(envelope: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    header = json.loads(unb64(json.loads(envelope)["protected"]))
    change(header)
    return _outer_with(envelope, protected=b64(json.dumps(header).encode()))


MALFORMED: dict[str, Callable[[bytes], bytes | str]] = {
    "empty": lambda e: b"",
    "garbage": lambda e: os.urandom(64),
    "invalid-utf8": lambda e: b'{"payload":"\xff\xfe"}',
    "not-json": lambda e: b"this is not an envelope",
    "truncated": lambda e: e[: len(e) // 2],
    "json-array": lambda e: b"[]",
    "json-string": lambda e: b'"envelope"',
    "json-null": lambda e: b"null",
    "json-number": lambda e: b"42",
    "empty-object": lambda e: b"{}",
    "compact-jws": lambda e: "eyJhbGciOiJFZDI1NTE5In0.e30.AAAA",
    "missing-signature": lambda e: _outer_with(e, signature=None),
    "missing-payload": lambda e: _outer_with(e, payload=None),
    "missing-protected": lambda e: _outer_with(e, protected=None),
    "extra-outer-field": lambda e: _outer_with(e, header={"kid": "x"}),
    "signature-not-b64url": lambda e: _outer_with(e, signature="a+b/c=="),
    "signature-not-a-string": lambda e: _outer_with(e, signature=12),
    "outer-header-not-json": lambda e: _outer_with(e, protected=b64(b"alg=Ed25519")),
    "outer-header-array": lambda e: _outer_with(e, protected=b64(b'["Ed25519"]')),
    "outer-header-bad-b64": lambda e: _outer_with(e, protected="abcde"),
    "no-kid": lambda e: _with_outer_header(e, lambda h: h.pop("kid")),
    "empty-kid": lambda e: _with_outer_header(e, lambda h: h.update(kid="")),
    "numeric-kid": lambda e: _with_outer_header(e, lambda h: h.update(kid=7)),
    "outer-typ": lambda e: _with_outer_header(e, lambda h: h.update(typ="JWT")),
    "outer-no-typ": lambda e: _with_outer_header(e, lambda h: h.pop("typ")),
    "payload-not-json": lambda e: _outer_with(e, payload=b64(b"ciphertext")),
    "payload-array": lambda e: _outer_with(e, payload=b64(b"[]")),
    "payload-compact-jwe": lambda e: _outer_with(e, payload=b64(b"a.b.c.d.e")),
    "jwe-no-recipients": lambda e: _with_jwe(e, lambda s: s.pop("recipients")),
    "jwe-empty-recipients": lambda e: _with_jwe(e, lambda s: s.update(recipients=[])),
    "jwe-flattened": lambda e: _with_jwe(e, lambda s: s.update(s.pop("recipients")[0])),
    "jwe-no-ciphertext": lambda e: _with_jwe(e, lambda s: s.pop("ciphertext")),
    "jwe-no-tag": lambda e: _with_jwe(e, lambda s: s.pop("tag")),
    "jwe-extra-field": lambda e: _with_jwe(e, lambda s: s.update(plaintext="oops")),
    "jwe-recipient-no-key": lambda e: _with_jwe(e, lambda s: s["recipients"][0].pop("encrypted_key")),
    "jwe-header-not-json": lambda e: _with_jwe(e, lambda s: s.update(protected=b64(b"{"))),
    "jwe-no-routing": lambda e: _with_jwe_header(e, lambda h: h.pop("sender")),
    "jwe-bad-sender": lambda e: _with_jwe_header(e, lambda h: h.update(sender="KR DESK")),
    "jwe-bad-notice-id": lambda e: _with_jwe_header(e, lambda h: h.update(notice_id="42")),
    "jwe-bad-priority": lambda e: _with_jwe_header(e, lambda h: h.update(priority="urgent")),
    "jwe-typ": lambda e: _with_jwe_header(e, lambda h: h.update(typ="JWE")),
    "jwe-no-typ": lambda e: _with_jwe_header(e, lambda h: h.pop("typ")),
}


@pytest.mark.parametrize("make", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed(
    world: World, sealed_pair: tuple[Notice, bytes], make: Callable[[bytes], bytes | str]
) -> None:
    _, envelope = sealed_pair
    bad = make(envelope)
    expect("malformed", lambda: parse_envelope(bad))
    expect("malformed", lambda: world.open_as(PARTNERS[0], bad))


def test_oversize() -> None:
    expect("oversize", lambda: parse_envelope(b" " * (MAX_ENVELOPE_BYTES + 1)))
    expect("oversize", lambda: parse_envelope("x" * (MAX_ENVELOPE_BYTES + 1)))
    # the limit itself is allowed through to the shape checks
    expect("malformed", lambda: parse_envelope(b" " * MAX_ENVELOPE_BYTES))


def test_oversize_counts_bytes_not_characters() -> None:
    text = "감" * (MAX_ENVELOPE_BYTES // 3 + 1)  # 3 UTF-8 bytes each: under the limit in characters only
    assert len(text) < MAX_ENVELOPE_BYTES < len(text.encode())
    expect("oversize", lambda: parse_envelope(text))


# =========================================================================== 5. single-byte flips


@pytest.fixture(scope="module")
def flip_target(world: World) -> tuple[Notice, bytes]:
    notice = make_notice(list(PARTNERS[:2]))
    return notice, seal(world, notice)


def _open_flipped(world: World, envelope: bytes, index: int, mask: int) -> Notice | EnvelopeError:
    """Any exception but EnvelopeError propagates and fails the test."""
    flipped = bytearray(envelope)
    flipped[index] ^= mask
    try:
        return world.open_as(PARTNERS[0], bytes(flipped))
    except EnvelopeError as error:
        return error


def _judge_flip(notice: Notice, index: int, outcome: Notice | EnvelopeError) -> str:
    # Base64url is canonical and the JSON has no insignificant bytes, so no flip is harmless.
    assert isinstance(outcome, EnvelopeError), f"flip at {index} was accepted: {outcome!r}"
    return f"refused: {outcome.code}"


@settings(max_examples=25, deadline=None, database=None)
@given(data=st.data())
def test_any_single_byte_flip_is_refused_or_harmless(
    world: World, flip_target: tuple[Notice, bytes], data: st.DataObject
) -> None:
    """Flip one byte anywhere: the result is always an EnvelopeError, never a notice, never another
    exception (base64url must be canonical, so not even a padding bit may change)."""
    notice, envelope = flip_target
    index = data.draw(st.integers(0, len(envelope) - 1), label="index")
    # Half the time another base64url character, so the flip gets past the shape checks to the signatures.
    replacement = data.draw(
        st.one_of(st.sampled_from(B64URL_ALPHABET.encode()), st.integers(0, 255)).filter(
            lambda byte: byte != envelope[index]
        ),
        label="replacement",
    )
    mask = envelope[index] ^ replacement
    event(_judge_flip(notice, index, _open_flipped(world, envelope, index, mask)))


def test_low_bit_flip_sweep_over_every_byte(world: World, flip_target: tuple[Notice, bytes]) -> None:
    """Exhaustive over positions for one mask (XOR 0x01): every flip is refused."""
    notice, envelope = flip_target
    verdicts = {
        i: _judge_flip(notice, i, _open_flipped(world, envelope, i, 0x01)) for i in range(len(envelope))
    }
    assert {verdict for verdict in verdicts.values()} >= {"refused: malformed", "refused: bad_signature"}


# ------------------------------------------------- defects that must be refused, never leak another error


def _non_canonical(value: str) -> str:
    """Same decoded bytes, different text: set a padding bit of the last base64url character."""
    assert len(value) % 4, "no padding bits in this value"
    changed = value[:-1] + B64URL_ALPHABET[B64URL_ALPHABET.index(value[-1]) | 1]
    assert changed != value and unb64(changed) == unb64(value)
    return changed


def _refused_or_same(world: World, notice: Notice, envelope: bytes | str, reasons: set[str]) -> None:
    """The contract: an EnvelopeError with one of `reasons`, or the very same notice."""
    try:
        opened = world.open_as(PARTNERS[0], envelope)
    except EnvelopeError as error:
        assert error.code in reasons, error.code
    else:
        assert opened == notice


@pytest.mark.parametrize("field", ["protected", "signature"])
def test_non_canonical_base64url_in_the_outer_layer(
    world: World, sealed_pair: tuple[Notice, bytes], field: str
) -> None:
    notice, envelope = sealed_pair
    outer = json.loads(envelope)
    outer[field] = _non_canonical(outer[field])
    _refused_or_same(world, notice, json.dumps(outer), {"malformed", "bad_signature"})


def _padded_ciphertext_envelope(world: World) -> tuple[Notice, dict[str, Any]]:
    for extra in range(3):
        notice = make_notice(list(PARTNERS[:2]), summary="Confined at a compound." + "!" * extra)
        _, sealed = split(seal(world, notice))
        if len(sealed["ciphertext"]) % 4:
            return notice, sealed
    raise AssertionError("unreachable: one of three consecutive lengths needs padding")


def _set(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(sealed: dict[str, Any]) -> None:
        target: Any = sealed
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value

    return change


SENDER_SIGNED_JUNK: dict[str, Callable[[dict[str, Any]], None]] = {
    "ciphertext-non-canonical": _set(("ciphertext",), _non_canonical),
    "tag-non-canonical": _set(("tag",), _non_canonical),
    "encrypted_key-non-canonical": _set(("recipients", 0, "encrypted_key"), _non_canonical),
    "tag-empty": _set(("tag",), ""),
    "iv-empty": _set(("iv",), ""),
    "epk-short-x": _set(("recipients", 0, "header", "epk", "x"), "AA"),
    "epk-low-order-point": _set(("recipients", 0, "header", "epk", "x"), "A" * 43),
    "epk-ec-key": _set(
        ("recipients", 0, "header", "epk"),
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
    ),
}


@pytest.mark.parametrize("change", list(SENDER_SIGNED_JUNK.values()), ids=list(SENDER_SIGNED_JUNK))
def test_broken_jwe_from_an_authenticated_sender(
    world: World, change: Callable[[dict[str, Any]], None]
) -> None:
    notice, sealed = _padded_ciphertext_envelope(world)
    change(sealed)
    _refused_or_same(world, notice, resealed(world, sealed), {"malformed", "undecryptable"})


# =========================================================================== 6. seal_notice preconditions


def test_seal_refuses_a_signer_that_is_not_the_sender(world: World) -> None:
    notice = make_notice([PARTNERS[0]])
    recipients = [world.encryption_key(PARTNERS[0])]
    expect("signer_mismatch", lambda: seal_notice(notice, world.keys[PARTNERS[1]].signer(), recipients))


@pytest.mark.parametrize(
    "keys_for",
    [[], [PARTNERS[0]], [PARTNERS[0], PARTNERS[2]], [*PARTNERS[:2], OUTSIDER], [PARTNERS[0], PARTNERS[0]]],
    ids=["none", "missing-one", "wrong-one", "one-extra", "duplicate"],
)
def test_seal_refuses_keys_that_do_not_match_the_recipients(world: World, keys_for: list[str]) -> None:
    notice = make_notice(list(PARTNERS[:2]))
    recipients = [world.encryption_key(a) for a in keys_for]
    expect("recipient_mismatch", lambda: seal_notice(notice, world.keys[DESK].signer(), recipients))


def test_seal_accepts_recipient_keys_in_any_order(world: World) -> None:
    notice = make_notice(list(PARTNERS))
    recipients = [world.encryption_key(a) for a in reversed(PARTNERS)]
    envelope = seal_notice(notice, world.keys[DESK].signer(), recipients)
    assert all(world.open_as(p, envelope) == notice for p in PARTNERS)


# =========================================================================== 7. key files


def test_save_writes_owner_only_and_load_round_trips(world: World, tmp_path: Path) -> None:
    keys = AgencyKeys.generate(PARTNERS[0])
    path = keys.save(tmp_path / "keys")
    assert path == tmp_path / "keys" / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    loaded = AgencyKeys.load(tmp_path / "keys")
    assert loaded.agency == keys.agency
    assert loaded.signing_kid == keys.signing_kid
    assert loaded.encryption_kid == keys.encryption_kid
    for mine, theirs in ((loaded.signing, keys.signing), (loaded.encryption, keys.encryption)):
        members = ("kty", "crv", "x", "d")
        assert {m: mine.as_dict(private=True)[m] for m in members} == {
            m: theirs.as_dict(private=True)[m] for m in members
        }
    assert loaded.public_jwks() == keys.public_jwks()

    # the loaded keys do the job: open what was sealed for the original, and sign what others accept
    notice = make_notice([PARTNERS[0]])
    envelope = seal_notice(notice, world.keys[DESK].signer(), [keys.public_keys()[1]])
    assert open_envelope(parse_envelope(envelope), loaded.decryption_keys(), world.lookup) == notice
    reply = make_notice([DESK], sender=PARTNERS[0], type="reply", in_reply_to=str(notice.notice_id))
    sealed = seal_notice(reply, loaded.signer(), [world.encryption_key(DESK)])
    directory = {**world.directory, keys.signing_kid: keys.public_keys()[0]}
    desk_keys = world.keys[DESK].decryption_keys()
    assert open_envelope(parse_envelope(sealed), desk_keys, directory.__getitem__) == reply


def test_save_over_an_existing_readable_file_makes_it_owner_only(tmp_path: Path) -> None:
    (tmp_path / KEYS_FILE).write_text("{}")
    (tmp_path / KEYS_FILE).chmod(0o644)
    path = AgencyKeys.generate(DESK).save(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_public_jwks_carry_no_private_part(world: World) -> None:
    for jwk in world.keys[DESK].public_jwks():
        assert set(jwk) == {"kty", "crv", "x", "kid", "use", "alg"}
    sig, enc = world.keys[DESK].public_jwks()
    assert (sig["crv"], sig["use"], sig["alg"]) == ("Ed25519", "sig", "Ed25519")
    assert (enc["crv"], enc["use"], enc["alg"]) == ("X25519", "enc", "ECDH-ES+A256KW")


def test_import_public_refuses_a_private_jwk(world: World) -> None:
    keys = world.keys[DESK]
    private = {**keys.signing.as_dict(private=True), "kid": keys.signing_kid}
    assert "d" in private
    with pytest.raises(ValueError, match="private"):
        import_public(private)
    with pytest.raises(ValueError, match="private"):
        import_public({**keys.public_jwks()[1], "d": ""})
    public = import_public(keys.public_jwks()[0])
    assert public.thumbprint() == keys.signing_kid
    assert public.as_dict(private=False)["x"] == keys.public_jwks()[0]["x"]
