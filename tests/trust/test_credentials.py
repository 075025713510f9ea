"""Bearer credential rotation over the running stack: the new token works, the old one stops, all audited."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.cli.main import app as cli
from tests.conftest import Stack, audited, eventually

PARTNER = "kh-cnp"


def _bearer(stack: Stack, token: str, audit: bool = False) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        base_url=stack.audit_url if audit else stack.gateway_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    stack._clients.append(client)
    return client


def _credential_id(token: str) -> str:
    return token.split("_")[1]


async def _rotate(stack: Stack, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return await _bearer(stack, token).post("/v1/credentials/rotate", json=body)


async def test_rotation_replaces_the_token_at_once(stack: Stack) -> None:
    old = stack.token(PARTNER)
    rotated = await _rotate(stack, old)
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert (body["role"], body["agency"], body["replaces"]) == ("agency", PARTNER, _credential_id(old))
    new = body["token"]
    assert new != old and _credential_id(new) == body["credential_id"]
    assert (await _bearer(stack, new).get("/v1/inbox")).status_code == 200
    refused = await _bearer(stack, old).get("/v1/inbox")
    assert refused.status_code == 401 and refused.json()["detail"] == "the credential is not valid"
    assert (await _rotate(stack, old)).status_code == 401

    # Any role rotates its own credential, and the new one keeps the role.
    auditor = (await _rotate(stack, stack.token("auditor"))).json()
    assert auditor["role"] == "auditor" and auditor["agency"] is None
    audit = await _bearer(stack, auditor["token"], audit=True).get("/v1/audit/events")
    assert audit.status_code == 200, audit.text
    assert (
        await _bearer(stack, stack.token("auditor"), audit=True).get("/v1/audit/events")
    ).status_code == 401


async def test_the_old_token_works_until_the_grace_ends(stack: Stack) -> None:
    old = stack.token(PARTNER)
    for grace in (-1, 86_401, "soon"):
        response = await _rotate(stack, old, {"grace_s": grace})
        assert response.status_code == 422 and "grace_s" in response.json()["detail"], response.text
    rotated = await _rotate(stack, old, {"grace_s": 3})
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()["token"]
    assert (await _bearer(stack, old).get("/v1/inbox")).status_code == 200
    # One rotation per credential: a leaked old token cannot mint more while the grace runs.
    again = await _rotate(stack, old)
    assert again.status_code == 409 and "already rotated" in again.json()["detail"], again.text

    async def old_refused() -> bool:
        return (await _bearer(stack, old).get("/v1/inbox")).status_code == 401

    assert await eventually(old_refused, within=30, every=0.5)
    assert (await _bearer(stack, new).get("/v1/inbox")).status_code == 200


async def test_cli_rotation_saves_the_token_audits_it_and_logs_it_nowhere(
    stack: Stack, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    old = stack.token(PARTNER)
    argv = ["credential", "rotate", "--as", PARTNER, "--home", str(stack.home), "--server", stack.gateway_url]
    result = await asyncio.to_thread(CliRunner().invoke, cli, argv)
    assert result.exit_code == 0, result.output
    new = stack.token(PARTNER)
    assert new != old and _credential_id(new) in result.output
    assert oct((stack.home / PARTNER / "credential").stat().st_mode & 0o777) == "0o600"
    assert (await _bearer(stack, new).get("/v1/inbox")).status_code == 200
    assert (await _bearer(stack, old).get("/v1/inbox")).status_code == 401

    async def recorded() -> list[dict[str, Any]]:
        issued = [e for e in await audited(stack, "credential.issued") if e["details"].get("rotated_from")]
        revoked = await audited(stack, "credential.revoked")
        return [*issued, *revoked] if issued and revoked else []

    issued, revoked = await eventually(recorded)
    assert issued["details"]["credential_id"] == _credential_id(new)
    assert issued["details"]["rotated_from"] == _credential_id(old)
    assert issued["agency"] == revoked["agency"] == PARTNER and issued["actor"] == PARTNER
    assert revoked["details"]["credential_id"] == _credential_id(old)
    assert revoked["details"]["replaced_by"] == _credential_id(new)
    assert revoked["details"]["grace_s"] == 0

    secrets = [token.split("_", 2)[2] for token in (old, new)]
    everything = (await stack.client("auditor", audit=True).get("/v1/audit/events")).text
    out, err = capfd.readouterr()
    for place, text in (("audit", everything), ("cli", result.output), ("logs", caplog.text + out + err)):
        assert not any(secret in text for secret in secrets), place


async def test_current_names_the_caller_and_nothing_secret(stack: Stack) -> None:
    partner = await _bearer(stack, stack.token(PARTNER)).get("/v1/credentials/current")
    assert partner.status_code == 200, partner.text
    assert partner.json() == {
        "role": "agency",
        "agency": PARTNER,
        "credential_id": _credential_id(stack.token(PARTNER)),
    }
    auditor = (await _bearer(stack, stack.token("auditor")).get("/v1/credentials/current")).json()
    assert (auditor["role"], auditor["agency"]) == ("auditor", None)
    assert stack.token("auditor") not in str(auditor)
    assert (await _bearer(stack, "dbk_nope_nope").get("/v1/credentials/current")).status_code == 401
