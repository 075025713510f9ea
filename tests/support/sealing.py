"""Notices as the tests send them: a body with every field a real one carries, and `seal`, the one way a
test seals an envelope the way a partner does on its own machine (its keys, the recipients' current
encryption keys from their demo profiles)."""

from __future__ import annotations

import base64
import os
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from schemas.notices import Notice
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import MAX_ENVELOPE_BYTES, seal_notice

LARGEST_ATTACHMENT = 525_000  # bytes: 700,000 characters of base64, schemas/notices.py Attachment's limit


class HasHome(Protocol):
    """A running stack: its demo identities live under `home` (tests/conftest.py Stack)."""

    @property
    def home(self) -> Path: ...


def notice_body(recipients: list[str], **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "notice_id": str(uuid.uuid4()),
        "type": "kidnapping_confinement",
        "priority": "flash",
        "tlp": "amber",
        "case_ref": "KD-2025-0331",
        "recipients": recipients,
        "summary": "Korean national confined at a compound in Sihanoukville; ransom demanded.",
        "subjects": [{"name_latin": "KIM Min-jun", "name_hangul": "김민준", "nationality": "KOR"}],
        "locations": [{"country": "KH", "province": "Preah Sihanouk"}],
    }
    body.update(overrides)
    return body


def encryption_keys_of(stack: HasHome, agencies: list[str]) -> list[PublicKey]:
    """The current X25519 public key of each agency, from its demo profile: what a sender seals to."""
    out = []
    for agency in agencies:
        own = AgencyKeys.load(stack.home / agency)
        out += [k for k in own.public_keys() if k.kid == own.encryption_kid]
    return out


def seal(
    stack: HasHome,
    sender: AgencyKeys,
    recipients: list[str],
    sent_at: datetime | None = None,
    **overrides: Any,
) -> tuple[str, bytes]:
    """(notice id, envelope) of a notice `sender` seals now (or at `sent_at`) for `recipients`, with the
    body's fields changed by `overrides`."""
    body = notice_body(recipients, **overrides)
    notice = Notice(**body, sender=sender.agency, sent_at=sent_at or datetime.now(UTC))
    return body["notice_id"], seal_notice(notice, sender.signer(), encryption_keys_of(stack, recipients))


def attachment(size: int) -> dict[str, str]:
    """`size` random bytes as a notice carries them (standard base64)."""
    data = base64.b64encode(os.urandom(size)).decode()
    return {"filename": "evidence.bin", "media_type": "application/octet-stream", "data_b64": data}


def largest_fitting(envelope_of: Callable[[int], bytes]) -> int:
    """The largest size (in whole base64 quanta of 3 bytes, up to LARGEST_ATTACHMENT) for which the envelope
    `envelope_of(size)` is within the cap; `envelope_of(size + 3)` is over it."""
    low, high = 0, LARGEST_ATTACHMENT // 3
    assert len(envelope_of(3 * high)) > MAX_ENVELOPE_BYTES, "the cap is reached within one attachment"
    while high - low > 1:
        middle = (low + high) // 2
        fits = len(envelope_of(3 * middle)) <= MAX_ENVELOPE_BYTES
        low, high = (middle, high) if fits else (low, middle)
    return 3 * low
