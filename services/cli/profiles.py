"""Where the CLI keeps each identity it acts as: `<home>/<name>/credential` and `keys.jwks.json`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from services.envelope.keys import AgencyKeys, write_owner_only
from services.platform.errors import Error

CREDENTIAL_FILE = "credential"


class ProfileError(Error):
    """An identity's folder lacks what the command needs, or already holds what it would overwrite."""

    code = "key_file"


@dataclass(frozen=True)
class Profile:
    home: Path
    name: str

    @property
    def folder(self) -> Path:
        return self.home / self.name

    def credential(self) -> str:
        path = self.folder / CREDENTIAL_FILE
        try:
            return path.read_text().strip()
        except FileNotFoundError as exc:
            raise ProfileError(f"no credential for {self.name!r} at {path}") from exc

    def save_credential(self, token: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / CREDENTIAL_FILE
        write_owner_only(path, token + "\n")
        return path

    def keys(self) -> AgencyKeys:
        return AgencyKeys.load(self.folder)
