"""Writes the envelope test vectors of docs/envelope.md: `python -m tests.vectors.generate [--force]`.

Keys come from fixed seeds and Ed25519 signatures are deterministic, so keys, notices, canonical JSON
and inner JWS are rewritten byte for byte on every run. Envelopes are not deterministic (fresh content
key, IV and ephemeral keys): an existing envelope file is kept while it still opens to the current
notice and its inner JWS signs the current canonical JSON, so the committed vectors stay fixed; `--force`
seals new ones.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from joserfc.jwk import OKPKey
from jwcrypto import jwe as jwc_jwe
from jwcrypto import jwk as jwc_jwk

from schemas.notices import Notice
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey, SigningKey, import_public
from services.envelope.service import canonical_json, open_envelope, parse_envelope, seal_notice

VECTORS = Path(__file__).resolve().parent
DESK, CNP, NCB = "kr-desk", "kh-cnp", "interpol-ncb-phnom-penh"
AGENCIES = (DESK, CNP, NCB)
ENVELOPE_FILES = {"notice": "envelope.json", "reply": "reply.envelope.json"}
WARNING = (
    "TEST ONLY. These private keys are published and derived from fixed seeds: never enrol them in a "
    "directory, never use them for real traffic. Seed = SHA-256 of 'deskbridge test vector <agency> <use>'."
)

NOTICE: dict[str, Any] = {
    "notice_id": "3f1c2a9e-7b4d-4e8a-9c61-0d5e8f2a7b34",
    "type": "kidnapping_confinement",
    "priority": "flash",
    "tlp": "amber",
    "case_ref": "KD-2025-0331",
    "recipients": [CNP, NCB],
    "summary": (
        "FICTIONAL TEST DATA. Korean national reported confined at a scam compound in Sihanoukville; "
        "family received a ransom demand."
    ),
    "details": (
        "Family in Busan received a voice call on 2025-03-30 demanding 30,000 USDT.\n"
        'Caller said: "He stays until the debt is paid." Subject last messaged 박수진 (sister) at 23:10 ICT.'
    ),
    "interpol_colour": "yellow",
    "subjects": [
        {
            "name_latin": "PARK Ji-hoon",
            "name_hangul": "박지훈",
            "date_of_birth": "1998-07-14",
            "passport_number": "M00000000",
            "nationality": "KOR",
            "description": "About 175 cm, slim, tattoo of a carp on the left forearm.",
        },
        {"name_hangul": "김도윤", "nationality": "KOR", "description": "Recruiter; contacted PARK online."},
    ],
    "locations": [
        {
            "country": "KH",
            "province": "Preah Sihanouk",
            "text": "Sihanoukville, gated compound off Ochheuteal Road, building with blue roof (fictional)",
            "coordinates": {"lat": 10.6093, "lon": 103.5296},
        },
        {
            "country": "KH",
            "province": "Svay Rieng",
            "text": "Bavet, casino strip near the border crossing (fictional)",
            # Whole-number coordinates: RFC 8785 writes 11.0 as 11, where json.dumps would write 11.0.
            "coordinates": {"lat": 11.0, "lon": 106.1},
        },
    ],
    "attachments": [
        {
            "filename": "ransom-message.txt",
            "media_type": "text/plain",
            "data_b64": base64.b64encode("돈 보내. Send 30,000 USDT by Friday.\n".encode()).decode(),
        }
    ],
    "expires_at": "2025-04-30T18:00:00+09:00",
    "sender": DESK,
    "sent_at": "2025-03-31T09:00:00Z",
}

REPLY: dict[str, Any] = {
    "notice_id": "8b0e4d1c-2f6a-4c3b-a5e7-91d0c4f6e2a8",
    "type": "reply",
    "priority": "immediate",
    "tlp": "amber",
    "case_ref": "KD-2025-0331",
    "recipients": [DESK, NCB],
    "summary": "FICTIONAL TEST DATA. Compound located; surveillance team on site, no entry before 06:00 ICT.",
    "in_reply_to": NOTICE["notice_id"],
    "sender": CNP,
    "sent_at": "2025-03-31T10:17:42.25Z",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _seed(agency: str, use: str) -> bytes:
    return hashlib.sha256(f"deskbridge test vector {agency} {use}".encode()).digest()


def _jwk(crv: str, private: bytes, public: bytes, use: str, alg: str) -> dict[str, Any]:
    jwk: dict[str, Any] = {"kty": "OKP", "crv": crv, "x": _b64(public), "d": _b64(private)}
    kid = OKPKey.import_key(jwk).thumbprint()  # RFC 7638
    return {**jwk, "kid": kid, "use": use, "alg": alg}


def agency_jwks(agency: str) -> dict[str, Any]:
    """One agency's key pair as a JWKS with private parts, in the shape of its keys.jwks.json."""
    sig_seed, enc_seed = _seed(agency, "sig"), _seed(agency, "enc")
    sig_public = Ed25519PrivateKey.from_private_bytes(sig_seed).public_key().public_bytes_raw()
    enc_public = X25519PrivateKey.from_private_bytes(enc_seed).public_key().public_bytes_raw()
    return {
        "keys": [
            _jwk("Ed25519", sig_seed, sig_public, "sig", "Ed25519"),
            _jwk("X25519", enc_seed, enc_public, "enc", "ECDH-ES+A256KW"),
        ]
    }


def key_document() -> dict[str, Any]:
    return {"warning": WARNING, "agencies": {agency: agency_jwks(agency) for agency in AGENCIES}}


def _by_use(jwks: dict[str, Any], use: str) -> dict[str, Any]:
    (jwk,) = [k for k in jwks["keys"] if k["use"] == use]
    return dict(jwk)


def _public(jwk: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in jwk.items() if k != "d"}


def _seal(notice: Notice, keys: dict[str, Any]) -> bytes:
    sig = _by_use(keys[notice.sender], "sig")
    signer = SigningKey(notice.sender, sig["kid"], OKPKey.import_key(sig))
    recipients = []
    for agency in notice.recipients:
        enc = _by_use(keys[agency], "enc")
        recipients.append(PublicKey(agency, enc["kid"], import_public(_public(enc))))
    return seal_notice(notice, signer, recipients)


def _opens_to(envelope: bytes, notice: Notice, keys: dict[str, Any]) -> bool:
    directory = {}
    for agency, jwks in keys.items():
        sig = _by_use(jwks, "sig")
        directory[sig["kid"]] = PublicKey(agency, sig["kid"], import_public(_public(sig)))
    enc = _by_use(keys[notice.recipients[0]], "enc")
    try:
        opened = open_envelope(
            parse_envelope(envelope), {enc["kid"]: OKPKey.import_key(enc)}, directory.__getitem__
        )
    except (EnvelopeError, KeyError):
        return False
    return opened == notice


def _inner_jws(envelope: bytes, recipient: dict[str, Any]) -> bytes:
    """The plaintext of the JWE: the inner compact JWS exactly as sealed."""
    token = jwc_jwe.JWE()
    token.deserialize(json.dumps(parse_envelope(envelope).jwe.model_dump(exclude_none=True)))
    token.decrypt(jwc_jwk.JWK(**recipient))
    plaintext: bytes = token.payload
    return plaintext


def _current(envelope: bytes, notice: Notice, canonical: bytes, keys: dict[str, Any]) -> bool:
    """The envelope opens to the notice and its inner JWS signs `canonical`: one sealed under an older
    canonical form still opens, but would no longer match the canonical file."""
    if not _opens_to(envelope, notice, keys):
        return False
    payload = _inner_jws(envelope, _by_use(keys[notice.recipients[0]], "enc")).split(b".")[1]
    return base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)) == canonical


def write_vectors(directory: Path = VECTORS, force: bool = False) -> list[Path]:
    """Writes every vector file into `directory`; returns the files written or kept."""
    directory.mkdir(parents=True, exist_ok=True)
    document = key_document()
    keys = document["agencies"]
    files = [directory / "keys.json"]
    files[0].write_text(json.dumps(document, indent=2) + "\n")
    for name, body in (("notice", NOTICE), ("reply", REPLY)):
        notice = Notice.model_validate(body)
        value = notice.model_dump(mode="json", exclude_none=True)
        canonical = canonical_json(value)
        envelope_path = directory / ENVELOPE_FILES[name]
        fresh = envelope_path.exists() and _current(envelope_path.read_bytes(), notice, canonical, keys)
        if force or not fresh:
            envelope_path.write_bytes(_seal(notice, keys))
        envelope = envelope_path.read_bytes()
        written = {
            f"{name}.json": (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode(),
            f"{name}.canonical.json": canonical,
            f"{name}.jws": _inner_jws(envelope, _by_use(keys[notice.recipients[0]], "enc")),
        }
        for filename, data in written.items():
            (directory / filename).write_bytes(data)
        files += [directory / f for f in written] + [envelope_path]
    return files


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--force", action="store_true", help="seal new envelopes even if the old ones open")
    parser.add_argument("--out", type=Path, default=VECTORS, help="directory to write (default: here)")
    args = parser.parse_args()
    for path in write_vectors(args.out, args.force):
        print(f"{path.stat().st_size:7d}  {path}")


if __name__ == "__main__":
    main()
