"""Evidence bundles: `GET /v1/audit/evidence/{notice_id}` and `deskbridge evidence export | verify` on a
real stack (Kafka, PostgreSQL, HTTP) for a notice sent to two agencies, acknowledged by both, replied to
and witnessed, with each kind of tampering named by the offline verifier; and the bundle committed for
the console's TypeScript verifier (console/test/fixtures/), checked by this one to the same report."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from schemas.audit import EvidenceBundle
from services.cli.main import app
from services.envelope.keys import AgencyKeys, SigningKey
from services.envelope.receipts import make_receipt
from services.evidence.checks import check_evidence
from services.transparency.note import NoteVerifier, parse_vkey
from services.transparency.note import vkey as vkey_text
from tests.conftest import Stack, eventually, receipt
from tests.support.sealing import notice_body, seal

FIXTURES = Path(__file__).resolve().parents[2] / "console" / "test" / "fixtures"
# Regenerate the console's fixture from a fresh run: DESKBRIDGE_WRITE_EVIDENCE_FIXTURE=1 pytest -k journey
WRITE_FIXTURE = "DESKBRIDGE_WRITE_EVIDENCE_FIXTURE"
# No checkpoint but those the test asks for, and no auditor.query entries in the way.
QUIET = {"checkpoint_interval_s": 3600, "audit_query_window_s": 3600}
RECIPIENTS = ["kh-cnp", "interpol-ncb-phnom-penh"]
JOURNEY = sorted(
    ["notice.submitted", "notice.replied"]
    + ["notice.delivered", "notice.fetched", "notice.acknowledged"] * len(RECIPIENTS)
)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(app, ["evidence", *args])


async def _journey(stack: Stack) -> str:
    """A flash notice from the desk to two partners; both acknowledge it, kh-cnp replies."""
    body = notice_body(RECIPIENTS)
    response = await stack.client("kr-desk").post("/v1/notices", json=body)
    assert response.status_code == 202, response.text
    notice_id = str(body["notice_id"])
    for agency in RECIPIENTS:
        partner = stack.client(agency)

        async def inbox(partner: Any = partner) -> list[dict[str, Any]]:
            return list((await partner.get("/v1/inbox")).json()["items"])

        await eventually(inbox)
        ack = await partner.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, agency, notice_id))
        assert ack.status_code == 200, ack.text
    kh_cnp = AgencyKeys.load(stack.home / "kh-cnp")
    _, reply = seal(stack, kh_cnp, ["kr-desk"], in_reply_to=notice_id, summary="Received; team dispatched.")
    posted = await stack.client("kh-cnp").post(
        "/v1/envelopes", content=reply, headers={"Content-Type": "application/json"}
    )
    assert posted.status_code == 202, posted.text

    async def logged() -> bool:
        params = {"notice_id": notice_id, "limit": 1000}
        page = (await stack.client("auditor", audit=True).get("/v1/audit/events", params=params)).json()
        return sorted(e["event_type"] for e in page["entries"]) == JOURNEY

    await eventually(logged, within=60)
    return notice_id


def _report(bundle: dict[str, Any], vkey: str) -> list[dict[str, Any]]:
    log = parse_vkey(vkey)
    assert isinstance(log, NoteVerifier)
    checks = check_evidence(EvidenceBundle.model_validate(bundle), log)
    return [{"check": c.check, "ok": c.ok, "detail": c.detail} for c in checks]


def _failed(bundle: dict[str, Any], vkey: str) -> set[str]:
    return {c["check"] for c in _report(bundle, vkey) if not c["ok"]}


def _other_hex(h: str, at: int = 0) -> str:
    return h[:at] + ("1" if h[at] == "0" else "0") + h[at + 1 :]


def _other_signature(note: str, name: str) -> str:
    """The note with one byte of `name`'s signature changed (past its key ID and any timestamp)."""
    prefix = f"\u2014 {name} "
    lines = note.split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    at = len(prefix) + 40
    lines[i] = lines[i][:at] + ("B" if lines[i][at] == "A" else "A") + lines[i][at + 1 :]
    return "\n".join(lines)


def _label(bundle: dict[str, Any], i: int) -> str:
    event = bundle["events"][i]
    return f"event {i} ({event['record']['event_type']}, leaf {event['index']})"


def _receipt_of(bundle: dict[str, Any], agency: str) -> dict[str, Any]:
    return next(r for r in bundle["receipts"] if r["agency"] == agency)


def _key_of(bundle: dict[str, Any], agency: str) -> dict[str, Any]:
    return next(k for k in bundle["directory"]["keys"] if k["agency"] == agency)


def _resigned(home: Path) -> Callable[[dict[str, Any]], None]:
    """kh-cnp's receipt swapped for another it really signed over the same notice: a valid signature,
    but not the receipt the log holds the hash of."""

    def change(b: dict[str, Any]) -> None:
        signer = AgencyKeys.load(home / "kh-cnp").signer()
        later = datetime.now(UTC) + timedelta(hours=1)
        token = make_receipt(signer, b["notice_id"], b["envelope_sha256"], later)
        _receipt_of(b, "kh-cnp")["receipt"] = token

    return change


def _tamperings(
    home: Path,
) -> list[tuple[str, Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], set[str]]]]:
    """(what, how to tamper a bundle, the checks that must fail: exactly these)."""

    def proof(b: dict[str, Any]) -> None:
        b["events"][3]["inclusion_proof"][0] = _other_hex(b["events"][3]["inclusion_proof"][0])

    def record(b: dict[str, Any]) -> None:
        b["events"][1]["record"]["actor"] = "someone-else"

    def receipt_bytes(b: dict[str, Any]) -> None:
        token = _receipt_of(b, "kh-cnp")["receipt"]
        at = token.rindex(".") + 20
        _receipt_of(b, "kh-cnp")["receipt"] = (
            token[:at] + ("B" if token[at] == "A" else "A") + token[at + 1 :]
        )

    def log_signature(b: dict[str, Any]) -> None:
        b["checkpoint"] = _other_signature(b["checkpoint"], b["origin"])

    def cosignature(b: dict[str, Any]) -> None:
        b["checkpoint"] = _other_signature(b["checkpoint"], "kh-cnp")

    def foreign_event(b: dict[str, Any]) -> None:
        # A real leaf, in its place in log order, but about no notice.
        b["events"] = sorted([*b["events"], b["directory"]["events"][0]], key=lambda e: e["index"])

    def foreign(b: dict[str, Any]) -> set[str]:
        i = next(i for i, e in enumerate(b["events"]) if e["record"]["notice_id"] is None)
        return {f"{_label(b, i)}: this notice"}

    return [
        ("a proof hash", proof, lambda b: {f"{_label(b, 3)}: inclusion proof"}),
        (
            "a record field",
            record,
            lambda b: {f"{_label(b, 1)}: leaf hash", f"{_label(b, 1)}: inclusion proof"},
        ),
        (
            "a receipt's bytes",
            receipt_bytes,
            lambda b: {"receipt of kh-cnp: logged", "receipt of kh-cnp: signature"},
        ),
        ("a receipt signed again", _resigned(home), lambda b: {"receipt of kh-cnp: logged"}),
        ("the checkpoint signature", log_signature, lambda b: {"checkpoint signature"}),
        ("a cosignature", cosignature, lambda b: {"cosignature of kh-cnp"}),
        ("an event of no notice", foreign_event, foreign),
    ]


@pytest.mark.settings(**QUIET)
async def test_a_journey_exports_as_evidence_that_verifies_offline_and_names_each_tampering(
    stack: Stack, tmp_path: Path
) -> None:
    notice_id = await _journey(stack)
    url = f"/v1/audit/evidence/{notice_id}"
    # Auditors only.
    assert (await stack.client(None, audit=True).get(url)).status_code == 401
    refused = await stack.client("kh-cnp", audit=True).get(url)
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    unknown = await stack.client("auditor", audit=True).get(f"/v1/audit/evidence/{uuid.uuid4()}")
    assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_notice", unknown.text

    # No checkpoint covers the journey yet: the export signs one on the spot, as an auditor's POST would.
    response = await stack.client("auditor", audit=True).get(url)
    assert response.status_code == 200, response.text
    bundle = EvidenceBundle.model_validate(response.json())
    assert sorted(e.record.event_type for e in bundle.events) == JOURNEY
    assert bundle.tree_size > max(e.index for e in bundle.events)
    assert "\u2014 kh-cnp " not in bundle.checkpoint
    assert {r.agency for r in bundle.receipts} == set(RECIPIENTS)
    senders = {k.agency for k in bundle.directory.keys}
    assert senders == {"kr-desk", *RECIPIENTS}
    assert {e.record.details["kid"] for e in bundle.directory.events} == {
        k.kid for k in bundle.directory.keys
    }

    # kh-cnp witnesses that checkpoint; the auditor exports against it, with the CLI.
    home = str(stack.home)
    witness = ["audit", "witness", "--as", "kh-cnp", "--home", home, "--audit-server", stack.audit_url]
    result = await asyncio.to_thread(CliRunner().invoke, app, witness)
    assert result.exit_code == 0, result.output
    out = tmp_path / "evidence.json"
    export = ["export", notice_id, "--as", "auditor", "--out", str(out), "--home", home]
    size = ["--checkpoint-size", str(bundle.tree_size), "--audit-server", stack.audit_url]
    result = await asyncio.to_thread(_cli, *export, *size)
    assert result.exit_code == 0, result.output
    assert f"wrote the evidence of notice {notice_id}" in result.output
    exported = json.loads(out.read_text())
    assert exported["tree_size"] == bundle.tree_size and "\u2014 kh-cnp " in exported["checkpoint"]

    # Offline, with nothing but the log's public key.
    vkey_file = stack.home / "auditor" / "audit-log.vkey"
    offline = ["--log-key", str(vkey_file), "--home", str(tmp_path / "nobody")]
    result = await asyncio.to_thread(_cli, "verify", str(out), *offline)
    assert result.exit_code == 0, result.output
    for line in (
        f"ok   checkpoint {bundle.tree_size} is signed by the pinned log key",
        "ok   cosignature of kh-cnp verifies with key",
        "ok   receipt of kh-cnp: signature verifies with key",
        "ok   receipt of interpol-ncb-phnom-penh: its hash is the one logged at leaf",
        "ok   kr-desk sent it (leaf",
        f"evidence of notice {notice_id} verified",
    ):
        assert line in result.output, result.output

    for what, tamper, expected in _tamperings(stack.home):
        changed = copy.deepcopy(exported)
        tamper(changed)
        path = tmp_path / "tampered.json"
        path.write_text(json.dumps(changed))
        result = await asyncio.to_thread(_cli, "verify", str(path), *offline)
        assert result.exit_code == 1, (what, result.output)
        assert "the evidence does NOT verify" in result.output, (what, result.output)
        assert _failed(changed, vkey_file.read_text().strip()) == expected(changed), what
    # A pinned log key other than the one that signed.
    other = tmp_path / "other.vkey"
    other.write_text(vkey_text(bundle.origin, SigningKey.generate("other").public()) + "\n")
    result = await asyncio.to_thread(_cli, "verify", str(out), "--log-key", str(other))
    assert result.exit_code == 1
    assert "FAIL checkpoint signature does not verify with the pinned log key" in result.output

    if os.environ.get(WRITE_FIXTURE):
        (FIXTURES / "evidence.json").write_text(json.dumps(exported, indent=2, ensure_ascii=False) + "\n")
        (FIXTURES / "evidence.vkey").write_text(vkey_file.read_text())
        report = _report(exported, vkey_file.read_text().strip())
        (FIXTURES / "evidence.report.json").write_text(json.dumps(report, indent=2) + "\n")


def test_the_console_fixture_verifies_here_with_the_committed_report() -> None:
    """The bundle the console's verifier is tested with passes this verifier, check for check, sentence
    for sentence: console/test/evidence.test.ts expects the same report."""
    bundle = json.loads((FIXTURES / "evidence.json").read_text())
    vkey = (FIXTURES / "evidence.vkey").read_text().strip()
    report = _report(bundle, vkey)
    assert all(c["ok"] for c in report), [c for c in report if not c["ok"]]
    assert report == json.loads((FIXTURES / "evidence.report.json").read_text())
