"""The hash-chained, append-only audit log: the chain check, the database's refusal to rewrite history,
and the log the running system keeps (real Kafka, PostgreSQL and HTTP)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import exc, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer.testing import CliRunner, Result

from schemas.audit import AuditRecord
from schemas.events import Event, EventType
from services.cli.main import app
from services.delivery.models import NoticeRow
from services.platform.database import make_sessionmaker
from services.transparency import service as audit_log
from services.transparency import storage
from services.transparency.entries import (
    GENESIS_HASH,
    ROW,
    ChainBreak,
    chained,
    entry_hash,
    leaf_data,
    record_leaf_hash,
    stored_leaf_hash,
    verify_chain,
)
from services.transparency.models import AuditEntry
from services.transparency.service import append, to_record
from tests.conftest import Stack, eventually, receipt
from tests.support.sealing import notice_body

ALTERED = "content does not match its hash (altered entry)"
UNLINKED = "does not link to the previous entry's hash"
ENROLMENT = {"agency.registered": 4, "key.registered": 8, "credential.issued": 6}  # demo bootstrap


# ---- the chain check, pure -------------------------------------------------------------------------


def _sealed(record: AuditRecord) -> AuditRecord:
    return record.model_copy(update={"entry_hash": entry_hash(record)})


def _chain(length: int, prev: str = GENESIS_HASH) -> list[AuditRecord]:
    """Entries hashed and linked the way auditlog.append does it."""
    records = []
    for seq in range(1, length + 1):
        record = _sealed(
            AuditRecord(
                seq=seq,
                event_id=f"event-{seq}",
                event_type="notice.delivered",
                occurred_at=(datetime(2025, 3, 31, 9, tzinfo=UTC) + timedelta(seconds=seq)).isoformat(),
                recorded_at=datetime(2025, 3, 31, 10, tzinfo=UTC).isoformat(),
                actor="ingest",
                agency="kh-cnp",
                notice_id=str(uuid.UUID(int=seq)),
                case_ref="KD-2025-0331",
                envelope_sha256=f"{seq:064x}",
                details={"record": f"notices:0:{seq}", "retries": seq, "late": False, "note": None},
                prev_hash=prev,
                entry_hash=GENESIS_HASH,
            )
        )
        records.append(record)
        prev = record.entry_hash
    return records


def test_an_intact_chain_has_no_breaks() -> None:
    chain = _chain(5)
    assert verify_chain(chain) == []
    assert verify_chain([]) == []
    # A later segment checks against the hash and seq it continues from.
    assert verify_chain(chain[2:], start_hash=chain[1].entry_hash, start_seq=3) == []
    assert verify_chain(chain[2:]) == [
        ChainBreak(3, "expected entry 1, found 3"),
        ChainBreak(3, UNLINKED),
    ]


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "kh-cnp"},
        {"details": {"record": "notices:0:3", "retries": 0, "late": False, "note": None}},
        {"details": {"record": "notices:0:3", "retries": 3, "late": False, "note": None, "x": "y"}},
        {"envelope_sha256": "f" * 64},
        {"occurred_at": datetime(2025, 3, 30, 9, tzinfo=UTC).isoformat()},
        {"agency": None},
        {"event_type": "notice.acknowledged"},
    ],
    ids=lambda change: ",".join(change),
)
def test_an_altered_field_is_named_as_altered(change: dict[str, Any]) -> None:
    chain = _chain(5)
    chain[2] = chain[2].model_copy(update=change)
    assert verify_chain(chain) == [ChainBreak(3, ALTERED)]


def test_an_altered_entry_with_its_hash_recomputed_breaks_the_next_link() -> None:
    chain = _chain(5)
    chain[2] = _sealed(chain[2].model_copy(update={"actor": "someone-else"}))
    assert verify_chain(chain) == [ChainBreak(4, UNLINKED)]


def test_a_removed_middle_entry_is_a_gap() -> None:
    chain = _chain(5)
    del chain[2]
    assert verify_chain(chain) == [ChainBreak(4, "expected entry 3, found 4"), ChainBreak(4, UNLINKED)]


def test_swapped_entries_are_reported() -> None:
    chain = _chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    assert verify_chain(chain) == [
        ChainBreak(3, "expected entry 2, found 3"),
        ChainBreak(3, UNLINKED),
        ChainBreak(2, "expected entry 4, found 2"),
        ChainBreak(2, UNLINKED),
        # In the order served, entry 4 follows entry 2, whose hash it does not carry.
        ChainBreak(4, "expected entry 3, found 4"),
        ChainBreak(4, UNLINKED),
    ]


def test_a_forged_entry_with_a_wrong_prev_hash_does_not_link() -> None:
    chain = _chain(4)
    forged = _sealed(chain[-1].model_copy(update={"seq": 5, "event_id": "forged", "prev_hash": "a" * 64}))
    assert verify_chain([*chain, forged]) == [ChainBreak(5, UNLINKED)]


def test_a_truncated_tail_is_invisible_to_the_chain_alone() -> None:
    # Why `audit verify` also compares the last entry with the server's head (see the CLI tests below).
    assert verify_chain(_chain(5)[:3]) == []


# ---- event details: values RFC 8785 canonical JSON can write ------------------------------------------

SAFE = 2**53 - 1


def test_event_details_are_values_rfc8785_can_write() -> None:
    """No float ever reaches a record (1.0 is read as the integer 1, 1.5 refused), and an integer beyond
    +-(2**53 - 1), which the RFC 8785 library refuses, is refused where the event is made or read."""
    assert _event(1, details={"n": 1.0}).details == {"n": 1}
    assert _event(1, details={"n": SAFE, "m": -SAFE}).details == {"n": SAFE, "m": -SAFE}
    for value in (1.5, SAFE + 1, -SAFE - 1, 2**64):
        with pytest.raises(ValidationError):
            _event(1, details={"n": value})
    read = _event(1).model_dump(mode="json")
    with pytest.raises(ValidationError):
        Event.model_validate_json(json.dumps({**read, "details": {"n": SAFE + 1}}))
    with pytest.raises(ValidationError):
        AuditRecord.model_validate({**_chain(1)[0].model_dump(), "details": {"n": SAFE + 1}})


# ---- a record's canonical JSON: RFC 8785, and the very bytes it had before --------------------------

TEXT = st.text(max_size=12)
HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)
RECORDS = st.builds(
    AuditRecord,
    seq=st.integers(1, SAFE),
    event_id=TEXT,
    event_type=TEXT,
    occurred_at=TEXT,
    recorded_at=TEXT,
    actor=TEXT,
    agency=st.none() | TEXT,
    notice_id=st.none() | TEXT,
    case_ref=st.none() | TEXT,
    envelope_sha256=st.none() | HEX,
    details=st.dictionaries(TEXT, st.none() | st.booleans() | st.integers(-SAFE, SAFE) | TEXT, max_size=6),
    prev_hash=HEX,
    entry_hash=HEX,
)


def _old_form(value: dict[str, Any]) -> bytes:
    """The canonical JSON the log hashed before it was RFC 8785."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@settings(max_examples=300, deadline=None, database=None)
@given(RECORDS)
def test_records_hash_as_they_did_before_rfc8785(record: AuditRecord) -> None:
    """Logs written before still verify: for everything a record holds (text, integers within
    +-(2**53 - 1), booleans, null; never a float) RFC 8785 writes the bytes Python's sorted json.dumps
    wrote. The one exception, detail names ordered differently by UTF-16 code unit than by code point
    (U+E000..U+FFFF against U+10000 and up), never occurs: deskbridge's detail names are ASCII words."""
    assume(sorted(record.details) == sorted(record.details, key=lambda name: name.encode("utf-16-be")))
    assert leaf_data(record) == _old_form(record.model_dump(exclude={"prev_hash", "entry_hash"}))
    assert (
        entry_hash(record) == hashlib.sha256(_old_form(record.model_dump(exclude={"entry_hash"}))).hexdigest()
    )


# Detail names from an alphabet that straddles U+FFFF, where code point and UTF-16 order part ways.
STRADDLING = st.text(alphabet="a\ue000\uffff\U00010000\U0010ffff", max_size=3)


@settings(max_examples=500, deadline=None, database=None)
@given(
    RECORDS
    | RECORDS.map(lambda r: r.model_copy(update={"details": {}})).flatmap(
        lambda r: st.dictionaries(STRADDLING, st.integers(-9, 9), max_size=4).map(
            lambda names: r.model_copy(update={"details": names})
        )
    )
)
def test_a_records_bytes_are_what_rfc8785_writes(record: AuditRecord) -> None:
    """The log writes records through Python's C encoder where RFC 8785 writes the same bytes: never
    anything else, detail names beyond the BMP included (those take the rfc8785 package's path)."""
    assert leaf_data(record) == rfc8785.dumps(record.model_dump(exclude={"prev_hash", "entry_hash"}))
    jcs_entry = rfc8785.dumps(record.model_dump(exclude={"entry_hash"}))
    assert entry_hash(record) == hashlib.sha256(jcs_entry).hexdigest()


# Detail names that are the record's own field names, where a careless reading of its JSON would look.
FIELD_NAMES = st.sampled_from(["recorded_at", "prev_hash", "seq", "details", "a"]) | TEXT


@settings(max_examples=500, deadline=None, database=None)
@given(
    RECORDS
    | RECORDS.flatmap(
        lambda r: st.dictionaries(FIELD_NAMES | STRADDLING, st.none() | TEXT, max_size=5).map(
            lambda names: r.model_copy(update={"details": names})
        )
    )
)
def test_append_hashes_a_record_as_the_record_hashes(record: AuditRecord) -> None:
    """append hashes each entry from its fields with one canonical encoding (entries.chained): the same
    entry hash and leaf hash as the record's own, whatever its details are called or hold; and its row
    is the record's columns, as stored."""
    entry, leaf, row = chained(**record.model_dump(exclude={"entry_hash"}))
    assert (entry, leaf) == (entry_hash(record), record_leaf_hash(record))
    stored = {**record.model_dump(), "entry_hash": entry, "details": rfc8785.dumps(record.details).decode()}
    assert json.loads(row) == [stored[name] for name in ROW]  # the details as canonical JSON
    # Read back as those columns, the entry gives the same leaf (the start-up and checkpoint check).
    assert stored_leaf_hash(json.loads(row)) == leaf


def test_a_stored_entry_whose_details_are_not_a_json_object_has_no_leaf() -> None:
    [record] = _chain(1)
    columns = [{**record.model_dump(), "details": "{}"}[name] for name in ROW]
    assert stored_leaf_hash(columns) == record_leaf_hash(record.model_copy(update={"details": {}}))
    for details, error in (("[1]", TypeError), ('{"a": ', ValueError), ("7", TypeError)):
        with pytest.raises(error):
            stored_leaf_hash([*columns[:10], details, *columns[11:]])


def test_a_record_past_what_rfc8785_can_write_is_refused_not_written_otherwise() -> None:
    [record] = _chain(1)
    with pytest.raises(ValueError):
        leaf_data(record.model_copy(update={"seq": 2**53}))


# ---- append and the append-only table, on SQLite and PostgreSQL -------------------------------------


def _event(n: int, **overrides: Any) -> Event:
    fields: dict[str, Any] = {
        "event_id": f"e-{n}",
        "type": EventType.notice_delivered,
        "occurred_at": datetime(2025, 3, 31, 9, n, tzinfo=timezone(timedelta(hours=9))),
        "actor": "ingest",
        "agency": "kh-cnp",
        "notice_id": uuid.UUID(int=n),
        "case_ref": "KD-2025-0331",
        "envelope_sha256": f"{n:064x}",
        "details": {"n": n, "ok": True},
    }
    return Event(**{**fields, **overrides})


async def _rows(engine: AsyncEngine) -> list[AuditEntry]:
    async with make_sessionmaker(engine)() as session:
        return list((await session.execute(select(AuditEntry).order_by(AuditEntry.seq))).scalars())


async def _append(engine: AsyncEngine, events: Sequence[Event]) -> int:
    async with make_sessionmaker(engine)() as session:
        growth = await append(session, events)
        await session.commit()
        return growth.added


async def test_append_links_contiguous_entries_once_per_event(engine: AsyncEngine) -> None:
    async with make_sessionmaker(engine)() as session:
        assert await audit_log.head(session) == (0, GENESIS_HASH)
    assert await _append(engine, [_event(1), _event(2), _event(3)]) == 3
    assert await _append(engine, [_event(1), _event(2), _event(3)]) == 0
    assert await _append(engine, []) == 0
    # A mix adds only the new ones, in the order given; a repeat inside one batch counts once.
    assert await _append(engine, [_event(2), _event(5), _event(1), _event(4), _event(5)]) == 2

    records = [to_record(r) for r in await _rows(engine)]
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert [r.event_id for r in records] == ["e-1", "e-2", "e-3", "e-5", "e-4"]
    assert records[0].prev_hash == GENESIS_HASH
    assert all(b.prev_hash == a.entry_hash for a, b in zip(records, records[1:], strict=False))
    assert verify_chain(records) == []
    async with make_sessionmaker(engine)() as session:
        assert await audit_log.head(session) == (5, records[-1].entry_hash)
        assert await audit_log.count(session) == 5
    # What was hashed is what is stored: times in UTC as text, details as given.
    first = records[0]
    assert first.occurred_at == "2025-03-31T00:01:00+00:00"
    assert first.details == {"n": 1, "ok": True}
    assert first.notice_id == str(uuid.UUID(int=1)) and first.event_type == "notice.delivered"


async def test_the_database_refuses_to_rewrite_the_log(engine: AsyncEngine) -> None:
    await _append(engine, [_event(n) for n in range(1, 4)])
    before = [to_record(r) for r in await _rows(engine)]
    statements = [
        "UPDATE audit_log SET details = '{}' WHERE seq = 2",
        "UPDATE audit_log SET actor = actor",
        "DELETE FROM audit_log WHERE seq = 3",
        "DELETE FROM audit_log",
    ]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")
    for statement in statements:
        with pytest.raises(exc.DBAPIError, match="append-only") as refused:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
        assert "refused" in str(refused.value), statement
    assert [to_record(r) for r in await _rows(engine)] == before
    # Appending still works after the refusals.
    assert await _append(engine, [_event(4)]) == 1
    assert verify_chain([to_record(r) for r in await _rows(engine)]) == []


async def _bypass_triggers_and_update(connection: Any, dialect: str, assignment: str, seq: int) -> None:
    if dialect == "postgresql":
        await connection.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await connection.execute(text(f"UPDATE audit_log SET {assignment} WHERE seq = {seq}"))  # noqa: S608
        await connection.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    else:
        await connection.execute(text("DROP TRIGGER audit_log_no_update"))
        await connection.execute(text(f"UPDATE audit_log SET {assignment} WHERE seq = {seq}"))  # noqa: S608


async def test_tampering_past_the_triggers_is_caught_by_the_chain(engine: AsyncEngine) -> None:
    await _append(engine, [_event(n) for n in range(1, 6)])
    async with engine.begin() as connection:
        await _bypass_triggers_and_update(
            connection, engine.dialect.name, """details = '{"n": 3, "ok": false}'""", 3
        )
    records = [to_record(r) for r in await _rows(engine)]
    assert records[2].details == {"n": 3, "ok": False}
    assert verify_chain(records) == [ChainBreak(3, ALTERED)]


# ---- the running system ------------------------------------------------------------------------------


async def _entries(stack: Stack, **params: Any) -> list[dict[str, Any]]:
    """Every entry the audit API serves for these filters, page by page."""
    auditor = stack.client("auditor", audit=True)
    entries: list[dict[str, Any]] = []
    after = 0
    while True:
        response = await auditor.get("/v1/audit/events", params={**params, "after": after})
        assert response.status_code == 200, response.text
        page = response.json()
        entries += page["entries"]
        if page["next_after"] is None:
            return entries
        after = page["next_after"]


async def _types(stack: Stack, **params: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in await _entries(stack, **params):
        if entry["event_type"] != "auditor.query":  # reads are audited too (test_tree.py)
            counts[entry["event_type"]] = counts.get(entry["event_type"], 0) + 1
    return counts


async def _enrolled(stack: Stack) -> bool:
    return await _types(stack) == ENROLMENT


async def test_a_notice_journey_is_audited_without_its_contents(stack: Stack) -> None:
    body = notice_body(["kh-cnp"])
    response = await stack.client("kr-desk").post("/v1/notices", json=body)
    assert response.status_code == 202, response.text
    notice_id = response.json()["notice_id"]
    partner = stack.client("kh-cnp")

    async def inbox() -> list[dict[str, Any]]:
        return list((await partner.get("/v1/inbox")).json()["items"])

    [item] = await eventually(inbox)
    assert item["notice_id"] == notice_id
    assert (
        await partner.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, "kh-cnp", notice_id))
    ).status_code == 200

    journey = ["notice.submitted", "notice.delivered", "notice.fetched", "notice.acknowledged"]

    async def audited() -> list[dict[str, Any]]:
        entries = await _entries(stack, notice_id=notice_id)
        return entries if sorted(e["event_type"] for e in entries) == sorted(journey) else []

    entries = {e["event_type"]: e for e in await eventually(audited)}
    submitted = entries["notice.submitted"]
    assert submitted["details"]["outer_signature"] == "valid"
    assert submitted["actor"] == submitted["agency"] == "kr-desk"
    assert submitted["details"]["recipients"] == "kh-cnp"
    for kind in journey:
        assert entries[kind]["case_ref"] == body["case_ref"] and entries[kind]["notice_id"] == notice_id
    # Every step names the same sealed envelope by its hash.
    assert len({entries[kind]["envelope_sha256"] for kind in journey}) == 1
    assert entries["notice.delivered"]["agency"] == entries["notice.acknowledged"]["agency"] == "kh-cnp"
    assert entries["notice.fetched"]["actor"] == "kh-cnp"
    await eventually(lambda: _has_enrolment(stack))

    # The whole served log chains, and nothing in it, nor in the table, carries notice content.
    everything = await _entries(stack)
    assert verify_chain([AuditRecord.model_validate(e) for e in everything]) == []
    served = json.dumps(everything, ensure_ascii=False)
    async with stack.sessions() as session:
        rows = (await session.execute(text("SELECT * FROM audit_log"))).all()
    stored = json.dumps([[str(v) for v in row] for row in rows], ensure_ascii=False)
    assert len(rows) == len(everything)
    subject = body["subjects"][0]
    for secret in (body["summary"], subject["name_latin"], subject["name_hangul"], "Sihanoukville"):
        for haystack in (served, stored):
            assert secret not in haystack
            assert secret.lower() not in haystack.lower()


async def _has_enrolment(stack: Stack) -> bool:
    counts = await _types(stack)
    return all(counts.get(kind) == n for kind, n in ENROLMENT.items())


async def test_the_audit_api_is_for_auditors_and_filters_and_pages(stack: Stack) -> None:
    await eventually(lambda: _enrolled(stack))
    url = "/v1/audit/events"
    anonymous = await stack.client(None, audit=True).get(url)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    forged = httpx.AsyncClient(base_url=stack.audit_url, headers={"Authorization": "Bearer dbk_x_y"})
    try:
        assert (await forged.get(url)).status_code == 401
    finally:
        await forged.aclose()
    for agency in ("kh-cnp", "kr-desk", "admin"):
        response = await stack.client(agency, audit=True).get(url)
        assert response.status_code == 403, (agency, response.text)
        assert "auditor" in response.json()["detail"]

    everything = await _entries(stack)
    assert [e["seq"] for e in everything] == list(range(1, 19))
    by_type = await _entries(stack, type="credential.issued")
    assert len(by_type) == 6 and {e["event_type"] for e in by_type} == {"credential.issued"}
    assert sorted(e["details"]["role"] for e in by_type) == [
        "admin",
        "agency",
        "agency",
        "agency",
        "agency",
        "auditor",
    ]
    by_agency = await _entries(stack, agency="kh-cnp")
    assert {e["agency"] for e in by_agency} == {"kh-cnp"}
    assert sorted(e["event_type"] for e in by_agency) == [
        "agency.registered",
        "credential.issued",
        "key.registered",
        "key.registered",
    ]
    both = await _entries(stack, agency="kh-cnp", type="key.registered")
    assert [e["seq"] for e in both] == [e["seq"] for e in by_agency if e["event_type"] == "key.registered"]
    assert await _entries(stack, agency="no-such-agency") == []

    # Paging: small pages return every entry exactly once, in order, and the head is the log's end.
    auditor = stack.client("auditor", audit=True)
    seen: list[int] = []
    after, pages = 0, 0
    while True:
        page = (await auditor.get(url, params={"after": after, "limit": 5})).json()
        pages += 1
        seen += [e["seq"] for e in page["entries"]]
        assert page["head_seq"] == 18 and page["head_hash"] == everything[-1]["entry_hash"]
        if page["next_after"] is None:
            break
        assert page["next_after"] == page["entries"][-1]["seq"]
        after = page["next_after"]
    assert seen == list(range(1, 19)) and pages == 4
    assert (await auditor.get(url, params={"after": 18})).json()["entries"] == []
    for bad in ({"limit": 0}, {"limit": 1001}, {"after": -1}):
        assert (await auditor.get(url, params=bad)).status_code == 422, bad


async def test_time_filters_hold_to_the_ends_of_the_calendar_and_refuse_beyond(stack: Stack) -> None:
    await eventually(lambda: _enrolled(stack))
    everything = [e["seq"] for e in await _entries(stack) if e["event_type"] != "auditor.query"]
    auditor = stack.client("auditor", audit=True)
    # No UTC form: year 0 and year 10000 once converted, so there is nothing to compare them with.
    for beyond in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T12:00:00-23:59"):
        for name in ("since", "until"):
            response = await auditor.get("/v1/audit/events", params={name: beyond})
            assert response.status_code == 422, (name, beyond, response.text)
            assert response.json()["code"] == "invalid_request", response.text
            assert name in response.json()["detail"] and "years 1 to 9999" in response.json()["detail"]
    # The far ends that have one, with an offset or without (read as UTC), admit everything or nothing.
    for since, until in (
        ("0001-01-01T00:00:00-14:00", "9999-12-31T23:59:59+14:00"),
        ("0001-01-01T00:00:00", "9999-12-31T23:59:59"),
    ):
        admitted = await _entries(stack, since=since, until=until)
        assert [e["seq"] for e in admitted if e["event_type"] != "auditor.query"] == everything
        assert await _entries(stack, since=until) == []
        assert await _entries(stack, until=since) == []


def _verify(home: Path, audit_url: str) -> Result:
    return CliRunner().invoke(app, ["audit", "verify", "--home", str(home), "--audit-server", audit_url])


async def _checkpoint(stack: Stack) -> str:
    """Signs a checkpoint over the whole log now (the service also does so on its own interval)."""
    response = await stack.client("auditor", audit=True).post("/v1/audit/checkpoints")
    assert response.status_code == 200, response.text
    return response.text


async def test_cli_verify_passes_then_names_a_tampered_entry(stack: Stack) -> None:
    await eventually(lambda: _enrolled(stack))
    assert "\n18\n" in await _checkpoint(stack)
    result = await asyncio.to_thread(_verify, stack.home, stack.audit_url)
    assert result.exit_code == 0, result.output
    assert "audit log intact: 18 leaves, checkpoint 18 root" in result.output

    async with stack.sessions() as session:
        connection = await session.connection()
        await _bypass_triggers_and_update(connection, "postgresql", "actor = 'admin:someone-else'", 7)
        await session.commit()
    result = await asyncio.to_thread(_verify, stack.home, stack.audit_url)
    assert result.exit_code == 1, result.output
    assert f"entry 7: {ALTERED}" in result.output
    assert "leaf 6: content does not match its stored leaf hash" in result.output
    assert "checkpoint 18: its root does not match the leaves served" in result.output
    assert "audit log is NOT intact (3 problem(s))" in result.output
    # The triggers are back on.
    async with stack.sessions() as session:
        with pytest.raises(exc.DBAPIError, match="append-only"):
            await session.execute(text("DELETE FROM audit_log WHERE seq = 7"))


async def test_cli_verify_is_not_fooled_by_an_append_during_the_request(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    await eventually(lambda: _enrolled(stack))
    await _checkpoint(stack)
    real_size = storage.tree_size
    concurrent = [_event(1, event_id="appended-before-size"), _event(2, event_id="appended-after-size")]

    appending = False

    async def append_one() -> None:
        nonlocal appending
        appending = True  # append() writes the tree itself: that read is not the server's.
        try:
            async with stack.sessions() as other:
                await append(other, [concurrent.pop(0)])
                await other.commit()
        finally:
            appending = False

    async def size_with_appends_around_it(session: AsyncSession) -> int:
        # Appends commit just before and just after the size is read, as a busy consumer does: verify
        # is anchored on a signed checkpoint, so entries beyond it change nothing.
        if concurrent and not appending:
            await append_one()
            size = await real_size(session)
            await append_one()
            return size
        return await real_size(session)

    monkeypatch.setattr(storage, "tree_size", size_with_appends_around_it)
    result = await asyncio.to_thread(_verify, stack.home, stack.audit_url)
    if concurrent:
        pytest.fail("the concurrent append did not happen")
    monkeypatch.undo()
    assert verify_chain([AuditRecord.model_validate(e) for e in await _entries(stack)]) == []
    assert result.exit_code == 0, result.output
    # The next checkpoint covers the appended entries, and verify passes over them too.
    assert "\n20\n" in await _checkpoint(stack)
    result = await asyncio.to_thread(_verify, stack.home, stack.audit_url)
    assert result.exit_code == 0, result.output
    assert "audit log intact: 20 leaves" in result.output


async def test_erasing_a_notice_destroys_its_envelope_and_leaves_the_log_verifiable(stack: Stack) -> None:
    body = notice_body(["kh-cnp"])
    assert (await stack.client("kr-desk").post("/v1/notices", json=body)).status_code == 202
    notice_id = body["notice_id"]

    async def delivered() -> list[dict[str, Any]]:
        return await _entries(stack, notice_id=notice_id, type="notice.delivered")

    await eventually(delivered)
    before = await _entries(stack, notice_id=notice_id)
    admin = stack.client("admin")
    # Only the administrator erases, and only once.
    refused = await stack.client("kr-desk").post(f"/v1/admin/notices/{notice_id}/erase", json={"reason": "x"})
    assert refused.status_code == 403
    erased = await admin.post(f"/v1/admin/notices/{notice_id}/erase", json={"reason": "court order 2026-17"})
    assert erased.status_code == 200, erased.text
    again = await admin.post(f"/v1/admin/notices/{notice_id}/erase", json={"reason": "again"})
    assert again.status_code == 409

    async with stack.sessions() as session:
        row = await session.get(NoticeRow, notice_id)
        assert row is not None and row.envelope == b"" and row.erased_at is not None
    assert (await stack.client("kh-cnp").get("/v1/inbox")).json()["items"] == []
    [event] = await eventually(lambda: _entries(stack, notice_id=notice_id, type="notice.erased"))
    assert event["details"]["reason"] == "court order 2026-17"
    # The earlier leaves are exactly as they were, and the whole log still verifies.
    after = await _entries(stack, notice_id=notice_id)
    assert after[: len(before)] == before
    await _checkpoint(stack)
    result = await asyncio.to_thread(_verify, stack.home, stack.audit_url)
    assert result.exit_code == 0 and "audit log intact" in result.output, result.output
