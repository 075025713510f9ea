"""Trust without trusting the operator: partner-side sealing, freshness and replay, key rotation and
revocation, TLP on forwards and replies, recall and expiry, the signed directory; every refusal audited.

Real gateway over HTTP, real Kafka, real PostgreSQL, ingest and audit running.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select

from schemas.notices import Notice
from services.delivery.models import Delivery, NoticeRow
from services.envelope.keys import AgencyKeys
from services.envelope.service import open_envelope, parse_envelope, routing_of, seal_notice
from services.notices.models import Submission
from services.platform.kafka import header_value
from services.trust.httpsig import RequestSigner
from services.trust.models import AgencyKey
from tests.conftest import (
    Stack,
    audited,
    dead_letters,
    eventually,
    receipt,
    records_on,
)
from tests.support.sealing import encryption_keys_of, notice_body, seal

DESK, KH, INTERPOL, ASEANAPOL = "kr-desk", "kh-cnp", "interpol-ncb-phnom-penh", "aseanapol"


def _keys(stack: Stack, agency: str) -> AgencyKeys:
    return AgencyKeys.load(stack.home / agency)


async def _post(stack: Stack, caller: str, envelope: bytes) -> Any:
    return await stack.client(caller).post(
        "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
    )


async def _desk_sends(stack: Stack, recipients: list[str], **overrides: Any) -> str:
    response = await stack.client(DESK).post("/v1/notices", json=notice_body(recipients, **overrides))
    assert response.status_code == 202, response.text
    notice_id = str(response.json()["notice_id"])
    await eventually(lambda: _delivered(stack, notice_id, len(recipients)))
    return notice_id


async def _delivered(stack: Stack, notice_id: str, count: int) -> bool:
    async with stack.sessions() as session:
        query = select(func.count()).select_from(Delivery).where(Delivery.notice_id == notice_id)
        return int((await session.execute(query)).scalar_one()) == count


async def _count(stack: Stack, model: Any) -> int:
    async with stack.sessions() as session:
        return int((await session.execute(select(func.count()).select_from(model))).scalar_one())


async def _refused(stack: Stack, response: Any, status: int, reason: str) -> None:
    """The answer names the reason, the refusal reaches the audit log, and nothing was stored."""
    assert response.status_code == status, response.text
    assert response.json()["code"] == reason, response.text
    await eventually(lambda: audited(stack, "notice.rejected", reason=reason))


async def test_a_partner_seals_a_reply_on_its_own_machine_and_the_desk_sees_the_thread(
    stack: Stack,
) -> None:
    original = await _desk_sends(stack, [KH, INTERPOL], case_ref="KD-2025-0404")
    kh = _keys(stack, KH)
    reply_id, envelope = seal(
        stack,
        kh,
        [DESK],
        type="reply",
        in_reply_to=original,
        case_ref="KD-2025-0404",
        summary="Raid at 05:00",
    )
    response = await _post(stack, KH, envelope)
    assert response.status_code == 202, response.text
    assert response.json()["notice_id"] == reply_id
    # The same bytes again (a client whose answer was lost) get the same answer, and go to Kafka once.
    again = await _post(stack, KH, envelope)
    assert again.status_code == 202 and again.json() == response.json()
    await eventually(lambda: _delivered(stack, reply_id, 1))

    desk = stack.client(DESK)
    [item] = (await desk.get("/v1/inbox")).json()["items"]
    assert item["notice_id"] == reply_id and item["in_reply_to"] == original
    directory = {k.kid: k for k in kh.public_keys()}
    notice = open_envelope(
        parse_envelope(item["envelope"]), _keys(stack, DESK).decryption_keys(), directory.__getitem__
    )
    assert notice.summary == "Raid at 05:00" and notice.sender == KH

    thread = (await desk.get("/v1/cases/KD-2025-0404")).json()
    assert [(n["notice_id"], n["depth"]) for n in thread["notices"]] == [(original, 0), (reply_id, 1)]
    assert {r["agency"] for r in thread["notices"][0]["recipients"]} == {KH, INTERPOL}
    # A partner sees the case only as far as it took part: its own rows, not the others'.
    interpol_view = (await stack.client(INTERPOL).get("/v1/cases/KD-2025-0404")).json()
    assert [n["notice_id"] for n in interpol_view["notices"]] == [original]
    assert [r["agency"] for r in interpol_view["notices"][0]["recipients"]] == [INTERPOL]
    assert (await stack.client(ASEANAPOL).get("/v1/cases/KD-2025-0404")).status_code == 404


async def test_an_envelope_signed_by_another_agency_than_the_caller_is_refused(stack: Stack) -> None:
    _, sealed_by_aseanapol = seal(stack, _keys(stack, ASEANAPOL), [DESK])
    response = await _post(stack, KH, sealed_by_aseanapol)
    await _refused(stack, response, 403, "not_the_sender")
    assert await _count(stack, Submission) == 0


async def test_stale_future_and_replayed_envelopes_are_refused_and_audited(stack: Stack) -> None:
    kh = _keys(stack, KH)
    _, stale = seal(stack, kh, [DESK], sent_at=datetime.now(UTC) - timedelta(minutes=10))
    await _refused(stack, await _post(stack, KH, stale), 422, "stale")
    _, future = seal(stack, kh, [DESK], sent_at=datetime.now(UTC) + timedelta(minutes=5))
    await _refused(stack, await _post(stack, KH, future), 422, "from_the_future")

    notice_id, first = seal(stack, kh, [DESK])
    assert (await _post(stack, KH, first)).status_code == 202
    _, replay = seal(stack, kh, [DESK], notice_id=uuid.UUID(notice_id), summary="other content")
    await _refused(stack, await _post(stack, KH, replay), 409, "duplicate_notice")
    assert await _count(stack, Submission) == 1


async def test_a_repost_after_the_gateway_lost_its_record_gets_its_202_and_nothing_twice(
    stack: Stack,
) -> None:
    """A gateway killed (or a database gone) between Kafka's ack and recording the submission leaves
    the notice delivered but the client without its 202: the same bytes again must get it, not a 409."""
    kh = _keys(stack, KH)
    notice_id, envelope = seal(stack, kh, [DESK])
    first = await _post(stack, KH, envelope)
    assert first.status_code == 202, first.text
    await eventually(lambda: _delivered(stack, notice_id, 1))
    async with stack.sessions() as session:  # what the kill left: ingest stored it, the gateway did not
        await session.delete(await session.get_one(Submission, notice_id))
        await session.commit()

    again = await _post(stack, KH, envelope)
    assert again.status_code == 202, again.text
    assert again.json()["notice_id"] == notice_id
    async with stack.sessions() as session:
        restored = await session.get_one(Submission, notice_id)
        stored = await session.get_one(NoticeRow, notice_id)
    assert (restored.kafka_partition, restored.kafka_offset) == (stored.kafka_partition, stored.kafka_offset)
    assert (await stack.client(KH).get(f"/v1/notices/{notice_id}")).status_code == 200
    # Other bytes under that id are still a reuse of the id, with or without the gateway's record.
    _, other = seal(stack, kh, [DESK], notice_id=uuid.UUID(notice_id), summary="other content")
    await _refused(stack, await _post(stack, KH, other), 409, "duplicate_notice")
    assert await _count(stack, NoticeRow) == 1 and await _delivered(stack, notice_id, 1)


async def test_broken_envelopes_are_refused_with_reasons_and_the_gateway_keeps_serving(
    stack: Stack,
) -> None:
    kh = _keys(stack, KH)
    _, good = seal(stack, kh, [DESK])
    outer = json.loads(good)
    sealed = json.loads(_b64d(outer["payload"]))

    def with_jwe(**changes: Any) -> bytes:
        return json.dumps({**outer, "payload": _b64e(json.dumps({**sealed, **changes}).encode())}).encode()

    impostor = AgencyKeys.generate(KH)
    _, unknown_kid = seal(stack, impostor, [DESK])
    ghost = AgencyKeys.generate("ghost-agency")
    ghost_body = notice_body([DESK, "ghost-agency"])
    ghost_notice = Notice(**ghost_body, sender=KH, sent_at=datetime.now(UTC))
    ghost_keys = [
        *encryption_keys_of(stack, [DESK]),
        *[k for k in ghost.public_keys() if k.kid == ghost.encryption_kid],
    ]
    to_ghost = seal_notice(ghost_notice, kh.signer(), ghost_keys)
    header = json.loads(_b64d(outer["protected"]))
    cases: list[tuple[bytes, int, str]] = [
        (unknown_kid, 422, "unknown_key"),
        (to_ghost, 422, "unknown_key"),
        (with_jwe(ciphertext=_flip(sealed["ciphertext"])), 422, "bad_signature"),
        (with_jwe(tag=_flip(sealed["tag"])), 422, "bad_signature"),
        (
            with_jwe(protected=_b64e(_b64d(sealed["protected"]).replace(b"flash", b"routine"))),
            422,
            "bad_signature",
        ),
        (
            json.dumps(
                {**outer, "protected": _b64e(json.dumps({**header, "alg": "none"}).encode())}
            ).encode(),
            422,
            "bad_algorithm",
        ),
        (
            json.dumps(
                {**outer, "protected": _b64e(json.dumps({**header, "alg": "HS256"}).encode())}
            ).encode(),
            422,
            "bad_algorithm",
        ),
        (b"[" * 100_000 + b"]" * 100_000, 422, "malformed"),
        (b'{"protected": 1' + b"9" * 5000 + b"}", 422, "malformed"),
        (b"not json at all", 422, "malformed"),
    ]
    for envelope, status, reason in cases:
        response = await _post(stack, KH, envelope)
        assert response.status_code == status, (reason, response.text)
        assert response.json()["code"] == reason, (reason, response.text)
    # Over the envelope limit: refused with the reason (and audited); far over it, cut off unread.
    oversize = await _post(stack, KH, b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert oversize.status_code == 413 and oversize.json()["code"] == "oversize"
    await eventually(lambda: audited(stack, "notice.rejected", reason="oversize"))
    cut_off = await _post(stack, KH, b"{" + b" " * (5 * 1024 * 1024) + b"}")
    assert cut_off.status_code == 413 and "exceeds" in cut_off.json()["detail"]
    # Deeply nested JSON at the gateway's own JSON parsing is a clear 4xx too.
    nested = await stack.client(DESK).post(
        "/v1/notices", content=b"[" * 100_000 + b"]" * 100_000, headers={"Content-Type": "application/json"}
    )
    assert 400 <= nested.status_code < 500, nested.text
    assert await _count(stack, Submission) == 0
    rejected = await eventually(lambda: _at_least(stack, "notice.rejected", len(cases)))
    assert {"unknown_key", "bad_signature", "bad_algorithm", "malformed"} <= {
        e["details"]["reason"] for e in rejected
    }
    # Still serving: a good envelope goes through.
    assert (await _post(stack, KH, good)).status_code == 202


def _seal_unchecked(stack: Stack, sender: AgencyKeys, recipients: list[str], **times: datetime) -> bytes:
    """Seals a notice whose sent_at or expires_at our models would refuse, into both the signed notice and
    the routing header: what a client that does not use deskbridge's models could send."""
    notice = Notice(**notice_body(recipients), sender=sender.agency, sent_at=datetime.now(UTC))
    routing = routing_of(notice).model_copy(update=times)
    with mock.patch("services.envelope.service.routing_of", return_value=routing):
        return seal_notice(
            notice.model_copy(update=times), sender.signer(), encryption_keys_of(stack, recipients)
        )


# Each gets past a check that compares times (freshness, expiry) and then fails whoever converts it to UTC
# or compares it with an aware time: ingest dead-lettered them as internal errors after a 202.
UNTIMELY = [
    {"expires_at": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))},
    {"expires_at": datetime(9999, 12, 31, 12, tzinfo=timezone(-timedelta(hours=23, minutes=59)))},
    {"expires_at": datetime(2030, 1, 1)},
    {"sent_at": datetime.now(UTC).replace(tzinfo=None)},
]


async def test_times_no_stage_can_hold_are_refused_at_the_gateway_and_named_alike_by_ingest(
    stack: Stack,
) -> None:
    kh = _keys(stack, KH)
    for times in UNTIMELY:
        response = await _post(stack, KH, _seal_unchecked(stack, kh, [DESK], **times))
        assert response.status_code == 422, (times, response.text)
        assert response.json()["code"] == "malformed", (times, response.text)
        assert next(iter(times)) in response.json()["detail"], (times, response.text)
    # The desk's own drafts: refused as requests, before anything is sealed.
    for expires_at in ("9999-12-31T23:59:59-14:00", "9999-12-31T12:00:00-23:59"):
        draft = await stack.client(DESK).post("/v1/notices", json=notice_body([KH], expires_at=expires_at))
        assert draft.status_code == 422 and "expires_at" in draft.json()["detail"], draft.text
    assert await records_on(stack, stack.topics.notices) == 0
    assert await _count(stack, Submission) == 0
    await eventually(lambda: _at_least(stack, "notice.rejected", len(UNTIMELY)))

    # Were one in Kafka all the same, ingest sets it aside for the same reason, not as its own fault.
    for times in UNTIMELY:
        await stack.publisher.send(
            stack.topics.notices, "KD-2025-0331", _seal_unchecked(stack, kh, [DESK], **times), []
        )
    letters = await dead_letters(stack, len(UNTIMELY))
    assert [letter["reason"] for letter in letters] == ["malformed"] * len(UNTIMELY), letters
    assert await _count(stack, NoticeRow) == 0


async def _at_least(stack: Stack, event_type: str, count: int) -> list[dict[str, Any]]:
    found = await audited(stack, event_type)
    return found if len(found) >= count else []


def _b64d(value: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _b64e(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _flip(value: str) -> str:
    data = bytearray(_b64d(value))
    data[len(data) // 2] ^= 0x01
    return _b64e(bytes(data))


async def test_rotation_keeps_old_notices_verifiable_and_moves_new_ones_to_the_new_keys(
    stack: Stack,
) -> None:
    kh = _keys(stack, KH)
    old_notice_id = await _desk_sends(stack, [KH])
    # Sealed just before the rotation: still in flight, still accepted after it.
    _, in_flight = seal(stack, kh, [DESK])

    rotated = kh.rotated()
    client = stack.client(KH)
    # A bearer credential alone cannot add keys (a stolen one must not let the thief sign as kh-cnp).
    by_bearer = await client.post("/v1/keys", json={"jwk": rotated.public_jwks()[0]})
    assert by_bearer.status_code == 401 and "signed" in by_bearer.json()["detail"]
    signed = httpx.AsyncClient(base_url=stack.gateway_url, auth=RequestSigner(kh.signer()), timeout=30)
    async with signed:
        for jwk in reversed(rotated.public_jwks()):  # the signing key last: it retires the signer
            response = await signed.post("/v1/keys", json={"jwk": jwk, "retire_previous_after_s": 0})
            assert response.status_code == 201, response.text
    rotated.save(stack.home / KH)

    assert (await _post(stack, KH, in_flight)).status_code == 202
    _, after_with_old = seal(stack, kh, [DESK])
    await _refused(stack, await _post(stack, KH, after_with_old), 422, "key_not_valid")
    _, after_with_new = seal(stack, rotated, [DESK])
    assert (await _post(stack, KH, after_with_new)).status_code == 202

    # The desk's next notice is sealed to kh-cnp's new encryption key; the old one still opens.
    new_notice_id = await _desk_sends(stack, [KH])
    items = {i["notice_id"]: i for i in (await client.get("/v1/inbox")).json()["items"]}
    desk_keys = {k.kid: k for k in _keys(stack, DESK).public_keys()}
    for notice_id, kid in ((old_notice_id, kh.encryption_kid), (new_notice_id, rotated.encryption_kid)):
        envelope = parse_envelope(items[notice_id]["envelope"])
        assert [r.header["kid"] for r in envelope.jwe.recipients] == [kid]
        opened = open_envelope(envelope, rotated.decryption_keys(), desk_keys.__getitem__)
        assert str(opened.notice_id) == notice_id

    jwks = (await client.get(f"/v1/directory/agencies/{KH}/jwks")).json()["keys"]
    states = {k["kid"]: k["status"] for k in jwks}
    assert states[kh.signing_kid] == "expired" and states[rotated.signing_kid] == "active"
    assert await eventually(lambda: audited(stack, "key.registered", kid=rotated.signing_kid))


async def test_a_key_validity_needs_an_offset_and_a_time_within_the_calendar(stack: Stack) -> None:
    """On both ways a key comes in: the administrator's route and the agency's signed one."""
    kh = _keys(stack, KH)
    before = await _count(stack, AgencyKey)
    offset_needed = "UTC offset"
    out_of_range = "outside the years 1 to 9999"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"not_after": "2030-01-01T00:00:00"}, offset_needed),
        ({"not_after": "9999-12-31T23:59:59-14:00"}, out_of_range),
        ({"not_after": "0001-01-01T00:00:00+14:00"}, out_of_range),
        ({"not_after": "0001-01-01T00:00:00-14:00"}, "in the future"),
        ({"retire_previous_after_s": -1}, "retire_previous_after_s"),
        ({"retire_previous_after_s": 30 * 86400 + 1}, "retire_previous_after_s"),
        ({"retire_previous_after_s": 2**64}, "retire_previous_after_s"),
        ({"not_after": "9999-12-31T23:59:59+14:00", "retire_previous_after_s": 30 * 86400}, ""),
    ]
    admin = stack.client("admin")
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, auth=RequestSigner(kh.signer()), timeout=30
    ) as signed:
        for way_in, client in ((f"/v1/admin/agencies/{KH}/keys", admin), ("/v1/keys", signed)):
            for fields, reason in cases:
                jwk = AgencyKeys.generate(KH).public_jwks()[0]
                response = await client.post(way_in, json={"jwk": jwk, **fields})
                if not reason:  # the far end of the calendar, yet a time every stage can hold
                    assert response.status_code == 201, (way_in, fields, response.text)
                    continue
                assert response.status_code == 422, (way_in, fields, response.text)
                assert reason in response.json()["detail"], (way_in, fields, response.text)
    assert await _count(stack, AgencyKey) == before + 2
    jwks = (await stack.client(KH).get(f"/v1/directory/agencies/{KH}/jwks")).json()["keys"]
    # The second retired the first (a rotation); the last stays valid until 9999-12-31T09:59:59Z.
    assert [k.get("exp") for k in jwks].count(253402250399) == 1, jwks
    assert (await stack.client(INTERPOL).get("/v1/directory")).status_code == 200


async def test_a_revoked_key_is_refused_at_once_by_the_gateway_and_by_ingest(stack: Stack) -> None:
    kh = _keys(stack, KH)
    _, sealed_before = seal(stack, kh, [DESK])
    # Another agency cannot revoke kh-cnp's key.
    foreign = await stack.client(ASEANAPOL).post(f"/v1/keys/{kh.signing_kid}/revoke", json={"reason": "x"})
    assert foreign.status_code == 404
    response = await stack.client(KH).post(
        f"/v1/keys/{kh.signing_kid}/revoke", json={"reason": "laptop seized at border"}
    )
    assert response.status_code == 200, response.text
    await _refused(stack, await _post(stack, KH, sealed_before), 422, "key_revoked")

    # Ingest refuses it too, were it already in Kafka.
    await stack.publisher.send(stack.topics.notices, "KD-2025-0331", sealed_before, [])
    letter = await _first_dead_letter(stack)
    assert letter["reason"] == "key_revoked"
    [revoked] = await eventually(lambda: audited(stack, "key.revoked", kid=kh.signing_kid))
    assert revoked["details"]["reason"] == "laptop seized at border"
    async with stack.sessions() as session:
        key = await session.get(AgencyKey, kh.signing_kid)
        assert key is not None and key.status == "revoked" and key.revoked_at is not None


async def _first_dead_letter(stack: Stack) -> dict[str, str | None]:
    consumer = AIOKafkaConsumer(
        stack.topics.dead_letters,
        **stack.kafka.client_args(),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        async with asyncio.timeout(30):
            while True:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    headers = list(records[0].headers)
                    return {h: header_value(headers, h) for h in ("dlq_reason", "dlq_detail")} | {
                        "reason": header_value(headers, "dlq_reason")
                    }
    finally:
        await consumer.stop()


async def test_ingest_judges_freshness_by_the_brokers_clock(stack: Stack) -> None:
    _, stale = seal(stack, _keys(stack, KH), [DESK], sent_at=datetime.now(UTC) - timedelta(minutes=10))
    await stack.publisher.send(stack.topics.notices, "KD-2025-0331", stale, [])
    letter = await _first_dead_letter(stack)
    assert letter["reason"] == "stale" and "freshness window" in str(letter["dlq_detail"])


@pytest.mark.parametrize("tlp", ["red", "amber+strict"])
async def test_a_closed_tlp_notice_cannot_be_forwarded_beyond_its_recipients(stack: Stack, tlp: str) -> None:
    original = await _desk_sends(stack, [KH, INTERPOL], tlp=tlp)
    kh = _keys(stack, KH)
    _, forward = seal(stack, kh, [ASEANAPOL], forwarded_from=original, tlp="red")
    await _refused(stack, await _post(stack, KH, forward), 422, "tlp_violation")
    _, reply_wide = seal(stack, kh, [DESK, ASEANAPOL], type="reply", in_reply_to=original, tlp=tlp)
    await _refused(stack, await _post(stack, KH, reply_wide), 422, "tlp_violation")
    # Within the audience it may go.
    _, reply = seal(stack, kh, [DESK, INTERPOL], type="reply", in_reply_to=original, tlp=tlp)
    assert (await _post(stack, KH, reply)).status_code == 202
    # An agency that was never shared the notice cannot thread onto it at all.
    _, outsider = seal(stack, _keys(stack, ASEANAPOL), [DESK], type="reply", in_reply_to=original)
    await _refused(stack, await _post(stack, ASEANAPOL, outsider), 422, "tlp_violation")


async def test_an_amber_notice_may_be_forwarded_but_its_label_not_loosened(stack: Stack) -> None:
    original = await _desk_sends(stack, [KH], tlp="amber")
    kh = _keys(stack, KH)
    _, loosened = seal(stack, kh, [ASEANAPOL], forwarded_from=original, tlp="green")
    await _refused(stack, await _post(stack, KH, loosened), 422, "tlp_violation")
    _, unknown = seal(stack, kh, [ASEANAPOL], forwarded_from=str(uuid.uuid4()), tlp="amber")
    await _refused(stack, await _post(stack, KH, unknown), 422, "unknown_reference")
    _, other_case = seal(
        stack, kh, [ASEANAPOL], forwarded_from=original, tlp="amber", case_ref="KD-2025-0999"
    )
    await _refused(stack, await _post(stack, KH, other_case), 422, "unknown_reference")
    forward_id, forward = seal(stack, kh, [ASEANAPOL], forwarded_from=original, tlp="amber")
    assert (await _post(stack, KH, forward)).status_code == 202
    await eventually(lambda: _delivered(stack, forward_id, 1))


async def test_recall_removes_unread_copies_and_marks_read_ones(stack: Stack) -> None:
    notice_id = await _desk_sends(stack, [KH, INTERPOL])
    kh = stack.client(KH)
    assert [i["notice_id"] for i in (await kh.get("/v1/inbox")).json()["items"]] == [notice_id]
    # Only the sender may recall.
    assert (await kh.post(f"/v1/notices/{notice_id}/recall", json={})).status_code == 404
    response = await stack.client(DESK).post(f"/v1/notices/{notice_id}/recall", json={"reason": "wrong case"})
    assert response.status_code == 202, response.text

    async def recalled() -> dict[str, str]:
        status = (await stack.client(DESK).get(f"/v1/notices/{notice_id}")).json()
        states = {r["agency"]: r["state"] for r in status["recipients"]}
        return states if set(states.values()) == {"recalled"} else {}

    await eventually(recalled)
    # Interpol never fetched it: it is gone from its inbox. kh-cnp had: it sees it marked.
    assert (await stack.client(INTERPOL).get("/v1/inbox")).json()["items"] == []
    [item] = (await kh.get("/v1/inbox")).json()["items"]
    assert item["state"] == "recalled"
    ack = await kh.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, KH, notice_id))
    assert ack.status_code == 410 and "recalled" in ack.json()["detail"]
    again = await stack.client(DESK).post(f"/v1/notices/{notice_id}/recall", json={})
    assert again.status_code == 409
    events = await eventually(lambda: _at_least(stack, "notice.recalled", 2))
    assert {e["agency"]: e["details"]["was_fetched"] for e in events} == {KH: True, INTERPOL: False}
    assert await eventually(lambda: audited(stack, "notice.recall_requested", reason="wrong case"))


async def test_an_expired_notice_is_no_longer_served_and_is_marked_expired(stack: Stack) -> None:
    expires = datetime.now(UTC) + timedelta(seconds=4)
    notice_id = await _desk_sends(stack, [KH], expires_at=expires.isoformat())
    kh = stack.client(KH)
    assert [i["notice_id"] for i in (await kh.get("/v1/inbox")).json()["items"]] == [notice_id]

    async def expired() -> bool:
        status = (await stack.client(DESK).get(f"/v1/notices/{notice_id}")).json()
        return bool(status["recipients"][0]["state"] == "expired")

    await eventually(expired, within=30)
    assert (await kh.get("/v1/inbox")).json()["items"] == []
    ack = await kh.post(f"/v1/inbox/{notice_id}/ack", json=await receipt(stack, KH, notice_id))
    assert ack.status_code == 410 and "expired" in ack.json()["detail"]
    assert await eventually(lambda: audited(stack, "notice.expired", agency=KH))


async def test_a_notice_is_stored_only_once_everything_checks_out(stack: Stack) -> None:
    """Nothing half-way: refused envelopes leave no submission, notice or inbox row behind."""
    kh = _keys(stack, KH)
    _, stale = seal(stack, kh, [DESK], sent_at=datetime.now(UTC) - timedelta(hours=1))
    assert (await _post(stack, KH, stale)).status_code == 422
    await asyncio.sleep(1)  # ingest would have had time to store something, were anything produced
    assert (
        await _count(stack, Submission),
        await _count(stack, NoticeRow),
        await _count(stack, Delivery),
    ) == (0, 0, 0)
