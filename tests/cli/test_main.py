"""The `deskbridge` command against the live services: the README's walk-through and its errors."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner, Result

from services.cli.main import app
from services.trust.signed_directory import DIRECTORY_KEY_FILE, load_directory_key
from tests.conftest import Stack, eventually


async def deskbridge(stack: Stack, *args: str) -> Result:
    """Runs the CLI in a thread: it speaks sync HTTP to servers running in this test's event loop."""
    argv = [*args, "--home", str(stack.home)]
    if args[0] == "audit":
        argv += ["--audit-server", stack.audit_url]
    elif args[:2] != ("keys", "generate") or "--register" in args:
        argv += ["--server", stack.gateway_url]
    return await asyncio.to_thread(CliRunner().invoke, app, argv)


def _notice_file(tmp_path: Path) -> Path:
    path = tmp_path / "notice.json"
    path.write_text(
        json.dumps(
            {
                "summary": "Two Korean nationals held at a compound in Bavet; rescue requested.",
                "subjects": [{"name_latin": "LEE Ji-woo", "name_hangul": "이지우"}],
                "locations": [{"country": "KH", "province": "Svay Rieng", "text": "Bavet"}],
            }
        )
    )
    return path


async def test_walk_through_send_pull_status_verify(stack: Stack, tmp_path: Path) -> None:
    sent = await deskbridge(
        stack,
        "notice", "send", "--as", "kr-desk", "--to", "kh-cnp,interpol-ncb-phnom-penh",
        "--type", "kidnapping_confinement", "--priority", "flash", "--tlp", "amber",
        "--case-ref", "KD-2025-0331", "--file", str(_notice_file(tmp_path)),
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output
    notice_id = re.search(r"accepted ([0-9a-f-]{36})", sent.output)
    assert notice_id, sent.output

    async def delivered() -> bool:
        status = await deskbridge(stack, "notice", "status", notice_id.group(1), "--as", "kr-desk")
        return status.exit_code == 0 and status.output.count("delivered") == 2

    await eventually(delivered)
    pulled = await deskbridge(stack, "inbox", "pull", "--as", "kh-cnp", "--json")
    assert pulled.exit_code == 0, pulled.output
    [opened] = [json.loads(line) for line in pulled.output.splitlines()]
    assert opened["notice_id"] == notice_id.group(1) and opened["sender"] == "kr-desk"
    assert opened["subjects"][0]["name_hangul"] == "이지우"

    again = await deskbridge(stack, "inbox", "pull", "--as", "kh-cnp")
    assert again.exit_code == 0 and "0 notice(s) opened" in again.output
    status = await deskbridge(stack, "notice", "status", notice_id.group(1), "--as", "kr-desk")
    assert re.search(r"kh-cnp\s+acknowledged", status.output), status.output
    assert re.search(r"interpol-ncb-phnom-penh\s+delivered", status.output), status.output

    async def verified() -> Result | None:
        result = await deskbridge(stack, "audit", "verify", "--as", "auditor")
        return result if result.exit_code == 0 and "audit log intact" in result.output else None

    assert await eventually(verified)


async def test_admin_enrols_a_new_agency_that_then_receives(stack: Stack, tmp_path: Path) -> None:
    added = await deskbridge(stack, "agency", "add", "europol", "--name", "Europol", "--as", "admin")
    assert added.exit_code == 0, added.output
    keys = await deskbridge(stack, "keys", "generate", "europol", "--register", "--as", "admin")
    assert keys.exit_code == 0 and keys.output.count("registered") == 2, keys.output
    assert oct((stack.home / "europol" / "keys.jwks.json").stat().st_mode & 0o777) == "0o600"
    issued = await deskbridge(stack, "credential", "issue", "--role", "agency", "--agency", "europol")
    assert issued.exit_code == 0, issued.output
    # Europol pins the directory key after the desk reads its kid out to them by phone.
    desk_said = load_directory_key(stack.home / "kr-desk" / DIRECTORY_KEY_FILE).kid
    wrong = await deskbridge(stack, "directory", "pin", "--as", "europol", "--kid", "A" * 43)
    assert wrong.exit_code == 1 and "not pinned" in wrong.output
    pinned = await deskbridge(stack, "directory", "pin", "--as", "europol", "--kid", desk_said)
    assert pinned.exit_code == 0, pinned.output
    shown = await deskbridge(stack, "directory", "show", "--as", "europol")
    assert shown.exit_code == 0 and f"by the pinned key {desk_said}" in shown.output, shown.output
    sent = await deskbridge(
        stack,
        "notice", "send", "--as", "kr-desk", "--to", "europol", "--type", "intel_report",
        "--priority", "routine", "--tlp", "green", "--case-ref", "KD-2025-0400",
        "--file", str(_notice_file(tmp_path)),
    )  # fmt: skip
    assert sent.exit_code == 0, sent.output

    async def pulled() -> Result | None:
        result = await deskbridge(stack, "inbox", "pull", "--as", "europol")
        return result if "1 notice(s) opened" in result.output else None

    result = await eventually(pulled)
    assert "signature verified: kr-desk" in result.output


async def test_failures_are_one_clear_line_and_a_nonzero_exit(stack: Stack, tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("{not json")
    common = [
        "--type",
        "intel_report",
        "--priority",
        "routine",
        "--tlp",
        "green",
        "--case-ref",
        "KD-2025-0001",
    ]
    notice = str(_notice_file(tmp_path))
    cases = [
        (["notice", "send", "--as", "kr-desk", "--to", "nobody", *common, "--file", notice],
         "unknown recipient agency: nobody"),
        (["notice", "send", "--as", "kr-desk", "--to", "kh-cnp", *common, "--file", str(bad_json)],
         "is not valid JSON"),
        (["notice", "send", "--as", "kr-desk", "--to", "kh-cnp", *common[:-1], "bad ref",
          "--file", notice], "case_ref"),
        (["inbox", "pull", "--as", "no-such-profile"], "no key file"),
        (["notice", "status", "00000000-0000-0000-0000-000000000000", "--as", "nobody"], "no credential"),
        (["notice", "status", "00000000-0000-0000-0000-000000000000", "--as", "kr-desk"], "404"),
        # A shortened id is refused in words before any request, with the code the server would give.
        (["notice", "status", "6f1c...", "--as", "kr-desk"],
         "'6f1c...' is not a notice id: ids are full UUIDs"),
        (["notice", "recall", "6f1c2d3e", "--as", "kr-desk"], "prints them) [invalid_request]"),
        (["notice", "send", "--as", "kh-cnp", "--to", "kr-desk", *common, "--in-reply-to", "6f1c...",
          "--file", notice], "--in-reply-to '6f1c...' is not a notice id"),
        (["case", "show", "KD/../x", "--as", "kr-desk"], "'KD/../x' is not a case ref"),
        (["audit", "verify", "--as", "kh-cnp"], "403"),
        (["keys", "generate", "kh-cnp"], "already holds keys"),
    ]  # fmt: skip
    for argv, expected in cases:
        result = await deskbridge(stack, *argv)
        assert result.exit_code == 1, (argv, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (
            argv,
            result.output,
        )
    unreachable = await asyncio.to_thread(
        CliRunner().invoke,
        app,
        ["inbox", "pull", "--as", "kh-cnp", "--home", str(stack.home), "--server", "http://127.0.0.1:9"],
    )
    assert unreachable.exit_code == 1 and "cannot reach" in unreachable.output


def test_a_reader_that_leaves_early_ends_the_command_quietly() -> None:
    """`deskbridge evidence verify ... | head -1`: once the reader is gone the command stops with the
    shell's SIGPIPE status, printing neither a traceback nor an error about the pipe."""
    fixtures = Path(__file__).resolve().parents[2] / "console" / "test" / "fixtures"
    command = [
        str(Path(sys.executable).parent / "deskbridge"),
        "evidence",
        "verify",
        str(fixtures / "evidence.json"),
        "--log-key",
        str(fixtures / "evidence.vkey"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader leaves before the first line
    errors = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141, errors
    assert "Traceback" not in errors and "Broken pipe" not in errors, errors
