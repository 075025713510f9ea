"""Each API documents its authentication on every route (the OpenAPI is generated from the code)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI

from services.audit.app import create_app as create_audit_app
from services.gateway.app import create_app as create_gateway_app
from services.platform.settings import Settings


@pytest.mark.parametrize("make", [create_gateway_app, create_audit_app], ids=["gateway", "audit"])
def test_every_operation_requires_a_bearer_credential(make: Any) -> None:
    app: FastAPI = make(Settings())
    spec = app.openapi()
    schemes = spec["components"]["securitySchemes"]
    assert [s["scheme"] for s in schemes.values()] == ["bearer"]
    operations = [(path, method, op) for path, ops in spec["paths"].items() for method, op in ops.items()]
    assert operations
    for path, method, operation in operations:
        assert operation.get("security") == [{name: []} for name in schemes], (method, path)
        assert "401" in operation["responses"] or "403" in operation["responses"], (method, path)
        assert "credential" in operation["summary"] or "signature" in operation["summary"], (method, path)
