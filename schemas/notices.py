"""Case notices as the desk and its partners write them (the plaintext inside an envelope)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

AGENCY_ID_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$"
CASE_REF_PATTERN = r"^[A-Z]{2,8}-[0-9]{4}-[0-9A-Z]{1,12}$"

AgencyId = Annotated[str, StringConstraints(pattern=AGENCY_ID_PATTERN)]
CaseRef = Annotated[str, StringConstraints(pattern=CASE_REF_PATTERN)]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=500, strip_whitespace=True)]
LongText = Annotated[str, StringConstraints(max_length=20_000)]


class NoticeType(StrEnum):
    missing_person = "missing_person"
    kidnapping_confinement = "kidnapping_confinement"
    wanted_person = "wanted_person"
    scam_compound = "scam_compound"
    victim_rescue_request = "victim_rescue_request"
    death_report = "death_report"
    intel_report = "intel_report"
    reply = "reply"


class Priority(StrEnum):
    flash = "flash"
    immediate = "immediate"
    routine = "routine"


class Tlp(StrEnum):
    """Traffic Light Protocol 2.0 labels."""

    clear = "clear"
    green = "green"
    amber = "amber"
    amber_strict = "amber+strict"
    red = "red"


class InterpolColour(StrEnum):
    yellow = "yellow"
    red = "red"
    blue = "blue"
    green = "green"
    black = "black"
    orange = "orange"
    purple = "purple"


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is outside the years 1 to 9999 once converted to UTC") from None


# RFC 3339 section 5.6 date-time, as JSON Schema's "date-time" means it (a missing offset is left to
# _aware, which names it). pydantic alone would also read a number, or a string of digits, as Unix time,
# which no other client's schema check takes.
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _rfc3339_text(value: object) -> object:
    if isinstance(value, datetime):  # made in Python, not read from text
        return value
    if not isinstance(value, str) or RFC3339.fullmatch(value) is None:
        raise ValueError("timestamp must be RFC 3339 text, e.g. 2025-03-31T09:00:00Z")
    return value


def _aware(value: datetime) -> datetime:
    if value.utcoffset() is None:
        raise ValueError("timestamp must carry a UTC offset (timezone), e.g. 2025-03-31T09:00:00Z")
    _in_utc(value)
    return value


def _read_as_utc(value: datetime) -> datetime:
    return _in_utc(value if value.utcoffset() is not None else value.replace(tzinfo=UTC))


# A time every stage can compare and store: with an offset, and within datetime's years in UTC too (year
# 9999 at -14:00 is year 10000 in UTC). Every boundary refuses the same values, so the gateway never takes
# what ingest, the database or the audit log would then fail on.
AwareDatetime = Annotated[datetime, BeforeValidator(_rfc3339_text), AfterValidator(_aware)]
# A time to compare with (a query's bounds): one without an offset is read as UTC; converted to UTC.
UtcDatetime = Annotated[datetime, AfterValidator(_read_as_utc)]


class Person(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name_latin: ShortText | None = None
    name_hangul: ShortText | None = None
    date_of_birth: date | None = None
    passport_number: Annotated[str, StringConstraints(max_length=32)] | None = None
    nationality: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2,3}$")] | None = None
    description: LongText | None = None

    @model_validator(mode="after")
    def _named(self) -> Person:
        if not (self.name_latin or self.name_hangul or self.description):
            raise ValueError("a subject needs a name (Latin or Hangul) or a description")
        return self


class Coordinates(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class Location(BaseModel):
    model_config = ConfigDict(extra="forbid")

    country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    province: ShortText | None = None
    text: LongText | None = None
    coordinates: Coordinates | None = None


class Attachment(BaseModel):
    """Travels inside the encrypted notice; the size cap keeps one notice under the broker's record limit."""

    model_config = ConfigDict(extra="forbid")

    filename: ShortText
    media_type: Annotated[str, StringConstraints(pattern=r"^[a-z]+/[a-zA-Z0-9.+-]+$")]
    data_b64: Annotated[str, StringConstraints(max_length=700_000, pattern=r"^[A-Za-z0-9+/=]*$")]


def _distinct(recipients: list[str]) -> list[str]:
    if len(set(recipients)) != len(recipients):
        raise ValueError("recipients must not repeat an agency")
    return recipients


Recipients = Annotated[list[AgencyId], Field(min_length=1, max_length=50), AfterValidator(_distinct)]


class NoticeDraft(BaseModel):
    """What a sender writes; the sender and send time are added when it is sealed."""

    model_config = ConfigDict(extra="forbid")

    notice_id: UUID = Field(description="Chosen by the sender; the idempotency key of the notice.")
    type: NoticeType
    priority: Priority
    tlp: Tlp
    case_ref: CaseRef
    recipients: Recipients
    summary: Annotated[str, StringConstraints(min_length=1, max_length=2_000)]
    details: LongText | None = None
    interpol_colour: InterpolColour | None = None
    subjects: list[Person] = Field(default_factory=list, max_length=50)
    locations: list[Location] = Field(default_factory=list, max_length=50)
    attachments: list[Attachment] = Field(default_factory=list, max_length=5)
    in_reply_to: UUID | None = None
    forwarded_from: UUID | None = Field(
        default=None, description="The notice this one passes on; TLP decides to whom it may go."
    )
    expires_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _reply_threads(self) -> NoticeDraft:
        if self.type is NoticeType.reply and self.in_reply_to is None:
            raise ValueError("a reply must name the notice it answers in in_reply_to")
        return self


class Notice(NoticeDraft):
    """The signed plaintext: a draft plus who sent it and when."""

    sender: AgencyId
    sent_at: AwareDatetime


class RecallRequest(BaseModel):
    """A control record on the notices topic, keyed by case so it follows the notice it withdraws."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notice_id: UUID
    case_ref: str
    sender: str
    requested_by: str
    requested_at: datetime
    reason: str | None = None


def is_agency_id(value: str) -> bool:
    return re.fullmatch(AGENCY_ID_PATTERN, value) is not None
