"""What the delivery package refuses, by code (docs/errors.md): a cursor it never issued, a notice not in
the caller's inbox or no longer served, a webhook it will not register, drive or replay."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from services.platform.errors import Error


class DeliveryError(Error):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail, code)


class AddressRefused(DeliveryError):
    """A webhook host that is, or resolves to, an address deskbridge does not connect to."""

    def __init__(self, host: str, address: IPv4Address | IPv6Address, why: str) -> None:
        super().__init__("invalid_webhook", f"{host} is at {address}, a {why} address")
        self.host = host
        self.address = address
        self.why = why
