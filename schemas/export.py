"""`python -m schemas.export`: writes the JSON Schemas of the boundary models into schemas/json/. The AsyncAPI
document (schemas/asyncapi.json) needs the services' own names too, so services/gateway/asyncapi.py makes it;
`make schemas` runs both."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.audit import AuditRecord, EvidenceBundle
from schemas.directory import DirectoryDocument
from schemas.envelopes import FlattenedJws, GeneralJwe, RoutingHeader
from schemas.events import Event
from schemas.notices import Notice, NoticeDraft

MODELS: dict[str, type[BaseModel]] = {
    "notice-draft": NoticeDraft,
    "notice": Notice,
    "routing-header": RoutingHeader,
    "envelope-outer-jws": FlattenedJws,
    "envelope-jwe": GeneralJwe,
    "event": Event,
    "audit-record": AuditRecord,
    "evidence-bundle": EvidenceBundle,
    "directory": DirectoryDocument,
}
FOLDER = Path(__file__).parent / "json"


def rendered() -> dict[str, str]:
    """File name -> content, exactly as written (tests compare against the committed files)."""
    out = {}
    for name, model in MODELS.items():
        schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **model.model_json_schema()}
        out[f"{name}.schema.json"] = json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    return out


def main() -> None:
    FOLDER.mkdir(exist_ok=True)
    for filename, text in rendered().items():
        (FOLDER / filename).write_text(text)
        print(f"wrote schemas/json/{filename}")


if __name__ == "__main__":
    main()
