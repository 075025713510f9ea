"""Request signatures (RFC 9421): the RFC's own Ed25519 vector, the library as an independent check, and
every refusal over real HTTP, Kafka and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_message_signatures import HTTPMessageSigner, HTTPMessageVerifier, MappingKeyResolver, algorithms
from joserfc.jwk import OKPKey
from sqlalchemy import text
from typer.testing import CliRunner

from services.cli.main import app as cli
from services.envelope.errors import EnvelopeError
from services.envelope.keys import AgencyKeys, PublicKey, SigningKey
from services.platform.database import utcnow
from services.trust.errors import SignatureError
from services.trust.httpsig import (
    COVERED,
    LABEL,
    RequestSigner,
    SignaturePolicy,
    verify_request,
)
from tests.conftest import Stack, eventually, receipt
from tests.support.sealing import notice_body

# RFC 9421 Appendix B.1.4, the Ed25519 test key, and B.2.6, a request signed with it.
RFC_KEY = {
    "kty": "OKP",
    "crv": "Ed25519",
    "x": "JrQLj5P_89iXES9-vFgrIy29clF9CC_oPPsw3c5D0bs",
    "d": "n4Ni-HpISpVObnQMW0wOhCKROaIKqKtW_2ZYb2p9KcU",
}
B26_URL = "http://example.com/foo?param=Value&Pet=dog"
B26_BODY = b'{"hello": "world"}'
B26_HEADERS = [
    ("Host", "example.com"),
    ("Date", "Tue, 20 Apr 2021 02:07:55 GMT"),
    ("Content-Type", "application/json"),
    (
        "Content-Digest",
        "sha-512=:WZDPaVn/7XgHaAy8pmojAkGWoRx2UFChF41A2svX+TaPm+AbwAgBWnrIiYllu7BNNyealdVLvRwEmTHWXvJwew==:",
    ),
    ("Content-Length", "18"),
    (
        "Signature-Input",
        'sig-b26=("date" "@method" "@path" "@authority" "content-type" "content-length")'
        ';created=1618884473;keyid="test-key-ed25519"',
    ),
    (
        "Signature",
        "sig-b26=:wqcAqbmYJ2ji2glfAMaRy4gruYYnx2nEFN2HN6jrnDnQCK1u02Gb04v9EDgwUPiu4A0w6vuQv5lIp5WPpBKRCw==:",
    ),
]
B26_CREATED = datetime.fromtimestamp(1618884473, UTC)
# B.2.6 covers neither @target-uri nor content-digest and carries no nonce: our policy would refuse it.
B26_POLICY = SignaturePolicy(covered=("@method", "@path", "@authority"), nonce_required=False)
PARTNER = "kh-cnp"


def _rfc_lookup(key: OKPKey) -> Any:
    async def lookup(kid: str, signed_at: datetime) -> PublicKey:
        if kid != "test-key-ed25519":
            raise EnvelopeError("unknown_key", f"no signing key {kid} in the directory")
        return PublicKey("rfc-9421", kid, key)

    return lookup


async def test_rfc9421_b26_ed25519_example_verifies() -> None:
    public = OKPKey.import_key({k: v for k, v in RFC_KEY.items() if k != "d"})
    verified = await verify_request(
        "POST",
        B26_URL,
        B26_HEADERS,
        B26_BODY,
        _rfc_lookup(public),
        B26_POLICY,
        B26_CREATED + timedelta(seconds=5),
    )
    assert (verified.agency, verified.kid, verified.created) == ("rfc-9421", "test-key-ed25519", B26_CREATED)

    changed = [(n, "Wed, 21 Apr 2021 02:07:55 GMT" if n == "Date" else v) for n, v in B26_HEADERS]
    with pytest.raises(SignatureError, match="does not verify with key test-key-ed25519"):
        await verify_request("POST", B26_URL, changed, B26_BODY, _rfc_lookup(public), B26_POLICY, B26_CREATED)
    # The same vector fails our own policy on what it does not cover, and a day later on its age.
    with pytest.raises(SignatureError, match=r"must cover .*@target-uri, content-digest not covered"):
        await verify_request(
            "POST", B26_URL, B26_HEADERS, B26_BODY, _rfc_lookup(public), SignaturePolicy(), B26_CREATED
        )
    with pytest.raises(SignatureError, match="created is 86400 s old, the window is 300 s"):
        await verify_request(
            "POST",
            B26_URL,
            B26_HEADERS,
            B26_BODY,
            _rfc_lookup(public),
            B26_POLICY,
            B26_CREATED + timedelta(1),
        )


def _signed(key: SigningKey, method: str, url: str, body: bytes = b"", **signer: Any) -> httpx.Request:
    request = httpx.Request(method, url, content=body)
    return next(RequestSigner(key, **signer).auth_flow(request))


def _verify(request: httpx.Request, key: OKPKey, now: datetime | None = None, **policy: Any) -> Any:
    async def lookup(kid: str, signed_at: datetime) -> PublicKey:
        return PublicKey("agency-a", kid, key)

    return verify_request(
        request.method,
        str(request.url),
        request.headers.multi_items(),
        request.content,
        lookup,
        SignaturePolicy(**policy),
        now or utcnow(),
    )


async def test_our_signatures_and_the_librarys_verify_each_other() -> None:
    """Independent check in both directions: the library's verifier, configured by its documentation,
    accepts what RequestSigner makes, and our verifier accepts a signature the library made."""
    private = OKPKey.generate_key("Ed25519")
    key = SigningKey("agency-a", private.thumbprint(), private)
    raw_private, raw_public = private.private_key, private.public_key
    assert isinstance(raw_private, Ed25519PrivateKey) and isinstance(raw_public, Ed25519PublicKey)
    for body in (b"", b'{"grace_s": 60}'):
        request = _signed(key, "POST", "https://gw.example/v1/inbox/x/ack?y=1", body)
        assert request.headers["content-digest"].startswith("sha-256=:")
        [result] = HTTPMessageVerifier(
            signature_algorithm=algorithms.ED25519,
            key_resolver=MappingKeyResolver(public_keys={key.kid: raw_public}, private_keys={}),
        ).verify(request, require_components=COVERED, body=body)
        assert result.label == LABEL and result.body == body
        assert set(result.parameters) == {"created", "keyid", "nonce", "alg"}
        assert result.parameters["alg"] == "ed25519" and result.parameters["keyid"] == key.kid
        nonce = result.nonce
        assert nonce is not None and len(base64.urlsafe_b64decode(nonce + "==")) == 16

    library_signed = httpx.Request("PUT", "https://gw.example/v1/things/1", content=b"payload")
    HTTPMessageSigner(
        signature_algorithm=algorithms.ED25519,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={key.kid: raw_private}),
    ).sign(
        library_signed,
        key_id=key.kid,
        nonce="a-nonce-of-enough-length",
        label="other",
        covered_component_ids=("@method", "@target-uri"),
        body=b"payload",
    )
    verified = await _verify(library_signed, private)
    assert verified.kid == key.kid and verified.nonce == "a-nonce-of-enough-length"


async def _no_lookup(kid: str, signed_at: datetime) -> PublicKey:
    raise AssertionError("the request should have been refused before its key was looked up")


async def test_policy_refusals_name_what_failed() -> None:
    private = OKPKey.generate_key("Ed25519")
    key = SigningKey("agency-a", private.thumbprint(), private)
    now = utcnow().replace(microsecond=0)
    request = _signed(key, "GET", "https://gw.example/v1/inbox", clock=lambda: now)
    with pytest.raises(SignatureError, match=r"created is 900 s old, the window is 300 s"):
        await _verify(request, private, now + timedelta(seconds=900))
    with pytest.raises(SignatureError, match=r"created is 31 s in the future, clocks may differ by 30 s"):
        await _verify(request, private, now - timedelta(seconds=31))
    other = OKPKey.generate_key("Ed25519")
    with pytest.raises(SignatureError, match=f"does not verify with key {key.kid}"):
        await _verify(request, other)
    signature_input = request.headers["signature-input"]
    for name, value, reason in (
        ("signature", None, "both Signature-Input and Signature are required"),
        ("signature-input", "sig1=((((", "Signature-Input is not a structured-field dictionary"),
        (
            "signature-input",
            signature_input.replace('"ed25519"', '"hmac-sha256"'),
            'alg "hmac-sha256" is not',
        ),
        ("signature-input", signature_input.replace(';nonce="', ';x="'), "nonce (a random string of 16 to"),
    ):
        headers = request.headers.copy()
        if value is None:
            del headers[name]
        else:
            headers[name] = value
        with pytest.raises(SignatureError, match=re.escape(reason)):
            await verify_request(
                "GET", str(request.url), headers.multi_items(), b"", _no_lookup, SignaturePolicy(), now
            )


async def test_a_key_registered_in_the_same_second_as_the_signature_is_valid() -> None:
    """created has whole seconds, so the key is judged at the end of that second, not at its start."""
    private = OKPKey.generate_key("Ed25519")
    key = SigningKey("agency-a", private.thumbprint(), private)
    registered = utcnow().replace(microsecond=500_000)

    async def lookup(kid: str, signed_at: datetime) -> PublicKey:
        if signed_at < registered:
            raise EnvelopeError("key_not_valid", f"key {kid} is not valid before {registered.isoformat()}")
        return PublicKey("agency-a", kid, private)

    request = _signed(
        key, "GET", "https://gw.example/v1/inbox", clock=lambda: registered + timedelta(0, 0, 1)
    )
    verified = await verify_request(
        "GET", str(request.url), request.headers.multi_items(), b"", lookup, SignaturePolicy(), registered
    )
    assert verified.created == registered.replace(microsecond=0)


# --- over the running stack -------------------------------------------------------------------------------


def _key(stack: Stack, agency: str) -> SigningKey:
    return AgencyKeys.load(stack.home / agency).signer()


def _inbox_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["notice_id"] for item in response.json()["items"]]


async def _delivered(stack: Stack, notice_id: str) -> bool:
    response = await stack.client("kr-desk").get(f"/v1/notices/{notice_id}")
    return {r["state"] for r in response.json()["recipients"]} == {"delivered"}


async def test_a_signed_agency_sees_only_its_own_inbox(stack: Stack) -> None:
    body = notice_body([PARTNER])
    # A signed body is verified against its digest and still parsed as JSON by the route afterwards.
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, auth=RequestSigner(_key(stack, "kr-desk")), timeout=30
    ) as desk:
        submitted = await desk.post("/v1/notices", json=body)
        assert submitted.status_code == 202, submitted.text
    await eventually(lambda: _delivered(stack, body["notice_id"]))
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, auth=RequestSigner(_key(stack, PARTNER)), timeout=30
    ) as partner:
        assert _inbox_ids(await partner.get("/v1/inbox")) == [body["notice_id"]]
        ack = await partner.post(
            f"/v1/inbox/{body['notice_id']}/ack", json=await receipt(stack, PARTNER, body["notice_id"])
        )
        assert ack.status_code == 200 and ack.json()["agency"] == PARTNER, ack.text
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, auth=RequestSigner(_key(stack, "aseanapol")), timeout=30
    ) as outsider:
        assert _inbox_ids(await outsider.get("/v1/inbox")) == []
        # A signature authenticates an agency and nothing more.
        refused = await outsider.post("/v1/admin/agencies", json={"id": "x", "name": "x"})
        assert refused.status_code == 401 and "bearer credential" in refused.json()["detail"], refused.text


async def test_bad_signatures_get_401_with_a_reason(stack: Stack) -> None:
    own = _key(stack, PARTNER)
    foreign = _key(stack, "aseanapol")
    url = f"{stack.gateway_url}/v1/inbox"
    ack_url = f"{stack.gateway_url}/v1/inbox/{uuid.uuid4()}/ack"

    def now_plus(seconds: int) -> Any:
        return lambda: utcnow() + timedelta(seconds=seconds)

    tampered_body = _signed(own, "POST", ack_url, b'{"n": 1}')
    tampered_body = httpx.Request("POST", ack_url, headers=tampered_body.headers, content=b'{"n": 2}')
    moved = _signed(own, "GET", url)
    moved = httpx.Request("GET", f"{stack.gateway_url}/v1/directory/agencies", headers=moved.headers)
    replayed = _signed(own, "GET", url)
    client = stack.client(None)
    assert (await client.send(replayed)).status_code == 200

    cases: list[tuple[httpx.Request, str]] = [
        (httpx.Request("GET", url), "a bearer credential or a request signature is required"),
        (
            _signed(SigningKey(PARTNER, own.kid, foreign.key), "GET", url),
            f"request signature: the signature does not verify with key {own.kid}",
        ),
        (tampered_body, "request signature: the body does not match Content-Digest"),
        (moved, f"request signature: the signature does not verify with key {own.kid}"),
        (_signed(own, "GET", url, clock=now_plus(-900)), "s old, the window is 300 s"),
        (_signed(own, "GET", url, clock=now_plus(600)), "s in the future, clocks may differ by 30 s"),
        (replayed, "was already used: the request is a replay"),
        (
            _signed(SigningKey(PARTNER, "no-such-kid", own.key), "GET", url),
            "request signature: no signing key no-such-kid in the directory",
        ),
    ]
    for request, reason in cases:
        response = await client.send(request)
        assert response.status_code == 401, (reason, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert reason in response.json()["detail"], (reason, response.json())
    # Rotation is for bearer credentials: a signature has none to rotate.
    rotate = await client.send(_signed(own, "POST", f"{stack.gateway_url}/v1/credentials/rotate"))
    assert rotate.status_code == 401 and "bearer credential" in rotate.json()["detail"]
    audit = await client.send(_signed(own, "GET", f"{stack.audit_url}/v1/audit/events"))
    assert audit.status_code == 401 and "bearer credential" in audit.json()["detail"]
    # Still serving, to signatures and to bearer credentials alike.
    assert (await client.send(_signed(own, "GET", url))).status_code == 200
    assert (await stack.client(PARTNER).get("/v1/inbox")).status_code == 200


async def test_a_revoked_key_no_longer_signs(stack: Stack) -> None:
    own = _key(stack, PARTNER)
    url = f"{stack.gateway_url}/v1/inbox"
    client = stack.client(None)
    assert (await client.send(_signed(own, "GET", url))).status_code == 200
    async with stack.sessions() as session:
        await session.execute(
            text("UPDATE agency_keys SET status='revoked', revoked_at=now() WHERE kid = :kid"),
            {"kid": own.kid},
        )
        await session.commit()
    response = await client.send(_signed(own, "GET", url))
    assert response.status_code == 401, response.text
    assert f"request signature: key {own.kid} was revoked at" in response.json()["detail"]
    # Another agency's key still works.
    assert (await client.send(_signed(_key(stack, "aseanapol"), "GET", url))).status_code == 200


async def test_cli_pulls_the_inbox_with_a_signature(stack: Stack) -> None:
    body = notice_body([PARTNER])
    assert (await stack.client("kr-desk").post("/v1/notices", json=body)).status_code == 202
    await eventually(lambda: _delivered(stack, body["notice_id"]))
    # No credential file: the key alone must do.
    (stack.home / PARTNER / "credential").unlink()
    argv = [
        "inbox",
        "pull",
        "--as",
        PARTNER,
        "--sign",
        "--home",
        str(stack.home),
        "--server",
        stack.gateway_url,
    ]
    pulled = await asyncio.to_thread(CliRunner().invoke, cli, argv)
    assert pulled.exit_code == 0, pulled.output
    assert body["notice_id"] in pulled.output and "1 notice(s) opened" in pulled.output
    unsigned = await asyncio.to_thread(CliRunner().invoke, cli, argv[:4] + argv[5:])
    assert unsigned.exit_code == 1 and "no credential" in unsigned.output
    argv = ["notice", "status", body["notice_id"], "--as", "kr-desk", "--sign"]
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, [*argv, "--home", str(stack.home), "--server", stack.gateway_url]
    )
    assert status.exit_code == 0 and "acknowledged" in status.output, status.output
