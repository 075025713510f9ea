"""Schemathesis against the OpenAPI of the gateway and of the audit API, with valid credentials: no 5xx.

`run_fuzz(gateway_url, audit_url, credentials, max_examples, seed=...)` returns a `FuzzReport`. Both
services must be listening (real HTTP, e.g. `http://127.0.0.1:<port>`); each one's schema is read from
its `/openapi.json`. `credentials` maps an identity to its bearer token: an agency id ("kr-desk", "kh-cnp",
...), "auditor" or "admin"; "admin" is required. `demo_credentials(home)` reads the desk, a partner, the
auditor and the administrator from a `deskbridge up` home (`bench.stack.Stack.home`, the tests' `stack.home`).

Before fuzzing, the run issues each identity a credential of its own (label "fuzz <identity>"), so what it
rotates (`POST /v1/credentials/rotate`) is never the caller's. It also registers an agency of its own with
fresh keys, and has the desk send that agency and the other agencies among the identities one notice, so
that its path parameters (`agency_id`, `kid`, `notice_id`, `case_ref`) can name things that exist.

Every operation of both documents then gets up to `max_examples` schema-valid cases, up to `max_examples`
schema-invalid ones (schemathesis positive and negative generation) and, where it has such path parameters,
up to `max_examples` schema-valid ones naming the run's own agency, key, notice and case. Each identity sends
an operation's first cases, one each; after that the identities not refused with 401 or 403 take turns. A
case fails when it is answered 5xx or not at all: `FuzzReport.ok` says there were none, and
`FuzzReport.summary()` says what ran and, for each failure, how to reproduce it (a curl command, with the
credential filtered out).

The run changes the stack it runs against: it registers agencies, keys, credentials and webhooks with
generated values, and may revoke, recall or erase what it made itself; give it a stack of its own or run it
last. Long-poll waits (`wait`) are capped at `MAX_WAIT_S` and event streams are read for `STREAM_READ_S`, so
a run ends.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis
import requests
import schemathesis
from hypothesis.strategies import SearchStrategy
from pydantic import BaseModel, Field
from schemathesis import Case, GenerationMode
from schemathesis.core.result import Err

from services.cli.profiles import Profile
from services.envelope.keys import AgencyKeys

DEMO_IDENTITIES = ("kr-desk", "kh-cnp", "auditor", "admin")  # the desk, a partner, and the two other roles
ROLES = ("auditor", "admin")  # any other identity is an agency
MAX_WAIT_S = 1.0
STREAM_READ_S = 1.0
REQUEST_TIMEOUT_S = 30.0
ROTATION = ("POST", "/v1/credentials/rotate")
BODY_SHOWN = 500  # characters of a failing response's body kept in the report
KNOWN = "known ids"  # the pass whose path parameters name what the run made


class Failure(BaseModel):
    """Cases answered 5xx (`status`) or not at all (`status` None) alike: `count` of them, the first shown."""

    api: str
    method: str
    path: str
    status: int | None
    mode: str
    identity: str
    detail: str = Field(description="The response body, or why no response came.")
    reproduction: str = Field(description="A curl command sending the first such case; credential filtered.")
    count: int = 1


class OperationResult(BaseModel):
    api: str
    method: str
    path: str
    cases: int = 0
    statuses: dict[str, int] = Field(default_factory=dict, description="Cases by response status class.")
    refused: list[str] = Field(default_factory=list, description="Identities answered 401 or 403 first.")
    not_generated: list[str] = Field(
        default_factory=list, description="Generation modes schemathesis had no case for, and why."
    )

    @property
    def label(self) -> str:
        return f"{self.api} {self.method} {self.path}"


class FuzzReport(BaseModel):
    max_examples: int
    seed: int | None
    identities: list[str]
    known: dict[str, str] = Field(description="The path parameter values the run made for itself.")
    operations: list[OperationResult]
    failures: list[Failure]

    @property
    def cases(self) -> int:
        return sum(o.cases for o in self.operations)

    @property
    def statuses(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for operation in self.operations:
            total.update(operation.statuses)
        return dict(sorted(total.items()))

    @property
    def ok(self) -> bool:
        """No case failed, and every operation was tried."""
        return not self.failures and all(o.cases for o in self.operations)

    def summary(self) -> str:
        statuses = ", ".join(f"{k}: {v}" for k, v in self.statuses.items())
        lines = [
            f"schemathesis: {len(self.operations)} operations, {self.cases} cases ({statuses}) as "
            f"{', '.join(self.identities)}; max_examples {self.max_examples}, seed {self.seed}",
        ]
        for failure in self.failures:
            answer = f"answered {failure.status}" if failure.status is not None else "no answer"
            lines += [
                f"FAIL {failure.api} {failure.method} {failure.path}: {answer} x{failure.count} "
                f"({failure.mode}, as {failure.identity}): {failure.detail}",
                f"  {failure.reproduction}",
            ]
        for operation in self.operations:
            if not operation.cases:
                lines.append(f"UNTESTED {operation.label}: {'; '.join(operation.not_generated)}")
        if self.ok:
            lines.append("no 5xx, every case answered, every operation tried")
        return "\n".join(lines)


def demo_credentials(home: Path, identities: tuple[str, ...] = DEMO_IDENTITIES) -> dict[str, str]:
    """The bearer tokens the demo enrolment saved under `home`, one per identity."""
    return {name: Profile(home, name).credential() for name in identities}


async def run_fuzz(
    gateway_url: str,
    audit_url: str,
    credentials: Mapping[str, str],
    max_examples: int = 50,
    *,
    seed: int | None = None,
) -> FuzzReport:
    """Runs in a worker thread (schemathesis and requests block), so the servers may share this event loop."""
    if "admin" not in credentials:
        raise ValueError("the fuzz needs an 'admin' credential, to issue the credentials it works with")
    if max_examples < 1:
        raise ValueError("max_examples must be at least 1")
    return await asyncio.to_thread(
        _run, {"gateway": gateway_url, "audit": audit_url}, dict(credentials), max_examples, seed
    )


def _run(
    apis: dict[str, str], credentials: dict[str, str], max_examples: int, seed: int | None
) -> FuzzReport:
    with requests.Session() as session:
        gateway = _Gateway(session, apis["gateway"])
        tokens = {name: gateway.issue_credential(name, credentials["admin"]) for name in credentials}
        known = gateway.make_known(tokens)
    operations: list[OperationResult] = []
    failures: dict[tuple[str, str, str, int | None, str], Failure] = {}
    for api, url in apis.items():
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=REQUEST_TIMEOUT_S)
        for result in schema.get_all_operations():
            if isinstance(result, Err):
                error = result.err()
                unread = OperationResult(api=api, method=error.method or "?", path=error.path or "?")
                unread.not_generated.append(f"the operation cannot be read: {error}")
                operations.append(unread)
                continue
            operation = result.ok()
            run = _OperationRun(api, url, operation.method.upper(), operation.path, tokens, failures)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                run.explore(operation.as_strategy(mode), mode.value, max_examples, seed)
            names = {p.name for p in operation.path_parameters}
            if names and names <= known.keys():
                fixed = {name: known[name] for name in names}
                run.explore(operation.as_strategy(path_parameters=fixed), KNOWN, max_examples, seed)
            operations.append(run.result)
    return FuzzReport(
        max_examples=max_examples,
        seed=seed,
        identities=list(tokens),
        known=known,
        operations=operations,
        failures=list(failures.values()),
    )


@dataclass
class _Gateway:
    """The few plain calls that set the run up; any refusal stops it, since the stack is not usable."""

    session: requests.Session
    url: str

    def call(self, method: str, path: str, token: str, body: dict[str, Any] | None, expect: int) -> Any:
        response = self.session.request(
            method,
            f"{self.url}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=REQUEST_TIMEOUT_S,
        )
        if response.status_code != expect:
            raise RuntimeError(
                f"fuzz setup: {method} {path} answered {response.status_code}: {response.text[:300]}"
            )
        return response.json()

    def issue_credential(self, name: str, admin: str) -> str:
        role, agency = (name, None) if name in ROLES else ("agency", name)
        body = {"role": role, "agency": agency, "label": f"fuzz {name}"}
        return str(self.call("POST", "/v1/admin/credentials", admin, body, 201)["token"])

    def make_known(self, tokens: dict[str, str]) -> dict[str, str]:
        """An agency with keys of the run's own and, if the desk is among the identities, one notice."""
        agency = f"fuzz-{uuid.uuid4().hex[:8]}"
        admin = tokens["admin"]
        self.call("POST", "/v1/admin/agencies", admin, {"id": agency, "name": "schemathesis fuzz"}, 201)
        keys = AgencyKeys.generate(agency)
        for jwk in keys.public_jwks():
            self.call("POST", f"/v1/admin/agencies/{agency}/keys", admin, {"jwk": jwk}, 201)
        known = {"agency_id": agency, "kid": keys.signing_kid}
        kinds = {a["id"]: a["kind"] for a in self.call("GET", "/v1/directory/agencies", admin, None, 200)}
        desk = next((name for name in tokens if kinds.get(name) == "desk"), None)
        if desk is not None:
            notice_id, case_ref = str(uuid.uuid4()), f"FZ-2025-{uuid.uuid4().hex[:8].upper()}"
            partners = [name for name in tokens if kinds.get(name) == "partner"]
            draft = {
                "notice_id": notice_id,
                "type": "intel_report",
                "priority": "routine",
                "tlp": "green",
                "case_ref": case_ref,
                "recipients": [agency, *partners],
                "summary": "A notice the schemathesis fuzz sent itself, for its path parameters to name.",
            }
            self.call("POST", "/v1/notices", tokens[desk], draft, 202)
            known |= {"notice_id": notice_id, "case_ref": case_ref}
        return known


@dataclass
class _OperationRun:
    """One operation's cases, whichever pass made them; the failures dict is shared across operations."""

    api: str
    url: str
    method: str
    path: str
    tokens: dict[str, str]
    failures: dict[tuple[str, str, str, int | None, str], Failure]
    result: OperationResult = field(init=False)
    statuses: Counter[str] = field(default_factory=Counter)
    tried: set[str] = field(default_factory=set)
    refused: set[str] = field(default_factory=set)
    turn: int = 0

    def __post_init__(self) -> None:
        self.result = OperationResult(api=self.api, method=self.method, path=self.path)

    def explore(
        self, strategy: SearchStrategy[Case[Any]], mode: str, max_examples: int, seed: int | None
    ) -> None:
        @hypothesis.settings(
            max_examples=max_examples,
            deadline=None,
            database=None,
            # Every case is recorded rather than raised, so there is nothing to shrink.
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            suppress_health_check=list(hypothesis.HealthCheck),
        )
        @hypothesis.given(case=strategy)
        def exercise(case: Case[Any]) -> None:
            self.send(case, mode)

        test: Callable[[], None] = exercise if seed is None else hypothesis.seed(seed)(exercise)
        try:
            test()
        except (hypothesis.errors.Unsatisfiable, schemathesis.errors.SchemathesisError) as exc:
            # e.g. no invalid case exists for an operation without parameters or body
            self.result.not_generated.append(f"{mode}: {type(exc).__name__}: {str(exc)[:200]}")
        self.result.statuses = dict(sorted(self.statuses.items()))
        self.result.refused = sorted(self.refused)

    def identity(self) -> str:
        """Each identity once, then those admitted in turn (all of them if none was)."""
        for name in self.tokens:
            if name not in self.tried:
                self.tried.add(name)
                return name
        admitted = [n for n in self.tokens if n not in self.refused] or list(self.tokens)
        self.turn += 1
        return admitted[self.turn % len(admitted)]

    def send(self, case: Case[Any], mode: str) -> None:
        first = len(self.tried) < len(self.tokens)
        name = self.identity()
        headers = {"Authorization": f"Bearer {self.tokens[name]}"}
        _cap_wait(case)
        streams = self.path.endswith("/stream")
        timeout = (REQUEST_TIMEOUT_S, STREAM_READ_S) if streams else REQUEST_TIMEOUT_S
        self.result.cases += 1
        try:
            response = case.call(base_url=self.url, headers=headers, timeout=timeout)
        except requests.RequestException as exc:
            self.statuses["no answer"] += 1
            self.record(case, mode, name, headers, None, f"{type(exc).__name__}: {exc}")
            return
        self.statuses[f"{response.status_code // 100}xx"] += 1
        if first and response.status_code in (401, 403):
            self.refused.add(name)
        if response.status_code >= 500:
            body = response.content.decode("utf-8", "replace")[:BODY_SHOWN]
            self.record(case, mode, name, headers, response.status_code, body)
        elif (self.method, self.path) == ROTATION and response.status_code == 201:
            self.tokens[name] = str(response.json()["token"])  # the old one may be revoked already

    def record(
        self, case: Case[Any], mode: str, name: str, headers: dict[str, str], status: int | None, detail: str
    ) -> None:
        key = (self.api, self.method, self.path, status, detail)
        if key in self.failures:
            self.failures[key].count += 1
            return
        self.failures[key] = Failure(
            api=self.api,
            method=self.method,
            path=self.path,
            status=status,
            mode=mode,
            identity=name,
            detail=detail,
            reproduction=case.as_curl_command(headers=headers, base_url=self.url),
        )


def _cap_wait(case: Case[Any]) -> None:
    """The inbox long-poll may wait up to a minute for nothing; a shorter wait takes the same path."""
    wait = case.query.get("wait") if case.query else None
    if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > MAX_WAIT_S:
        case.query["wait"] = MAX_WAIT_S
