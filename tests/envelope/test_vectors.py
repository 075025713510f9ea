"""The committed envelope test vectors (tests/vectors, docs/envelope.md) against our code and jwcrypto.

The jwcrypto side reads only the vector files and uses no deskbridge code: it is what a partner's
client in another language would do, following docs/envelope.md. Pure unit tests, no services.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from joserfc.jwk import OKPKey
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws
from jwcrypto.common import json_encode

from schemas.envelopes import RoutingHeader
from schemas.notices import Notice
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey, import_public
from services.envelope.service import canonical_json, open_envelope, parse_envelope, seal_notice, verify_outer
from tests.vectors.generate import write_vectors

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors"
DOCS = ROOT / "docs" / "envelope.md"

# Spelled out, not imported: the wire values docs/envelope.md promises.
ENVELOPE_TYP = "deskbridge-envelope+jws"
SEALED_TYP = "deskbridge-notice+jwe"
SIGNED_TYP = "deskbridge-notice+jws"
ROUTING_FROM_NOTICE = {  # routing header field -> notice field (docs/envelope.md, "Routing header")
    "sender": "sender",
    "notice_id": "notice_id",
    "notice_type": "type",
    "priority": "priority",
    "tlp": "tlp",
    "case_ref": "case_ref",
    "recipients": "recipients",
    "sent_at": "sent_at",
    "expires_at": "expires_at",
    "in_reply_to": "in_reply_to",
    "forwarded_from": "forwarded_from",
}


# --------------------------------------------------------------------------- reading the files


@dataclass(frozen=True)
class Vector:
    name: str
    notice: dict[str, Any]  # notice.json, parsed
    canonical: bytes  # notice.canonical.json, the bytes the inner signature covers
    jws: str  # the inner compact JWS
    envelope: bytes  # the sealed envelope as it travels

    @property
    def sender(self) -> str:
        sender: str = self.notice["sender"]
        return sender

    @property
    def recipients(self) -> list[str]:
        recipients: list[str] = self.notice["recipients"]
        return recipients


def load_vector(name: str, directory: Path = VECTORS) -> Vector:
    envelope = "envelope.json" if name == "notice" else f"{name}.envelope.json"
    return Vector(
        name,
        json.loads((directory / f"{name}.json").read_text(encoding="utf-8")),
        (directory / f"{name}.canonical.json").read_bytes(),
        (directory / f"{name}.jws").read_text(encoding="ascii"),
        (directory / envelope).read_bytes(),
    )


VECTOR_NAMES = ("notice", "reply")
NOTICE, REPLY = (load_vector(name) for name in VECTOR_NAMES)
KEYS: dict[str, Any] = json.loads((VECTORS / "keys.json").read_text())["agencies"]
CASES = [(name, agency) for name in VECTOR_NAMES for agency in load_vector(name).recipients]


def jwk(agency: str, use: str) -> dict[str, Any]:
    """An agency's private JWK (with kid, use, alg) from keys.json."""
    (key,) = [k for k in KEYS[agency]["keys"] if k["use"] == use]
    return dict(key)


def public_jwk(agency: str, use: str) -> dict[str, Any]:
    return {k: v for k, v in jwk(agency, use).items() if k != "d"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --------------------------------------------------------------------------- our side


def lookup(kid: str) -> PublicKey:
    """The directory of signing keys, from the public halves in keys.json."""
    for agency in KEYS:
        if jwk(agency, "sig")["kid"] == kid:
            return PublicKey(agency, kid, import_public(public_jwk(agency, "sig")))
    raise EnvelopeError("unknown_key", f"no key {kid} in the test directory")


def our_open(envelope: bytes | str, agency: str) -> Notice:
    enc = jwk(agency, "enc")
    parsed = parse_envelope(envelope)
    verify_outer(parsed, lookup(parsed.kid))
    return open_envelope(parsed, {enc["kid"]: OKPKey.import_key(enc)}, lookup)


def our_seal(notice: Notice) -> bytes:
    sig = jwk(notice.sender, "sig")
    recipients = [
        PublicKey(a, public_jwk(a, "enc")["kid"], import_public(public_jwk(a, "enc")))
        for a in notice.recipients
    ]
    return seal_notice(notice, SigningKey(notice.sender, sig["kid"], OKPKey.import_key(sig)), recipients)


def expect(reason: str, action: Callable[[], object]) -> None:
    with pytest.raises(EnvelopeError) as caught:
        action()
    assert caught.value.code == reason, f"{caught.value.code}: {caught.value.detail}"


# --------------------------------------------------------------------------- jwcrypto side, docs only


@dataclass(frozen=True)
class Opened:
    outer_header: dict[str, Any]
    jwe_header: dict[str, Any]
    recipient_header: dict[str, Any]
    inner: str
    inner_header: dict[str, Any]
    payload: bytes


def jwc_open(envelope: bytes, sender: str, recipient: str) -> Opened:
    """docs/envelope.md "Receiving", with jwcrypto: outer JWS, then JWE, then inner JWS."""
    outer = jwc_jws.JWS()
    outer.deserialize(envelope.decode(), jwc_jwk.JWK(**public_jwk(sender, "sig")))
    sealed = json.loads(outer.payload)
    mine = jwk(recipient, "enc")
    (entry,) = [r for r in sealed["recipients"] if r["header"]["kid"] == mine["kid"]]
    # RFC 7516 section 7.2.2: the shared members plus this recipient's own entry.
    flattened = {k: v for k, v in sealed.items() if k != "recipients"} | entry
    token = jwc_jwe.JWE()
    token.deserialize(json.dumps(flattened), jwc_jwk.JWK(**mine))
    inner = jwc_jws.JWS()
    inner.deserialize(token.payload.decode(), jwc_jwk.JWK(**public_jwk(sender, "sig")))
    return Opened(
        outer.jose_header,
        json.loads(unb64(sealed["protected"])),
        entry["header"],
        token.payload.decode(),
        inner.jose_header,
        inner.payload,
    )


def routing_by_hand(notice: dict[str, Any]) -> dict[str, Any]:
    return {field: notice[name] for field, name in ROUTING_FROM_NOTICE.items() if name in notice}


def jwc_envelope(vector: Vector, alg: str = "Ed25519") -> bytes:
    """docs/envelope.md "Sealing", with jwcrypto and the vector keys."""
    signing = jwc_jwk.JWK(**jwk(vector.sender, "sig"))
    kid = jwk(vector.sender, "sig")["kid"]
    inner = jwc_jws.JWS(vector.canonical)
    inner.add_signature(
        signing, protected=json_encode({"alg": alg, "kid": kid, "typ": SIGNED_TYP, "cty": "json"})
    )
    protected = {"enc": "A256GCM", "typ": SEALED_TYP, "cty": "JOSE", **routing_by_hand(vector.notice)}
    sealed = jwc_jwe.JWE(
        inner.serialize(compact=True).encode(), protected=json_encode(protected), flattened=False
    )
    for agency in vector.recipients:
        enc = public_jwk(agency, "enc")
        sealed.add_recipient(
            jwc_jwk.JWK(**enc), header=json_encode({"alg": "ECDH-ES+A256KW", "kid": enc["kid"]})
        )
    outer = jwc_jws.JWS(sealed.serialize().encode())
    outer.add_signature(
        signing, protected=json_encode({"alg": alg, "kid": kid, "typ": ENVELOPE_TYP, "cty": SEALED_TYP})
    )
    envelope: str = outer.serialize()
    return envelope.encode()


def jwc_resign(sealed: dict[str, Any], sender: str) -> bytes:
    """A JWE re-signed by its sender, so that only the JWE's own protection can catch a change."""
    outer = jwc_jws.JWS(json.dumps(sealed).encode())
    header = {"alg": "Ed25519", "kid": jwk(sender, "sig")["kid"], "typ": ENVELOPE_TYP, "cty": SEALED_TYP}
    outer.add_signature(jwc_jwk.JWK(**jwk(sender, "sig")), protected=json_encode(header))
    envelope: str = outer.serialize()
    return envelope.encode()


# =========================================================================== (a) we open the vectors


@pytest.mark.parametrize(("name", "agency"), CASES)
def test_we_open_the_vector_as_each_recipient(name: str, agency: str) -> None:
    vector = load_vector(name)
    opened = our_open(vector.envelope, agency)
    assert opened.model_dump(mode="json", exclude_none=True) == vector.notice
    assert canonical_json(opened.model_dump(mode="json", exclude_none=True)) == vector.canonical


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_the_sender_and_an_outsider_cannot_open_the_vector(name: str) -> None:
    vector = load_vector(name)
    outsider = next(a for a in KEYS if a not in vector.recipients)
    expect("not_a_recipient", lambda: our_open(vector.envelope, outsider))


def test_the_vectors_leave_absent_fields_out() -> None:
    """exclude_none: no null anywhere, and the optional routing fields only when set."""
    for vector in (NOTICE, REPLY):
        assert b"null" not in vector.canonical
        assert "forwarded_from" not in vector.notice
        header = parse_envelope(vector.envelope).jwe.protected
        assert "forwarded_from" not in json.loads(unb64(header))
    assert "in_reply_to" not in NOTICE.notice
    assert "in_reply_to" not in json.loads(unb64(parse_envelope(NOTICE.envelope).jwe.protected))
    assert REPLY.notice["in_reply_to"] == NOTICE.notice["notice_id"]
    assert (
        json.loads(unb64(parse_envelope(REPLY.envelope).jwe.protected))["in_reply_to"]
        == REPLY.notice["in_reply_to"]
    )


# =========================================================================== (b) jwcrypto opens the vectors


def check_opened_by_jwcrypto(vector: Vector, envelope: bytes, recipient: str) -> Opened:
    opened = jwc_open(envelope, vector.sender, recipient)
    sender_kid = jwk(vector.sender, "sig")["kid"]
    assert opened.outer_header == {
        "alg": "Ed25519",
        "kid": sender_kid,
        "typ": ENVELOPE_TYP,
        "cty": SEALED_TYP,
    }
    assert opened.jwe_header == {
        "enc": "A256GCM",
        "typ": SEALED_TYP,
        "cty": "JOSE",
        **routing_by_hand(vector.notice),
    }
    assert set(opened.recipient_header) == {"alg", "kid", "epk"}
    assert opened.recipient_header["alg"] == "ECDH-ES+A256KW"
    assert opened.recipient_header["kid"] == jwk(recipient, "enc")["kid"]
    assert set(opened.recipient_header["epk"]) == {"kty", "crv", "x"}
    assert opened.recipient_header["epk"]["crv"] == "X25519"
    assert opened.inner_header == {"alg": "Ed25519", "kid": sender_kid, "typ": SIGNED_TYP, "cty": "json"}
    assert opened.payload == vector.canonical
    return opened


@pytest.mark.parametrize(("name", "agency"), CASES)
def test_jwcrypto_alone_opens_the_vector(name: str, agency: str) -> None:
    vector = load_vector(name)
    opened = check_opened_by_jwcrypto(vector, vector.envelope, agency)
    assert opened.inner == vector.jws


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_jwcrypto_opens_the_general_jwe_with_one_key(name: str) -> None:
    """Libraries that take the whole recipients[] array with one key (jwcrypto does) work too."""
    vector = load_vector(name)
    payload = json.loads(vector.envelope)["payload"]
    token = jwc_jwe.JWE()
    token.deserialize(unb64(payload).decode(), jwc_jwk.JWK(**jwk(vector.recipients[-1], "enc")))
    assert token.payload.decode() == vector.jws


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_the_inner_jws_is_reproducible(name: str) -> None:
    """Ed25519 is deterministic: the same header bytes and payload give the very same JWS."""
    vector = load_vector(name)
    header, payload, _ = vector.jws.split(".")
    assert unb64(payload) == vector.canonical
    token = jwc_jws.JWS(vector.canonical)
    token.add_signature(jwc_jwk.JWK(**jwk(vector.sender, "sig")), protected=unb64(header).decode())
    assert token.serialize(compact=True) == vector.jws


def test_key_ids_are_rfc7638_thumbprints() -> None:
    for agency, jwks in KEYS.items():
        assert [(k["use"], k["crv"], k["alg"]) for k in jwks["keys"]] == [
            ("sig", "Ed25519", "Ed25519"),
            ("enc", "X25519", "ECDH-ES+A256KW"),
        ], agency
        for key in jwks["keys"]:
            assert jwc_jwk.JWK(**key).thumbprint() == key["kid"]


# =========================================================================== (c) jwcrypto opens a fresh seal


@pytest.mark.parametrize(("name", "agency"), CASES)
def test_jwcrypto_opens_an_envelope_we_seal_with_the_vector_keys(name: str, agency: str) -> None:
    vector = load_vector(name)
    envelope = our_seal(Notice.model_validate(vector.notice))
    assert envelope != vector.envelope  # fresh content key, IV and ephemeral keys
    opened = check_opened_by_jwcrypto(vector, envelope, agency)
    assert opened.inner == vector.jws


# =========================================================================== (d) we open jwcrypto's


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's SecurityWarning: accepted on purpose
@pytest.mark.parametrize("alg", ["Ed25519", "EdDSA"])
@pytest.mark.parametrize(("name", "agency"), CASES)
def test_we_open_an_envelope_jwcrypto_builds_from_the_docs(name: str, agency: str, alg: str) -> None:
    vector = load_vector(name)
    envelope = jwc_envelope(vector, alg)
    parsed = parse_envelope(envelope)
    assert (parsed.alg, parsed.kid) == (alg, jwk(vector.sender, "sig")["kid"])
    verify_outer(parsed, lookup(parsed.kid))
    opened = open_envelope(parsed, {jwk(agency, "enc")["kid"]: OKPKey.import_key(jwk(agency, "enc"))}, lookup)
    assert opened.model_dump(mode="json", exclude_none=True) == vector.notice


# =========================================================================== (e) tampering


def _flip(value: str) -> str:
    """One byte changed, still canonical base64url."""
    data = bytearray(unb64(value))
    data[len(data) // 2] ^= 0x01
    return b64(bytes(data))


def _reprioritised(protected: str) -> str:
    header = json.loads(unb64(protected))
    header["priority"] = "routine" if header["priority"] != "routine" else "flash"
    return b64(json.dumps(header, separators=(",", ":")).encode())


JWE_TAMPERING: dict[str, Callable[[dict[str, Any]], None]] = {
    "ciphertext": lambda s: s.update(ciphertext=_flip(s["ciphertext"])),
    "tag": lambda s: s.update(tag=_flip(s["tag"])),
    "jwe-protected-header": lambda s: s.update(protected=_reprioritised(s["protected"])),
    "encrypted_key": lambda s: s["recipients"][0].update(
        encrypted_key=_flip(s["recipients"][0]["encrypted_key"])
    ),
}


def _tampered_jwe(vector: Vector, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    sealed: dict[str, Any] = json.loads(unb64(json.loads(vector.envelope)["payload"]))
    change(sealed)
    return sealed


@pytest.mark.parametrize("name", VECTOR_NAMES)
@pytest.mark.parametrize("what", list(JWE_TAMPERING))
def test_a_jwe_changed_in_transit_breaks_the_outer_signature(name: str, what: str) -> None:
    vector = load_vector(name)
    outer = json.loads(vector.envelope)
    outer["payload"] = b64(json.dumps(_tampered_jwe(vector, JWE_TAMPERING[what])).encode())
    tampered = json.dumps(outer).encode()

    parsed = parse_envelope(tampered)  # the shape is still fine
    expect("bad_signature", lambda: verify_outer(parsed, lookup(parsed.kid)))
    for agency in vector.recipients:
        expect("bad_signature", partial(our_open, tampered, agency))
    with pytest.raises(jwc_jws.InvalidJWSSignature):
        jwc_open(tampered, vector.sender, vector.recipients[0])


@pytest.mark.parametrize("name", VECTOR_NAMES)
@pytest.mark.parametrize("what", list(JWE_TAMPERING))
def test_a_jwe_changed_and_resigned_by_the_sender_does_not_decrypt(name: str, what: str) -> None:
    vector = load_vector(name)
    tampered = jwc_resign(_tampered_jwe(vector, JWE_TAMPERING[what]), vector.sender)
    victims = vector.recipients[:1] if what == "encrypted_key" else vector.recipients

    parsed = parse_envelope(tampered)
    verify_outer(parsed, lookup(parsed.kid))  # the outer signature is the sender's and valid
    for agency in victims:
        expect("undecryptable", partial(our_open, tampered, agency))
        with pytest.raises(jwc_jwe.InvalidJWEData):
            jwc_open(tampered, vector.sender, agency)
    for agency in vector.recipients[len(victims) :]:  # another recipient's wrapped key is untouched
        assert our_open(tampered, agency).model_dump(mode="json", exclude_none=True) == vector.notice


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_a_changed_outer_signature_is_refused(name: str) -> None:
    vector = load_vector(name)
    outer = json.loads(vector.envelope)
    outer["signature"] = _flip(outer["signature"])
    tampered = json.dumps(outer).encode()
    parsed = parse_envelope(tampered)
    expect("bad_signature", lambda: verify_outer(parsed, lookup(parsed.kid)))
    expect("bad_signature", lambda: our_open(tampered, vector.recipients[0]))
    with pytest.raises(jwc_jws.InvalidJWSSignature):
        jwc_open(tampered, vector.sender, vector.recipients[0])


# =========================================================================== (f) files and docs in sync


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_the_canonical_file_is_canonical_json_of_the_notice(name: str) -> None:
    vector = load_vector(name)
    notice = Notice.model_validate(vector.notice)
    assert canonical_json(notice.model_dump(mode="json", exclude_none=True)) == vector.canonical
    # the definition in docs/envelope.md: RFC 8785 (JCS) of the notice, by an off-the-shelf implementation
    assert rfc8785.dumps(vector.notice) == vector.canonical
    assert not vector.canonical.endswith(b"\n")


def test_the_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    """Everything but the envelopes is deterministic; new envelopes still open to the same notices."""
    written = {path.name for path in write_vectors(tmp_path)}
    committed = {p.name for p in VECTORS.iterdir() if p.suffix in (".json", ".jws")}
    assert written == committed
    for name in written - {"envelope.json", "reply.envelope.json"}:
        assert (tmp_path / name).read_bytes() == (VECTORS / name).read_bytes(), name
    for name in VECTOR_NAMES:
        fresh = load_vector(name, tmp_path)
        for agency in fresh.recipients:
            assert our_open(fresh.envelope, agency).model_dump(mode="json", exclude_none=True) == fresh.notice


def test_the_docs_name_every_routing_header_field() -> None:
    docs = DOCS.read_text()
    assert set(ROUTING_FROM_NOTICE) == set(RoutingHeader.model_fields)
    missing = [name for name in RoutingHeader.model_fields if f"`{name}`" not in docs]
    assert not missing, f"docs/envelope.md does not mention {missing}"


DOCUMENTED_REASONS = {
    "malformed",
    "oversize",
    "bad_algorithm",
    "unknown_key",
    "key_revoked",
    "key_not_valid",
    "signer_mismatch",
    "bad_signature",
    "recipient_mismatch",
    "header_mismatch",
    "undecryptable",
    "not_a_recipient",
    "expired",
    "duplicate_notice",
    "stale",
    "from_the_future",
}


def test_the_docs_list_every_refusal_reason() -> None:
    """Every reason code the services raise, and the freshness ones, is in the docs' table."""
    raised = set()
    for path in (ROOT / "services").rglob("*.py"):
        raised |= set(re.findall(r'EnvelopeError\(\s*"([a-z_]+)"', path.read_text()))
        raised |= set(re.findall(r'return "(key_[a-z_]+)", f"', path.read_text()))
    docs = DOCS.read_text()
    missing = sorted(reason for reason in raised | DOCUMENTED_REASONS if f"`{reason}`" not in docs)
    assert not missing, f"docs/envelope.md does not list {missing}"
