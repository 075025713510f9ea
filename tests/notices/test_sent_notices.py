"""The list of an agency's sent notices (the desk's live board, GET /v1/notices) over real HTTP, Kafka and
PostgreSQL: each notice's status exactly as GET /v1/notices/{id} gives it, only the caller's own, pages
by cursor, and a 304 for a poller while nothing changed."""

from __future__ import annotations

from typing import Any

from services.envelope.keys import AgencyKeys
from tests.conftest import Stack, eventually, receipt
from tests.support.sealing import notice_body, seal

DESK, KH, INTERPOL = "kr-desk", "kh-cnp", "interpol-ncb-phnom-penh"


async def _send(stack: Stack, **overrides: Any) -> str:
    response = await stack.client(DESK).post("/v1/notices", json=notice_body([KH, INTERPOL], **overrides))
    assert response.status_code == 202, response.text
    return str(response.json()["notice_id"])


async def _listed(stack: Stack, agency: str, **params: Any) -> dict[str, Any]:
    response = await stack.client(agency).get("/v1/notices", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def _all_delivered(stack: Stack, agency: str, count: int) -> bool:
    items = (await _listed(stack, agency))["items"]
    return len(items) == count and all(r["state"] == "delivered" for i in items for r in i["recipients"])


async def test_the_desk_lists_its_notices_newest_first_with_their_states(stack: Stack) -> None:
    first = await _send(stack, priority="routine", tlp="green")
    second = await _send(stack, priority="flash", tlp="amber")
    await eventually(lambda: _all_delivered(stack, DESK, 2))
    kh = stack.client(KH)
    await kh.get("/v1/inbox")
    ack = await kh.post(f"/v1/inbox/{first}/ack", json=await receipt(stack, KH, first))
    assert ack.status_code == 200, ack.text

    page = await _listed(stack, DESK)
    assert [i["notice_id"] for i in page["items"]] == [second, first] and page["next_cursor"] is None
    for item in page["items"]:
        single = (await stack.client(DESK).get(f"/v1/notices/{item['notice_id']}")).json()
        assert {k: v for k, v in item.items() if k in single} == single
    newest, older = page["items"]
    header = ("notice_type", "priority", "tlp")
    assert [newest[k] for k in header] == ["kidnapping_confinement", "flash", "amber"]
    assert [older[k] for k in header] == ["kidnapping_confinement", "routine", "green"]
    states = {r["agency"]: r["state"] for r in older["recipients"]}
    assert states == {KH: "acknowledged", INTERPOL: "delivered"}
    assert next(r for r in older["recipients"] if r["agency"] == KH)["receipt"]

    # A page at a time, by cursor; a cursor this server never issued is refused.
    one = await _listed(stack, DESK, limit=1)
    assert [i["notice_id"] for i in one["items"]] == [second] and one["next_cursor"]
    rest = await _listed(stack, DESK, limit=1, after=one["next_cursor"])
    assert [i["notice_id"] for i in rest["items"]] == [first] and rest["next_cursor"] is None
    forged = await stack.client(DESK).get("/v1/notices", params={"after": "not-a-cursor"})
    assert forged.status_code == 400 and forged.json()["code"] == "bad_cursor"


async def test_an_agency_lists_only_what_it_sent(stack: Stack) -> None:
    original = await _send(stack)
    await eventually(lambda: _all_delivered(stack, DESK, 1))
    kh_keys = AgencyKeys.load(stack.home / KH)
    reply_id, envelope = seal(stack, kh_keys, [DESK], type="reply", in_reply_to=original)
    posted = await stack.client(KH).post(
        "/v1/envelopes", content=envelope, headers={"Content-Type": "application/json"}
    )
    assert posted.status_code == 202, posted.text

    [reply] = (await _listed(stack, KH))["items"]
    assert reply["notice_id"] == reply_id and reply["sender"] == KH
    assert [r["agency"] for r in reply["recipients"]] == [DESK]
    # The desk's list holds its own notice only, not the reply it received; a bystander's list is empty.
    assert [i["notice_id"] for i in (await _listed(stack, DESK))["items"]] == [original]
    assert (await _listed(stack, INTERPOL))["items"] == []

    assert (await stack.client(None).get("/v1/notices")).status_code == 401
    assert (await stack.client("auditor").get("/v1/notices")).status_code == 403


async def test_a_poller_gets_304_until_a_state_changes(stack: Stack) -> None:
    notice_id = await _send(stack)
    await eventually(lambda: _all_delivered(stack, DESK, 1))
    desk = stack.client(DESK)
    first = await desk.get("/v1/notices")
    etag = first.headers["etag"]
    assert first.status_code == 200 and first.headers["cache-control"] == "private, no-cache"

    unchanged = await desk.get("/v1/notices", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b"" and unchanged.headers["etag"] == etag
    # An ETag names one body: kh-cnp's list (empty) is another.
    assert (await stack.client(KH).get("/v1/notices", headers={"If-None-Match": etag})).status_code == 200

    await stack.client(KH).get("/v1/inbox")  # fetching the copy changes its state for the desk

    async def changed() -> dict[str, Any] | None:
        response = await desk.get("/v1/notices", headers={"If-None-Match": etag})
        return dict(response.json()) if response.status_code == 200 else None

    page = await eventually(changed)
    [item] = page["items"]
    assert item["notice_id"] == notice_id
    assert {r["agency"]: r["state"] for r in item["recipients"]} == {KH: "fetched", INTERPOL: "delivered"}
