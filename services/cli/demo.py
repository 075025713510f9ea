"""Demo agencies for `deskbridge up`: the desk and three partners, each with its own keys and credential."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from schemas.events import Event
from services.cli.profiles import Profile
from services.envelope.keys import AgencyKeys
from services.platform.settings import Settings
from services.transparency.checkpoints import LOG_KEY_FILE, generate_log_key, save_log_vkey
from services.trust.service import issue_credential, list_agencies, register_agency, register_key
from services.trust.signed_directory import generate_directory_key, save_pin

DESK = ("kr-desk", "Korean National Police Agency - Korean Desk", "desk")
PARTNERS = [
    ("kh-cnp", "Cambodian National Police", "partner"),
    ("interpol-ncb-phnom-penh", "Interpol NCB Phnom Penh", "partner"),
    ("aseanapol", "ASEANAPOL Secretariat", "partner"),
]
ACTOR = "admin:bootstrap"


async def enrol(session: AsyncSession, home: Path, agency: str, name: str, kind: str) -> list[Event]:
    """Registers an agency with freshly generated keys; its private keys and credential go to its profile."""
    profile = Profile(home, agency)
    keys = AgencyKeys.generate(agency)
    keys.save(profile.folder)
    events = [await register_agency(session, agency, name, kind, ACTOR)]
    await session.flush()
    for jwk in keys.public_jwks():
        events.append(await register_key(session, agency, jwk, ACTOR))
    token, event = await issue_credential(session, "agency", agency, f"{agency} demo", ACTOR)
    profile.save_credential(token)
    return [*events, event]


async def bootstrap(
    session: AsyncSession, home: Path, log_origin: str = Settings.model_fields["audit_log_origin"].default
) -> list[Event]:
    """Idempotent: does nothing when agencies exist already. Caller commits, then publishes the events."""
    if await list_agencies(session):
        return []
    events: list[Event] = []
    for agency, name, kind in [DESK, *PARTNERS]:
        events += await enrol(session, home, agency, name, kind)
    for role in ("auditor", "admin"):
        token, event = await issue_credential(session, role, None, f"demo {role}", ACTOR)
        Profile(home, role).save_credential(token)
        events.append(event)
    # The desk's directory key signs the directory; each demo identity pins its public half, as a
    # partner would after checking the kid with the desk by phone.
    directory_key = generate_directory_key(Profile(home, DESK[0]).folder)
    # Likewise the audit log's checkpoint key: every identity pins its public half (a vkey) to verify
    # checkpoints with, offline if need be.
    desk = Profile(home, DESK[0]).folder
    log_key = generate_log_key(desk / LOG_KEY_FILE, log_origin)
    for identity in [DESK[0], *(p[0] for p in PARTNERS), "auditor", "admin"]:
        save_pin(Profile(home, identity).folder, directory_key.public())
        save_log_vkey(Profile(home, identity).folder, log_key)
    return events
