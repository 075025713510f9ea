"""The signed directory end to end: the gateway signs what the directory holds, a partner checks it against
the key it pinned, jwcrypto agrees, and a tampered, foreign-signed or late copy is refused."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from jwcrypto import jwk as jwc_jwk
from jwcrypto import jws as jwc_jws

from schemas.directory import DirectoryAgency, DirectoryDocument, DirectoryKey, SignedDirectory
from services.envelope.keys import AgencyKeys
from services.trust.errors import DirectoryTrustError
from services.trust.signed_directory import load_pin, sign_directory, verify_directory
from tests.conftest import Stack

KH, INTERPOL = "kh-cnp", "interpol-ncb-phnom-penh"


async def test_the_directory_is_signed_and_checks_out_against_the_pinned_key(stack: Stack) -> None:
    kh = AgencyKeys.load(stack.home / KH)
    await stack.client(KH).post(f"/v1/keys/{kh.signing_kid}/revoke", json={"reason": "drill"})
    response = await stack.client(INTERPOL).get("/v1/directory")
    assert response.status_code == 200, response.text
    signed = SignedDirectory.model_validate(response.json())
    pinned = load_pin(stack.home / INTERPOL)
    document = verify_directory(signed, pinned, datetime.now(UTC), timedelta(minutes=5))
    entry = document.agency(KH)
    assert entry is not None
    states = {k.kid: k.status for k in entry.keys}
    assert states == {kh.signing_kid: "revoked", kh.encryption_kid: "active"}

    # The independent JOSE library agrees, from the pinned key alone.
    checker = jwc_jws.JWS()
    checker.deserialize(signed.jws)
    checker.verify(jwc_jwk.JWK(**pinned.jwk(use="sig", alg="Ed25519")), alg="Ed25519")
    assert json.loads(checker.payload)["agencies"][0]["id"] == document.agencies[0].id

    # A document changed in transit, signed by another key, or replayed late is refused.
    head, payload, signature = signed.jws.split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered["agencies"][0]["keys"] = []
    changed = base64.urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    forged = SignedDirectory(
        jws=f"{head}.{changed}.{signature}",
        kid=signed.kid,
    )
    with pytest.raises(DirectoryTrustError, match="does not verify"):
        verify_directory(forged, pinned, datetime.now(UTC), timedelta(minutes=5))
    other = AgencyKeys.generate("x").signer().public()
    with pytest.raises(DirectoryTrustError, match="not by the pinned key"):
        verify_directory(signed, other, datetime.now(UTC), timedelta(minutes=5))
    with pytest.raises(DirectoryTrustError, match="replayed old copy"):
        verify_directory(signed, pinned, datetime.now(UTC) + timedelta(hours=1), timedelta(minutes=5))


def test_a_directory_of_many_agencies_with_rotated_keys_still_verifies() -> None:
    """Every key an agency ever held stays listed: 500 agencies with five rotations each is ~1.5 MB,
    far past the 128,000 bytes JOSE libraries allow by default."""
    signer = AgencyKeys.generate("kr-desk").signer()
    now = int(datetime.now(UTC).timestamp())
    agencies = [
        DirectoryAgency(
            id=f"agency-{i}",
            name=f"Agency {i}",
            kind="partner",
            keys=[
                DirectoryKey.model_validate({**jwk, "status": "active", "nbf": now})
                for keys in [AgencyKeys.generate(f"agency-{i}") for _ in range(5)]
                for jwk in keys.public_jwks()
            ],
        )
        for i in range(500)
    ]
    signed = sign_directory(DirectoryDocument(iat=now, agencies=agencies), signer)
    assert len(signed.jws) > 1_000_000
    document = verify_directory(signed, signer.public(), datetime.now(UTC), timedelta(minutes=5))
    assert len(document.agencies) == 500 and document.agency("agency-499") is not None
