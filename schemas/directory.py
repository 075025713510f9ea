"""The signed directory: every agency and its public keys, signed by the desk's directory key."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DIRECTORY_TYP = "deskbridge-directory+jws"


def valid_at(nbf: int, exp: int | None, revoked_at: int | None, t: float) -> bool:
    """A key is usable for something signed or sealed at Unix time `t` inside its window [nbf, exp]
    and before it was revoked."""
    if revoked_at is not None and revoked_at <= t:
        return False
    return nbf <= t and (exp is None or t <= exp)


class DirectoryKey(BaseModel):
    """A public JWK (RFC 7517) with the directory's own members: status and validity window."""

    model_config = ConfigDict(extra="allow")

    kid: str = Field(description="RFC 7638 thumbprint of the key.")
    kty: Literal["OKP"]
    crv: Literal["Ed25519", "X25519"]
    x: str
    use: Literal["sig", "enc"]
    alg: str
    status: Literal["active", "pending", "expired", "revoked"] = Field(
        description="As of the document's iat: usable for new envelopes only when active."
    )
    nbf: int = Field(description="Not valid before (Unix seconds).")
    exp: int | None = Field(default=None, description="Not valid after (Unix seconds); none if open-ended.")
    revoked_at: int | None = Field(default=None, description="When it was revoked (Unix seconds).")

    def public_jwk(self) -> dict[str, Any]:
        return {"kty": self.kty, "crv": self.crv, "x": self.x}

    def valid_at(self, at: datetime) -> bool:
        return valid_at(self.nbf, self.exp, self.revoked_at, at.timestamp())


class DirectoryAgency(BaseModel):
    id: str
    name: str
    kind: Literal["desk", "partner"]
    keys: list[DirectoryKey]


class DirectoryDocument(BaseModel):
    """The payload of the signed directory JWS."""

    iss: str = "deskbridge-directory"
    iat: int = Field(description="When the gateway signed it (Unix seconds); clients refuse an old one.")
    agencies: list[DirectoryAgency]

    def agency(self, agency_id: str) -> DirectoryAgency | None:
        return next((a for a in self.agencies if a.id == agency_id), None)


class SignedDirectory(BaseModel):
    jws: str = Field(
        description=f"Compact JWS, alg Ed25519, typ {DIRECTORY_TYP}, payload a DirectoryDocument."
    )
    kid: str = Field(description="Thumbprint of the directory key: pin it out of band.")
