"""The console in Debian's Chromium against the real stack: the desk sends, a partner opens, checks,
acknowledges and replies in its browser, the desk watches it live, an auditor checks the evidence."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, Route, expect
from typer.testing import CliRunner

from services.cli.main import app as cli
from tests.conftest import Stack, audited, eventually
from tests.console.conftest import SCREENSHOTS, TABLET, Console

OpenConsole = Callable[..., Awaitable[Console]]
PARTNER = "kh-cnp"
CASE = "KRD-2026-0042"


def console_url(stack: Stack) -> str:
    return f"{stack.gateway_url}/console/"


async def screenshot(page: Page, name: str, full_page: bool = False) -> None:
    """Into docs/console/ when DESKBRIDGE_SCREENSHOTS=docs (make screenshots), else under var/."""
    folder = SCREENSHOTS if os.environ.get("DESKBRIDGE_SCREENSHOTS") == "docs" else Path("var/screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=full_page)
    assert path.stat().st_size > 10_000  # a rendered page, not a blank one


async def sign_in(
    console: Console, role: str, token: str, key_file: Path | None = None, vkey: Path | None = None
) -> None:
    page = console.page
    await page.get_by_label("I work as").select_option(role)
    await page.get_by_label("Credential", exact=True).fill(token)
    if key_file is not None:
        await page.get_by_label("Your agency's key file").set_input_files(str(key_file))
    if vkey is not None:
        await page.get_by_label("The audit log's key").set_input_files(str(vkey))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_test_id("who")).to_be_visible()


def recipient_state(desk: Page, notice_id: str, agency: str) -> Any:
    return desk.locator(f'tr[data-notice="{notice_id}"] li[data-agency="{agency}"] [data-state]')


async def compose_flash(desk: Page, shot: str | None = None) -> str:
    await desk.get_by_role("tab", name="Compose").click()
    form = desk.locator("form.compose")
    await form.get_by_label("Notice type").select_option("kidnapping_confinement")
    await form.get_by_label("Priority").select_option("flash")
    await form.get_by_label("TLP", exact=True).select_option("amber")
    await form.get_by_label("Interpol notice colour").select_option("yellow")
    await form.get_by_label("Case reference").fill(CASE)
    await form.get_by_label("Cambodian National Police (kh-cnp)").check()
    await form.get_by_label("Summary").fill("Korean national confined in a scam compound; rescue requested")
    await form.get_by_role("button", name="Add subject").click()
    await form.get_by_label("Name (Latin)").fill("PARK Jihoon")
    await form.get_by_label("Name (Hangul)").fill("박지훈")
    await form.get_by_role("button", name="Add location").click()
    await form.get_by_label("Country (ISO code)").fill("KH")
    await form.get_by_label("Province").fill("Preah Sihanouk")
    if shot:
        await screenshot(desk, shot, full_page=True)
    await form.get_by_role("button", name="Send notice").click()
    await expect(form.get_by_role("status")).to_contain_text("Sent: notice")
    notice_id = await form.get_attribute("data-last-notice")
    assert notice_id
    return notice_id


async def test_desk_partner_and_auditor_work_one_notice_through_in_the_browser(
    stack: Stack, open_console: OpenConsole
) -> None:
    desk = await open_console(console_url(stack))
    headers = (await desk.page.request.get(console_url(stack))).headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    await sign_in(desk, "desk", stack.token("kr-desk"))

    partner = await open_console(console_url(stack))
    await sign_in(partner, "partner", stack.token(PARTNER), key_file=stack.home / PARTNER / "keys.jwks.json")
    await expect(partner.page.get_by_role("heading", name=f"Inbox of {PARTNER}")).to_be_visible()

    # The desk's form catches a malformed field beside it, before anything is sent.
    form = desk.page.locator("form.compose")
    await form.get_by_label("Case reference").fill("case 42")
    await form.get_by_role("button", name="Send notice").click()
    await expect(
        form.locator("#" + (await form.get_by_label("Case reference").get_attribute("id") or "") + "-error")
    ).to_contain_text("KRD-2026-0001")

    sent_at = time.monotonic()
    notice_id = await compose_flash(desk.page, shot="desk-compose")
    card = partner.page.locator(f'article[data-notice="{notice_id}"]')
    await expect(card.locator('[data-verdict="verified"]')).to_contain_text("signature verified: kr-desk")
    shown_after_s = time.monotonic() - sent_at
    await expect(card).to_contain_text("박지훈")
    await expect(card.locator(".tlp-banner")).to_contain_text("TLP:AMBER")
    await screenshot(partner.page, "partner-inbox")

    await card.get_by_role("button", name="Acknowledge").click()
    await expect(card).to_contain_text("Acknowledged with a receipt signed in this browser")
    await desk.page.get_by_role("tab", name="Board").click()
    await expect(recipient_state(desk.page, notice_id, PARTNER)).to_have_text("acknowledged")

    await card.get_by_role("button", name="Reply").click()
    await card.get_by_label("Reply", exact=True).fill("Compound located; raid planned for 05:00 local time")
    await card.get_by_role("button", name="Seal and send reply").click()
    await expect(card).to_contain_text("sealed here and accepted by the gateway")
    await expect(recipient_state(desk.page, notice_id, PARTNER)).to_have_text("replied")
    await screenshot(desk.page, "desk-board")

    # The case thread shows the notice and its reply beneath it.
    await desk.page.locator(f'tr[data-notice="{notice_id}"]').get_by_role("button", name=CASE).click()
    await expect(desk.page.get_by_test_id("thread").locator("li.depth-1")).to_contain_text(
        "Reply from kh-cnp"
    )

    # Nothing secret left the partner's browser: no private key, in no request.
    keyfile = json.loads((stack.home / PARTNER / "keys.jwks.json").read_text())
    secrets = [k["d"] for k in keyfile["keys"]]
    assert partner.sent and not any(s in body for s in secrets for body in partner.sent)
    assert not partner.complaints and not desk.complaints, partner.complaints + desk.complaints

    # The auditor checks the evidence once every event of the notice is in the log.
    await eventually(lambda: audited(stack, "notice.replied", notice_id=notice_id))
    auditor = await open_console(console_url(stack))
    await sign_in(auditor, "auditor", stack.token("auditor"), vkey=stack.home / "auditor" / "audit-log.vkey")
    evidence_form = auditor.page.get_by_role("form", name="Check a notice's evidence")
    await evidence_form.get_by_label("Notice id").fill(notice_id)
    await evidence_form.get_by_role("button", name="Check evidence").click()
    verdict = auditor.page.get_by_test_id("evidence").locator("[data-verdict]")
    await expect(verdict).to_have_attribute("data-verdict", "verified")
    await expect(auditor.page.get_by_test_id("evidence").locator('[data-ok="false"]')).to_have_count(0)

    # kh-cnp witnesses that checkpoint: the evidence now checks its cosignature too, in the browser.
    witness = [
        "audit",
        "witness",
        "--as",
        PARTNER,
        "--home",
        str(stack.home),
        "--audit-server",
        stack.audit_url,
    ]
    result = await asyncio.to_thread(CliRunner().invoke, cli, witness)
    assert result.exit_code == 0, result.output
    await evidence_form.get_by_role("button", name="Check evidence").click()
    checks = auditor.page.get_by_test_id("evidence").locator("ul.checks li")
    await expect(checks.filter(has_text=f"cosignature of {PARTNER}")).to_have_attribute("data-ok", "true")
    await expect(verdict).to_have_attribute("data-verdict", "verified")
    await screenshot(auditor.page, "auditor-evidence")

    # The timeline, filtered to this notice, and the checkpoints, each signature checked in the browser.
    timeline = auditor.page.get_by_role("form", name="Filter the log")
    await timeline.get_by_label("Notice id").fill(notice_id)
    await timeline.get_by_role("button", name="Show events").click()
    rows = auditor.page.get_by_test_id("timeline").locator("tbody tr")
    await expect(rows.filter(has_text="notice.replied")).to_have_count(1)
    await expect(rows.filter(has_text="notice.submitted")).to_have_count(1)
    await auditor.page.get_by_role("button", name="Reload checkpoints").click()
    checkpoints = auditor.page.get_by_test_id("checkpoints")
    await expect(checkpoints.locator('li[data-ok="true"]').first).to_contain_text("signature verified")
    await expect(checkpoints.locator('li[data-ok="false"]')).to_have_count(0)
    await expect(checkpoints.locator("li", has_text=f"cosigned by {PARTNER}").first).to_be_visible()
    await checkpoints.scroll_into_view_if_needed()
    await screenshot(auditor.page, "auditor-log")

    # A tampered inclusion proof turns it red and names the check that failed.
    async def tamper(route: Route) -> None:
        response = await route.fetch()
        bundle = await response.json()
        proof = bundle["events"][0]["inclusion_proof"]
        proof[0] = ("0" if proof[0][0] != "0" else "1") + proof[0][1:]
        await route.fulfill(response=response, body=json.dumps(bundle))

    await auditor.page.route("**/v1/audit/evidence/**", tamper)
    await evidence_form.get_by_role("button", name="Check evidence").click()
    await expect(verdict).to_have_attribute("data-verdict", "refused")
    await expect(verdict).to_contain_text("inclusion")
    await screenshot(auditor.page, "auditor-evidence-tampered")
    assert not auditor.complaints, auditor.complaints
    print(f"partner console showed the notice {shown_after_s:.2f} s after the desk pressed send")


async def test_a_partner_console_cannot_display_another_agencys_notice(
    stack: Stack, open_console: OpenConsole
) -> None:
    desk = stack.client("kr-desk")
    draft = {
        "notice_id": "5e1d7c3a-2b4f-4c8e-9a71-3f0b6d2e8c14",
        "type": "intel_report",
        "priority": "immediate",
        "tlp": "red",
        "case_ref": CASE,
        "recipients": ["interpol-ncb-phnom-penh"],
        "summary": "For Interpol only",
    }
    accepted = await desk.post("/v1/notices", json=draft)
    assert accepted.status_code == 202, accepted.text
    interpol = stack.client("interpol-ncb-phnom-penh")
    item = await eventually(lambda: _first_item(interpol, draft["notice_id"]))

    partner = await open_console(console_url(stack), viewport=TABLET)

    # Even a gateway that served another agency's notice to kh-cnp could not make its console show it:
    # kh-cnp's keys cannot open it, and the console says so in red.
    smuggled: list[str] = []

    async def smuggle(route: Route) -> None:
        if smuggled or "limit=500" in route.request.url:
            await route.continue_()
            return
        smuggled.append(route.request.url)
        await route.fulfill(json={"items": [item], "next_cursor": item["cursor"]})

    await partner.page.route("**/v1/inbox?**", smuggle)
    await sign_in(partner, "partner", stack.token(PARTNER), key_file=stack.home / PARTNER / "keys.jwks.json")
    card = partner.page.locator(f'article[data-notice="{draft["notice_id"]}"]')
    await expect(card.locator('[data-verdict="refused"]')).to_contain_text("not_a_recipient")
    await expect(card).not_to_contain_text("For Interpol only")
    assert smuggled
    await screenshot(partner.page, "partner-tablet-refused")
    width = await partner.page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page scrolls sideways at tablet width: {width}"

    # And the real gateway never serves it to kh-cnp.
    own = await stack.client(PARTNER).get("/v1/inbox")
    assert draft["notice_id"] not in own.text


async def _first_item(client: httpx.AsyncClient, notice_id: str) -> dict[str, Any] | None:
    page = (await client.get("/v1/inbox")).json()
    return next((i for i in page["items"] if i["notice_id"] == notice_id), None)


@pytest.mark.settings(sla_flash_s=2)
async def test_alerts_recall_and_expiry_reach_both_consoles(stack: Stack, open_console: OpenConsole) -> None:
    partner = await open_console(console_url(stack))
    # Keyboard only: the role by arrow key, the credential typed, Enter to sign in (the key file is a
    # file chooser, which no keyboard fills in a headless browser).
    page = partner.page
    await page.get_by_label("I work as").focus()
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")
    await page.keyboard.type(stack.token(PARTNER))
    await page.get_by_label("Your agency's key file").set_input_files(
        str(stack.home / PARTNER / "keys.jwks.json")
    )
    await page.get_by_label("Credential", exact=True).press("Enter")
    await expect(page.get_by_test_id("who")).to_have_text(f"Partner: {PARTNER}")

    # The private keys are in IndexedDB as CryptoKeys nobody can read back.
    stored = await page.evaluate(
        """agency => new Promise((resolve, reject) => {
            const open = indexedDB.open("deskbridge-console");
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const get = open.result.transaction("keyrings").objectStore("keyrings").get(agency);
              get.onsuccess = () => {
                const ring = get.result;
                const keys = [ring.signing.key, ...ring.decryption.values()];
                resolve(keys.map(k => [k.type, k.extractable, k.algorithm.name]));
              };
            };
        })""",
        PARTNER,
    )
    assert stored and all(kind == "private" and not extractable for kind, extractable, _ in stored), stored
    assert {name for *_, name in stored} == {"Ed25519", "X25519"}

    desk = await open_console(console_url(stack))
    await sign_in(desk, "desk", stack.token("kr-desk"))
    notice_id = await compose_flash(desk.page)
    card = page.locator(f'article[data-notice="{notice_id}"]')
    await expect(card.locator('[data-verdict="verified"]')).to_be_visible()

    # Unacknowledged past its flash deadline: the desk's banner says so.
    await expect(desk.page.get_by_test_id("alerts")).to_contain_text(f"Overdue: {PARTNER}", timeout=20_000)

    # The desk recalls it from the board; the partner's copy, already read, is marked.
    await desk.page.get_by_role("tab", name="Board").click()
    desk.page.once("dialog", lambda dialog: dialog.accept("sent to the wrong agency"))
    await desk.page.locator(f'tr[data-notice="{notice_id}"]').get_by_role("button", name="Recall").click()
    await expect(recipient_state(desk.page, notice_id, PARTNER)).to_have_text("recalled", timeout=20_000)
    await expect(card.locator(".copy-state")).to_have_text("recalled", timeout=20_000)
    await expect(card).to_contain_text("The sender recalled this notice")
    await expect(card.get_by_role("button", name="Acknowledge")).to_be_disabled()

    # A notice past its expires_at is marked expired where it was shown.
    expiring = {
        "notice_id": "0b7e3c52-9f1a-4d6e-8c2b-5a4f3e1d9c07",
        "type": "intel_report",
        "priority": "routine",
        "tlp": "green",
        "case_ref": CASE,
        "recipients": [PARTNER],
        "summary": "Valid for a few seconds only",
        "expires_at": (datetime.now(UTC) + timedelta(seconds=8)).isoformat(),
    }
    assert (await stack.client("kr-desk").post("/v1/notices", json=expiring)).status_code == 202
    short = page.locator(f'article[data-notice="{expiring["notice_id"]}"]')
    await expect(short.locator('[data-verdict="verified"]')).to_be_visible()
    await expect(short.locator(".copy-state")).to_have_text("expired", timeout=30_000)
    await expect(short).to_contain_text("This notice has expired")
    assert not partner.complaints and not desk.complaints, partner.complaints + desk.complaints

    # Signing out with "remove our keys" leaves nothing behind in this browser.
    await page.get_by_role("button", name="Sign out and remove our keys from this browser").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    await page.get_by_label("I work as").select_option("partner")
    await page.get_by_label("Credential", exact=True).fill(stack.token(PARTNER))
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("status")).to_contain_text("This browser holds no keys for kh-cnp yet")
