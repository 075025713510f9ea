"""The CLI's trust features against the live services: a partner seals and replies on its own machine,
keys rotate and get revoked, the desk recalls and follows a case, and a forged directory is refused."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

from services.delivery.models import NoticeRow
from services.envelope.keys import AgencyKeys
from services.envelope.service import parse_envelope
from services.trust.signed_directory import PIN_FILE, save_pin
from tests.cli.test_main import _notice_file, deskbridge
from tests.conftest import Stack, eventually
from tests.support.fixtures import REPO_ROOT

CASE = "KD-2025-0512"


async def _send(stack: Stack, tmp_path: Path, sender: str, to: str, *extra: str) -> str:
    sent = await deskbridge(
        stack,
        "notice", "send", "--as", sender, "--to", to, "--type", extra[0] if extra else "scam_compound",
        "--priority", "immediate", "--tlp", "amber", "--case-ref", CASE,
        "--file", str(_notice_file(tmp_path)), *extra[1:],
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    found = re.search(r"accepted ([0-9a-f-]{36})", sent.output)
    assert found, sent.output
    return found.group(1)


async def _stored(stack: Stack, notice_id: str) -> bool:
    async with stack.sessions() as session:
        return await session.get(NoticeRow, notice_id) is not None


async def _pull(stack: Stack, agency: str, count: int) -> list[dict[str, object]]:
    opened: list[dict[str, object]] = []

    async def more() -> bool:
        result = await deskbridge(stack, "inbox", "pull", "--as", agency, "--json")
        assert result.exit_code == 0, result.output
        opened.extend(json.loads(line) for line in result.output.splitlines() if line.strip())
        return len(opened) >= count

    await eventually(more)
    return opened


async def test_a_partner_replies_from_its_own_machine_and_the_desk_sees_the_thread(
    stack: Stack, tmp_path: Path
) -> None:
    original = await _send(stack, tmp_path, "kr-desk", "kh-cnp")
    await _pull(stack, "kh-cnp", 1)
    reply = await _send(stack, tmp_path, "kh-cnp", "kr-desk", "reply", "--in-reply-to", original)
    [opened] = await _pull(stack, "kr-desk", 1)
    assert opened["notice_id"] == reply and opened["sender"] == "kh-cnp"
    assert opened["in_reply_to"] == original

    shown = await deskbridge(stack, "case", "show", CASE, "--as", "kr-desk")
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    at = {n: next(i for i, line in enumerate(lines) if n in line) for n in (original, reply)}
    assert at[original] < at[reply]
    assert lines[at[reply]].startswith("    ") and not lines[at[original]].startswith("    ")


async def test_rotation_from_the_cli_keeps_old_notices_open(stack: Stack, tmp_path: Path) -> None:
    before = await _send(stack, tmp_path, "kr-desk", "kh-cnp")
    # A reply may name only a notice deskbridge has stored, which ingest does just after the 202.
    await eventually(lambda: _stored(stack, before))
    # Signed with kh-cnp's current key; the desk reads it only after that key has expired.
    early_reply = await _send(stack, tmp_path, "kh-cnp", "kr-desk", "reply", "--in-reply-to", before)
    old = AgencyKeys.load(stack.home / "kh-cnp")
    rotated = await deskbridge(stack, "keys", "rotate", "--as", "kh-cnp", "--overlap", "0")
    assert rotated.exit_code == 0 and rotated.output.count("registered") == 2, rotated.output
    new = AgencyKeys.load(stack.home / "kh-cnp")
    assert new.signing_kid != old.signing_kid and old.encryption_kid in new.decryption_keys()

    after = await _send(stack, tmp_path, "kr-desk", "kh-cnp")
    opened = await _pull(stack, "kh-cnp", 2)
    assert {o["notice_id"] for o in opened} == {before, after}
    # kh-cnp now signs with its new key; the desk verifies it from the directory.
    reply = await _send(stack, tmp_path, "kh-cnp", "kr-desk", "reply", "--in-reply-to", before)
    desk_opened = await _pull(stack, "kr-desk", 2)
    assert {o["notice_id"] for o in desk_opened} == {early_reply, reply}


async def test_a_revoked_key_cannot_send_and_the_desk_recalls(stack: Stack, tmp_path: Path) -> None:
    keys = AgencyKeys.load(stack.home / "aseanapol")
    revoked = await deskbridge(
        stack, "keys", "revoke", keys.signing_kid, "--as", "aseanapol", "--reason", "device lost"
    )
    assert revoked.exit_code == 0, revoked.output
    refused = await deskbridge(
        stack,
        "notice", "send", "--as", "aseanapol", "--to", "kr-desk", "--type", "intel_report",
        "--priority", "routine", "--tlp", "green", "--case-ref", CASE, "--file", str(_notice_file(tmp_path)),
    )  # fmt: skip
    assert refused.exit_code == 1 and "key_revoked" in refused.output, refused.output

    notice_id = await _send(stack, tmp_path, "kr-desk", "interpol-ncb-phnom-penh")
    recalled = await deskbridge(
        stack, "notice", "recall", notice_id, "--as", "kr-desk", "--reason", "sent early"
    )
    assert recalled.exit_code == 0, recalled.output

    async def applied() -> str | None:
        status = await deskbridge(stack, "notice", "status", notice_id, "--as", "kr-desk")
        return status.output if "recalled" in status.output else None

    shown = await eventually(applied)
    # The time beside a state is when the copy got there: the recall's, not the delivery's.
    [copy] = (await stack.client("kr-desk").get(f"/v1/notices/{notice_id}")).json()["recipients"]
    assert copy["recalled_at"] != copy["delivered_at"]
    assert f"recalled      {copy['recalled_at']}" in shown, shown
    pulled = await deskbridge(stack, "inbox", "pull", "--as", "interpol-ncb-phnom-penh")
    assert pulled.exit_code == 0 and "0 notice(s) opened" in pulled.output


async def test_a_directory_signed_by_another_key_is_refused(stack: Stack) -> None:
    save_pin(
        stack.home / "kh-cnp", AgencyKeys.generate("x").signer().public()
    )  # a pin the server cannot match
    result = await deskbridge(stack, "inbox", "pull", "--as", "kh-cnp")
    assert result.exit_code == 1 and "directory refused" in result.output, result.output
    (stack.home / "kh-cnp" / PIN_FILE).unlink()
    result = await deskbridge(stack, "inbox", "pull", "--as", "kh-cnp")
    assert result.exit_code == 1 and "no pinned directory key" in result.output, result.output


async def test_the_gateway_seals_with_the_desks_new_key_right_after_rotation(
    stack: Stack, tmp_path: Path
) -> None:
    rotated = await deskbridge(stack, "keys", "rotate", "--as", "kr-desk", "--overlap", "0")
    assert rotated.exit_code == 0, rotated.output
    new_kid = AgencyKeys.load(stack.home / "kr-desk").signing_kid
    notice_id = await _send(stack, tmp_path, "kr-desk", "kh-cnp")
    [opened] = await _pull(stack, "kh-cnp", 1)
    assert opened["notice_id"] == notice_id
    async with stack.sessions() as session:
        stored = await session.get(NoticeRow, notice_id)
        assert stored is not None and parse_envelope(stored.envelope).kid == new_kid


async def test_inbox_pull_follow_shows_a_notice_as_soon_as_it_is_delivered(
    stack: Stack, tmp_path: Path
) -> None:
    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli.main", "inbox", "pull", "--as", "aseanapol", "--follow", "--json",
        "--home", str(stack.home), "--server", stack.gateway_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        await asyncio.sleep(2)
        assert follower.returncode is None  # still waiting, nothing to show yet
        notice_id = await _send(stack, tmp_path, "kr-desk", "aseanapol")
        assert follower.stdout is not None
        line = await asyncio.wait_for(follower.stdout.readline(), 30)
        assert json.loads(line)["notice_id"] == notice_id
    finally:
        follower.terminate()
        await follower.wait()
