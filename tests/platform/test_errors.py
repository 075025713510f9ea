"""One error family: every code raised anywhere is in the table of services/platform/problems.py, and
docs/errors.md lists exactly that table; the HTTP mapping and the CLI line come from it."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from starlette.datastructures import URL

import services
from devstack.kafka import free_port
from services.audit.app import create_app as create_audit_app
from services.gateway.app import create_app as create_gateway_app
from services.platform.database import make_engine
from services.platform.errors import DatabaseUnavailable, Error
from services.platform.outage import TRANSIENT
from services.platform.problems import PROBLEM_TYPES, one_line, problem_type
from services.platform.settings import Settings
from services.platform.views import install_error_handlers, problem

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(
    r"^\| `(?P<code>[a-z_]+)` \| (?P<status>\d{3}) \| (?P<title>[^|]+) \| [^|]+ \| (?P<dl>yes)? ?\|$"
)


def _error_classes() -> dict[str, type[Error]]:
    for module in pkgutil.walk_packages(services.__path__, "services."):
        if not module.name.endswith(".__main__"):  # importing one runs its service
            importlib.import_module(module.name)
    found: dict[str, type[Error]] = {}
    pending: list[type[Error]] = [Error]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending += cls.__subclasses__()
    return found


def _raised_codes() -> set[tuple[str, str]]:
    """(where, code) for every string literal passed as the code of a named error, and every class's
    own code, found by reading the source."""
    classes = _error_classes()
    codes = {(f"{cls.__module__}.{name}", cls.code) for name, cls in classes.items()}
    for path in (ROOT / "services").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
                continue
            name = node.func.id
            if name in classes:
                params = list(inspect.signature(classes[name].__init__).parameters)[1:]
                if "code" not in params:
                    continue
                position = params.index("code")
                args = {i: a for i, a in enumerate(node.args)}
                arg = args.get(position) or next((k.value for k in node.keywords if k.arg == "code"), None)
            elif name in ("problem", "one_line"):
                arg = node.args[1] if name == "problem" and len(node.args) > 1 else node.args[0]
            else:
                continue
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                codes.add((f"{path.relative_to(ROOT)}:{node.lineno}", arg.value))
    return codes


def test_every_code_raised_is_in_the_table() -> None:
    unknown = sorted((where, code) for where, code in _raised_codes() if code not in PROBLEM_TYPES)
    assert not unknown, unknown


def test_the_scan_finds_codes_at_their_raise_sites() -> None:
    """The scan itself works: a sample of codes raised in different ways is found."""
    found = {code for _, code in _raised_codes()}
    assert {"duplicate_notice", "unknown_agency", "bad_cursor", "checkpoint_refused", "forbidden"} <= found
    assert {"kafka_unavailable", "key_file", "recall_refused"} <= found


def test_docs_list_exactly_the_table() -> None:
    listed = {}
    for line in (ROOT / "docs" / "errors.md").read_text().splitlines():
        match = ROW.match(line)
        if match:
            listed[match["code"]] = (int(match["status"]), match["title"].strip(), bool(match["dl"]))
    table = {k: (t.status, t.title, t.dead_letter) for k, t in PROBLEM_TYPES.items()}
    assert listed == table


def test_a_problem_document_names_its_type_and_code() -> None:
    response = problem(URL("http://gw.example:8080/"), "duplicate_notice", "notice id x was already used")
    assert response.status_code == 409
    assert response.media_type == "application/problem+json"
    body = response.body.decode()
    assert '"type":"http://gw.example:8080/problems/duplicate_notice"' in body
    assert '"code":"duplicate_notice"' in body and '"title":"Notice id already used"' in body


@pytest.mark.parametrize("code", ["stale", "rate_limited", "no_such_code"])
def test_each_code_has_one_status_and_an_unknown_code_is_internal(code: str) -> None:
    kind = problem_type(code)
    assert kind.code == (code if code in PROBLEM_TYPES else "internal_error")
    assert 400 <= kind.status < 600


def test_the_cli_line_carries_detail_and_code() -> None:
    assert one_line("bad_cursor", "not a cursor this server issued") == (
        "error: not a cursor this server issued [bad_cursor]"
    )


# What routes raise, as the HTTP answer says it: only what the database driver or Kafka raised is an outage.
RAISED: dict[str, tuple[Exception, int, str]] = {
    # datetime.fromtimestamp beyond the platform's time_t: a bad value, not the database going away
    "time_t": (OSError(75, "Value too large for defined data type"), 500, "internal_error"),
    "refused_elsewhere": (ConnectionRefusedError(111, "Connection refused"), 500, "internal_error"),
    "timed_out_elsewhere": (TimeoutError(), 500, "internal_error"),
    "database": (DatabaseUnavailable("connecting failed"), 503, "database_unavailable"),
    "starting_up": (asyncpg.CannotConnectNowError("starting up"), 503, "database_unavailable"),
}


async def test_only_the_database_or_kafka_out_of_reach_is_an_outage() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raising(name: str) -> None:
        raise RAISED[name][0]

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for name, (exc, status, code) in RAISED.items():
            response = await client.get(f"/raise/{name}")
            assert response.status_code == status, (name, response.text)
            assert isinstance(exc, TRANSIENT) == (status == 503), name  # the consumers retry the same
            if status == 503:
                assert response.json()["code"] == code and response.headers["retry-after"].isdigit()
            else:
                assert "retry-after" not in response.headers


async def test_connecting_to_a_database_that_is_not_there_is_named_an_outage() -> None:
    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/deskbridge")
    try:
        with pytest.raises(DatabaseUnavailable, match="ConnectionRefusedError") as raised:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        assert isinstance(raised.value.__cause__, ConnectionRefusedError)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("make_app", [create_gateway_app, create_audit_app])
async def test_each_api_serves_the_page_its_problem_types_name(make_app: Callable[[Settings], Any]) -> None:
    """A problem's `type` is `<API>/problems/<code>`: both APIs answer it with the code's page, and a path
    no route has with a problem document of its own."""
    transport = httpx.ASGITransport(app=make_app(Settings()))  # no lifespan: these routes need no state
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        page = await client.get("/problems/duplicate_notice")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Notice id already used" in page.text and "409" in page.text
        missing = await client.get("/v1/no-such-route")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
        body = missing.json()
        assert body["code"] == "not_found" and body["type"] == "http://api.example/problems/not_found"
        assert (await client.get(body["type"].removeprefix("http://api.example"))).status_code == 200
        unknown = await client.get("/problems/no_such_code")
        assert unknown.status_code == 404 and unknown.json()["code"] == "not_found"


async def test_an_unexpected_failure_is_a_problem_document_that_tells_nothing_of_its_cause() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("SELECT secret FROM somewhere")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "internal_error" and "secret" not in response.text
