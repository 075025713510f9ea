"""Envelopes as large as docs/envelope.md 4.4 allows open: the 2 MiB cap is the only limit on their parts.

joserfc's own defaults (a 128,000-byte JWS payload, a 64 KiB ciphertext, a 1 KiB JWE protected header)
once refused a notice with a 40 KB attachment as `bad_signature`, and one to some twenty agencies as
`undecryptable`. Pure unit tests: keys are generated in memory.
"""

from __future__ import annotations

import pytest

from schemas.notices import Notice
from services.envelope.keys import AgencyKeys
from services.envelope.service import MAX_ENVELOPE_BYTES, parse_envelope, verify_outer
from tests.envelope.test_service import DESK, PARTNERS, World, expect, jwc_decrypt, make_notice, seal
from tests.support.sealing import LARGEST_ATTACHMENT, attachment, largest_fitting

# Fifty agencies (the most a notice may address) with the longest ids allowed: the largest routing header.
CROWD = [f"agency-{i:02d}-" + "x" * 54 for i in range(50)]


def world_of(agencies: list[str]) -> World:
    keys = {name: AgencyKeys.generate(name) for name in (DESK, *agencies)}
    return World(keys, {k.signing_kid: k.public_keys()[0] for k in keys.values()})


@pytest.fixture(scope="module")
def world() -> World:
    return world_of(list(PARTNERS))


@pytest.fixture(scope="module")
def crowd() -> World:
    return world_of(CROWD)


def opens_everywhere(world: World, notice: Notice, envelope: bytes, readers: list[str]) -> None:
    """Passes what admission checks (shape, outer signature) and opens for each reader, and for jwcrypto."""
    assert len(envelope) <= MAX_ENVELOPE_BYTES
    parsed = parse_envelope(envelope)
    verify_outer(parsed, world.lookup(parsed.kid))
    for reader in readers:
        assert world.open_as(reader, envelope) == notice
    assert jwc_decrypt(world, readers[-1], envelope).count(b".") == 2  # the inner compact JWS


@pytest.mark.parametrize("size", [0, 40_000, 60_000, 65_536, 100_000, 128_000, 500_000, LARGEST_ATTACHMENT])
def test_a_notice_with_an_attachment_of_any_allowed_size_opens(world: World, size: int) -> None:
    notice = make_notice(list(PARTNERS), attachments=[attachment(size)])
    opens_everywhere(world, notice, seal(world, notice), list(PARTNERS))


def test_the_largest_attachment_is_the_schemas_limit() -> None:
    assert len(attachment(LARGEST_ATTACHMENT)["data_b64"]) == 700_000
    with pytest.raises(ValueError, match="at most 700000 characters"):
        make_notice(list(PARTNERS), attachments=[attachment(LARGEST_ATTACHMENT + 1)])


def test_a_notice_to_fifty_agencies_with_the_longest_ids_opens(crowd: World) -> None:
    notice = make_notice(CROWD)
    opens_everywhere(crowd, notice, seal(crowd, notice), [CROWD[0], CROWD[-1]])


def test_the_fullest_envelope_under_the_cap_opens_and_three_bytes_more_are_oversize(crowd: World) -> None:
    """The largest attachment plus a second one grown until the envelope (to fifty agencies: the largest
    header) is as near 2 MiB as whole base64 quanta allow."""

    def sealed(extra: int) -> tuple[Notice, bytes]:
        notice = make_notice(CROWD, attachments=[attachment(LARGEST_ATTACHMENT), attachment(extra)])
        return notice, seal(crowd, notice)

    size = largest_fitting(lambda extra: sealed(extra)[1])
    notice, fullest = sealed(size)
    assert len(fullest) > MAX_ENVELOPE_BYTES - 16
    opens_everywhere(crowd, notice, fullest, [CROWD[0], CROWD[-1]])
    expect("oversize", lambda: parse_envelope(sealed(size + 3)[1]))
