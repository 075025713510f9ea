"""The browser console as the gateway serves it (the build `make setup` made of console/) and the audit
API's CORS for it, over real HTTP."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' {audit}; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _assert_guarded(response: httpx.Response, stack: Stack) -> None:
    assert response.headers["content-security-policy"] == CSP.format(audit=stack.audit_url)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cross-origin-opener-policy"] == "same-origin"


async def test_the_console_is_served_with_its_security_headers(stack: Stack) -> None:
    browser = stack.client(None)  # a browser that has not signed in yet
    moved = await browser.get("/console")
    assert moved.status_code == 308 and moved.headers["location"] == "/console/"
    _assert_guarded(moved, stack)

    page = await browser.get("/console/")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-cache"
    _assert_guarded(page, stack)
    # What script-src 'self' admits: every script a file of the console's own, none inline.
    scripts = re.findall(r"<script\b[^>]*>", page.text)
    assert scripts and all(re.search(r'src="/console/assets/[^"]+\.js"', s) for s in scripts), scripts
    assert "<style" not in page.text

    asset = re.findall(r'src="(/console/assets/[^"]+\.js)"', page.text)[0]
    script = await browser.get(asset)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=31536000, immutable"
    _assert_guarded(script, stack)
    again = await browser.get(asset, headers={"If-None-Match": script.headers["etag"]})
    assert again.status_code == 304 and again.content == b""

    missing = await browser.get("/console/assets/nothing-here.js")
    assert missing.status_code == 404 and missing.headers["content-type"] == "application/problem+json"
    _assert_guarded(missing, stack)
    # Only GET and HEAD reach the files.
    assert (await browser.post("/console/", content=b"x")).status_code == 405


@pytest.mark.settings(console_dir=Path("/nonexistent/deskbridge-console/dist"))
async def test_an_unbuilt_console_answers_503_saying_how_to_build_it(stack: Stack) -> None:
    for path in ("/console/", "/console/assets/index.js"):
        response = await stack.client(None).get(path)
        assert response.status_code == 503, response.text
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["code"] == "console_unavailable" and "make setup" in problem["detail"]
        _assert_guarded(response, stack)


async def test_the_console_config_names_the_apis_and_nothing_secret(stack: Stack) -> None:
    response = await stack.client(None).get("/console/config.json")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "gateway": "",  # same origin: the gateway that served the console
        "audit": stack.audit_url,
        "desk_agency": "kr-desk",
        "log_origin": stack.settings.audit_log_origin,
    }
    _assert_guarded(response, stack)


async def test_the_audit_api_lets_only_the_console_read_it_from_a_browser(stack: Stack) -> None:
    port = stack.settings.gateway_port
    preflight = {"Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"}
    auditor = stack.client("auditor", audit=True)
    for origin in (stack.gateway_url, f"http://localhost:{port}"):
        allowed = await auditor.options("/v1/audit/events", headers={"Origin": origin, **preflight})
        assert allowed.status_code == 200, allowed.text
        assert allowed.headers["access-control-allow-origin"] == origin
        assert {"GET", "POST"} <= set(allowed.headers["access-control-allow-methods"].split(", "))
        assert "Authorization" in allowed.headers["access-control-allow-headers"]
        assert "access-control-allow-credentials" not in allowed.headers  # bearer tokens, never cookies
        answer = await auditor.get("/v1/audit/events", headers={"Origin": origin})
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin

    for origin in ("http://evil.example", f"http://127.0.0.1:{port + 1}", "null"):
        refused = await auditor.options("/v1/audit/events", headers={"Origin": origin, **preflight})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        # A simple request is answered (the bearer credential guards it) but the browser is not let read it.
        answer = await auditor.get("/v1/audit/events", headers={"Origin": origin})
        assert "access-control-allow-origin" not in answer.headers
