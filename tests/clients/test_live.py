"""The TypeScript and Java partner clients against the real stack, through their own command lines only:
the desk sends, each partner opens, verifies, acknowledges and replies with its own keys, the desk sees both
replies verified, and each partner opens what the other one sealed."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jwcrypto import jwk, jws

from services.trust.signed_directory import PIN_FILE
from tests.cli.test_main import _notice_file, deskbridge
from tests.conftest import Stack, eventually
from tests.support.fixtures import REPO_ROOT

CASE = "KD-2026-1201"
CLIENTS = {
    "typescript": REPO_ROOT / "clients" / "typescript" / "bin" / "deskbridge-partner",
    "java": REPO_ROOT / "clients" / "java" / "bin" / "deskbridge-partner",
}
# Each client acts as one partner agency of the demo directory.
AGENCY = {"typescript": "kh-cnp", "java": "interpol-ncb-phnom-penh"}


@dataclass
class Ran:
    status: int
    out: str
    err: str

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


async def partner(stack: Stack, client: str, *args: str, home: Path | None = None) -> Ran:
    """One run of a client's command line as its agency, in a process of its own."""
    launcher = CLIENTS[client]
    process = await asyncio.create_subprocess_exec(
        str(launcher), "--server", stack.gateway_url, "--home", str(home or stack.home),
        "--as", AGENCY[client], *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return Ran(process.returncode, out.decode(), err.decode())


async def pulled(stack: Stack, client: str, notice_id: str) -> dict[str, Any]:
    """The client's `inbox pull --json` line for one notice, once ingest has delivered it."""

    async def opened() -> dict[str, Any]:
        ran = await partner(stack, client, "inbox", "pull", "--json")
        assert ran.status == 0, ran.err
        return next((line for line in ran.lines() if line["notice"]["notice_id"] == notice_id), {})

    return await eventually(opened, within=60, every=0.5)


async def desk_sends(stack: Stack, tmp_path: Path, to: list[str]) -> str:
    sent = await deskbridge(
        stack,
        "notice", "send", "--as", "kr-desk", "--to", ",".join(to), "--type", "kidnapping_confinement",
        "--priority", "flash", "--tlp", "amber", "--case-ref", CASE, "--file", str(_notice_file(tmp_path)),
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    found = re.search(r"accepted ([0-9a-f-]{36})", sent.output)
    assert found, sent.output
    return found.group(1)


async def recipients(stack: Stack, notice_id: str) -> dict[str, dict[str, Any]]:
    response = await stack.client("kr-desk").get(f"/v1/notices/{notice_id}")
    assert response.status_code == 200, response.text
    return {r["agency"]: r for r in response.json()["recipients"]}


async def test_typescript_and_java_partners_open_acknowledge_and_reply_and_the_desk_verifies_both(
    stack: Stack, tmp_path: Path
) -> None:
    notice_id = await desk_sends(stack, tmp_path, list(AGENCY.values()))

    for client, agency in AGENCY.items():
        line = await pulled(stack, client, notice_id)
        assert line["verified_by"] == "kr-desk" and line["acknowledged"] is True, (client, line)
        notice = line["notice"]
        assert notice["sender"] == "kr-desk" and notice["case_ref"] == CASE
        assert notice["subjects"][0]["name_hangul"] == "이지우"  # decrypted, not only routed
        assert agency in notice["recipients"]

    # Each receipt is the partner's own signature over this copy: the desk checks it with jwcrypto and the
    # key the directory publishes, as any JOSE library could.
    states = await eventually(lambda: _all_in(stack, notice_id, "acknowledged"), within=30)
    for agency in AGENCY.values():
        state = states[agency]
        keys = (await stack.client("kr-desk").get(f"/v1/directory/agencies/{agency}/jwks")).json()["keys"]
        [signing] = [k for k in keys if k["use"] == "sig"]
        receipt = jws.JWS()
        receipt.deserialize(state["receipt"], jwk.JWK(**signing), alg="Ed25519")
        claims = json.loads(receipt.payload)
        assert receipt.jose_header["typ"] == "deskbridge-receipt+jws"
        assert claims["agency"] == agency and claims["notice_id"] == notice_id

    replies: dict[str, str] = {}
    for client, agency in AGENCY.items():
        ran = await partner(stack, client, "reply", "--to", notice_id, "--summary", f"{client} team en route")
        assert ran.status == 0, ran.err
        [answer] = ran.lines()
        replies[agency] = answer["notice_id"]

    # The desk opens both replies with its own CLI: decrypted with its key, both signatures verified.
    opened: dict[str, dict[str, Any]] = {}

    async def both_replies() -> bool:
        result = await deskbridge(stack, "inbox", "pull", "--as", "kr-desk", "--json")
        assert result.exit_code == 0, result.output
        for line in result.output.splitlines():
            notice = json.loads(line)
            opened[notice["notice_id"]] = notice
        return all(reply in opened for reply in replies.values())

    await eventually(both_replies, within=60, every=0.5)
    for agency, reply_id in replies.items():
        reply = opened[reply_id]
        assert reply["sender"] == agency and reply["type"] == "reply"
        assert reply["in_reply_to"] == notice_id and reply["case_ref"] == CASE
        assert reply["recipients"] == ["kr-desk"]
    states = await eventually(lambda: _all_in(stack, notice_id, "replied"), within=30)
    assert sorted(states) == sorted(AGENCY.values())


async def _all_in(stack: Stack, notice_id: str, state: str) -> dict[str, dict[str, Any]]:
    """Every recipient's status once all of them reached `state`."""
    states = await recipients(stack, notice_id)
    return states if all(s["state"] == state for s in states.values()) else {}


async def test_each_client_opens_what_the_other_sealed(stack: Stack, tmp_path: Path) -> None:
    """A notice sealed in Java opens in TypeScript, and the other way round."""
    sent: dict[str, str] = {}
    for client, other in (("java", "typescript"), ("typescript", "java")):
        draft = tmp_path / f"{client}.json"
        draft.write_text(
            json.dumps(
                {
                    "notice_id": str(uuid.uuid4()),
                    "type": "intel_report",
                    "priority": "routine",
                    "tlp": "green",
                    "case_ref": CASE,
                    "recipients": [AGENCY[other]],
                    "summary": f"Compound moved; sealed by the {client} client.",
                }
            )
        )
        ran = await partner(stack, client, "notice", "send", "--file", str(draft))
        assert ran.status == 0, ran.err
        [answer] = ran.lines()
        sent[other] = answer["notice_id"]

    for client, notice_id in sent.items():
        line = await pulled(stack, client, notice_id)
        sealer = next(c for c in AGENCY if c != client)
        assert line["verified_by"] == AGENCY[sealer]
        assert line["notice"]["summary"] == f"Compound moved; sealed by the {sealer} client."


@pytest.mark.parametrize("client", sorted(CLIENTS))
async def test_a_directory_signed_by_another_key_than_the_pinned_one_is_refused(
    stack: Stack, tmp_path: Path, client: str
) -> None:
    home = tmp_path / "home"
    shutil.copytree(stack.home / AGENCY[client], home / AGENCY[client])
    # Pin some other Ed25519 key (the agency's own signing key): the served directory no longer verifies.
    keys = json.loads((home / AGENCY[client] / "keys.jwks.json").read_text())["keys"]
    own = next(k for k in keys if k["use"] == "sig")
    public = {name: own[name] for name in ("kty", "crv", "x")}
    (home / AGENCY[client] / PIN_FILE).write_text(json.dumps({**public, "use": "sig", "alg": "Ed25519"}))

    ran = await partner(stack, client, "directory", "show", home=home)
    assert ran.status == 1 and ran.out == "", (ran.out, ran.err)
    assert ran.err.startswith("error: ") and len(ran.err.strip().splitlines()) == 1, ran.err
