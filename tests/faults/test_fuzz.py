"""schemathesis against both APIs' OpenAPI on the running stack, as each role: no 5xx, every case answered."""

from __future__ import annotations

from faults.fuzz import demo_credentials, run_fuzz
from tests.conftest import Stack


async def test_no_operation_answers_5xx_to_any_role(stack: Stack) -> None:
    report = await run_fuzz(stack.gateway_url, stack.audit_url, demo_credentials(stack.home), max_examples=60)
    print(report.summary())
    assert report.ok, report.summary()
