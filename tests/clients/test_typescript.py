"""The TypeScript partner client's cryptography (clients/typescript/src, which the browser console builds
in too) against deskbridge's Python.

Node runs clients/typescript/test/interop/produce.ts with the vector keys: a receipt for the vector notice,
envelopes sealed in TypeScript, and the cases of clients/typescript/test/cases.ts (tampered envelopes with
the reason code the TypeScript refuses each with, and unusual ones it opens). Here the Python must accept
the receipt (check_receipt), open the sealed envelopes (parse_envelope, verify_outer, open_envelope; and
jwcrypto, which knows nothing of deskbridge), refuse every tampered envelope with the same code and open
the unusual ones. Needs node and `npm ci` in clients/typescript/ (both `make setup`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from schemas.notices import Notice
from services.envelope.errors import EnvelopeError
from services.envelope.keys import PublicKey
from services.envelope.receipts import check_receipt
from services.envelope.service import Freshness, parse_envelope, verify_outer
from services.trust.errors import SignatureError
from services.trust.httpsig import SignaturePolicy, verify_request
from tests.envelope.test_vectors import NOTICE, REPLY, jwc_open, jwk, lookup, our_open

CLIENT = Path(__file__).resolve().parents[2] / "clients" / "typescript"


@cache
def produced() -> dict[str, Any]:
    """What the TypeScript made (run once: node takes seconds to start)."""
    npx = shutil.which("npx")
    if npx is None:
        pytest.fail("the TypeScript client is tested with node: install Node.js 20.19 or newer")
    if not (CLIENT / "node_modules").is_dir():
        pytest.fail("clients/typescript/node_modules is missing: run `make setup`")
    script = [npx, "vite-node", "test/interop/produce.ts"]
    result = subprocess.run(script, cwd=CLIENT, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    output: dict[str, Any] = json.loads(result.stdout)
    return output


def key_at(kid: str, _: datetime) -> PublicKey:
    return lookup(kid)


def test_typescript_hashes_the_envelope_bytes_as_received() -> None:
    assert produced()["envelope_sha256"] == hashlib.sha256(NOTICE.envelope).hexdigest()


def test_python_accepts_the_typescript_receipt() -> None:
    token = produced()["receipt"]
    digest = hashlib.sha256(NOTICE.envelope).hexdigest()
    notice_id = NOTICE.notice["notice_id"]
    receipt = check_receipt(
        token, key_at, "kh-cnp", notice_id, digest, datetime.now(UTC), Freshness.of(300, 30)
    )
    assert (str(receipt.notice_id), receipt.agency, receipt.envelope_sha256) == (notice_id, "kh-cnp", digest)
    with pytest.raises(EnvelopeError) as caught:
        check_receipt(token, key_at, "kh-cnp", notice_id, "0" * 64, datetime.now(UTC), Freshness.of(300, 30))
    assert caught.value.code == "bad_receipt"


async def key_for_request(kid: str, _: datetime) -> PublicKey:
    return lookup(kid)


def test_python_verifies_the_typescript_request_signatures() -> None:
    for request in produced()["requests"]:
        method, url, headers, body = request["method"], request["url"], request["headers"], request["body"]
        verified = asyncio.run(
            verify_request(
                method, url, headers, body.encode(), key_for_request, SignaturePolicy(), datetime.now(UTC)
            )
        )
        assert (verified.agency, verified.kid) == ("kh-cnp", jwk("kh-cnp", "sig")["kid"])
        with pytest.raises(SignatureError):
            asyncio.run(
                verify_request(
                    method,
                    url + "&x=1",
                    headers,
                    body.encode(),
                    key_for_request,
                    SignaturePolicy(),
                    datetime.now(UTC),
                )
            )


SEALED = [
    ("notice", NOTICE, NOTICE.recipients),
    ("reply", REPLY, REPLY.recipients),
    ("single", REPLY, ["kr-desk"]),
]


@pytest.mark.parametrize(("name", "vector", "recipients"), SEALED)
def test_python_opens_what_typescript_seals(name: str, vector: Any, recipients: list[str]) -> None:
    envelope = produced()["sealed"][name].encode()
    assert rfc8785.dumps(json.loads(envelope)) == envelope
    parsed = parse_envelope(envelope)
    verify_outer(parsed, lookup(parsed.kid))
    assert parsed.routing.recipients == recipients
    expected = Notice.model_validate({**vector.notice, "recipients": recipients})
    for agency in recipients:
        assert our_open(envelope, agency) == expected
        opened = jwc_open(envelope, vector.sender, agency)
        assert set(opened.recipient_header) == {"alg", "kid", "epk"}
        assert opened.recipient_header["kid"] == jwk(agency, "enc")["kid"]
        if name != "single":  # the vector's inner JWS, byte for byte: Ed25519 is deterministic
            assert opened.inner == vector.jws


def cases(kind: str) -> list[dict[str, str]]:
    found: list[dict[str, str]] = produced()[kind]
    return found


def test_typescript_refuses_with_the_pythons_reason_codes() -> None:
    differences = []
    for case in cases("tampered"):
        try:
            our_open(case["envelope"], case["agency"])
            python = "opened"
        except EnvelopeError as exc:
            python = exc.code
        if python != case["code"]:
            differences.append(f"{case['name']}: typescript {case['code']}, python {python}")
    assert differences == []
    assert len(cases("tampered")) > 40


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")  # joserfc's SecurityWarning: accepted on purpose
def test_python_opens_the_unusual_envelopes_typescript_opens() -> None:
    expected = Notice.model_validate(NOTICE.notice)
    for case in cases("unusual"):
        assert our_open(case["envelope"], "kh-cnp") == expected, case["name"]
