"""The auditor's route to one notice's evidence bundle."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from schemas.api import BIGINT_MAX
from schemas.audit import EvidenceBundle
from services.evidence.export import AcknowledgementSource, export_evidence
from services.platform.views import ERRORS, Session
from services.transparency.views import Auditor, Checkpoints, Tree

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=ERRORS)


def _acknowledgements(request: Request) -> AcknowledgementSource:
    source: AcknowledgementSource = request.app.state.acknowledgements
    return source


Acknowledgements = Annotated[AcknowledgementSource, Depends(_acknowledgements)]


@router.get(
    "/evidence/{notice_id}",
    summary="One notice's evidence bundle: its leaves with inclusion proofs in a signed checkpoint, the "
    "recipients' receipts and the keys to check them, for offline checks (auditor credential).",
)
async def get_evidence(
    _: Auditor,
    session: Session,
    publisher: Checkpoints,
    tree: Tree,
    acknowledgements: Acknowledgements,
    notice_id: uuid.UUID,
    size: Annotated[
        int | None,
        Query(
            ge=1,
            le=BIGINT_MAX,
            description="Prove against the checkpoint of this size (it must cover every leaf of the notice) "
            "instead of the latest, which is signed on the spot if it does not cover them yet.",
        ),
    ] = None,
) -> EvidenceBundle:
    return await export_evidence(session, publisher, acknowledgements, str(notice_id), size, tree)
