"""The crypto floor: what sealing and opening a ~4 KB notice costs, next to the bare primitives under it,
measured in the same run so the two can be compared."""

from __future__ import annotations

import os
import timeit
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import OKPKey

from bench.stats import Figure
from schemas.notices import Notice
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import open_envelope, parse_envelope, seal_notice, verify_outer

NOTICE_BYTES = 4096
RECIPIENT_COUNTS = (1, 3, 10)
OUTER_CHECK = "parse + verify outer signature (3 recipients)"


def notice_of(
    sender: str, recipients: Sequence[str], priority: str = "immediate", size: int = NOTICE_BYTES
) -> Notice:
    """A notice whose signed plaintext (canonical JSON) is about `size` bytes, sent now."""
    body = {
        "notice_id": str(uuid.uuid4()),
        "type": "kidnapping_confinement",
        "priority": priority,
        "tlp": "amber",
        "case_ref": f"KD-2025-{uuid.uuid4().int % 10_000:04d}",
        "recipients": list(recipients),
        "summary": "Korean national confined at a compound in Sihanoukville; ransom demanded.",
        "subjects": [{"name_latin": "KIM Min-jun", "name_hangul": "김민준", "nationality": "KOR"}],
        "locations": [{"country": "KH", "province": "Preah Sihanouk", "text": "compound near Otres"}],
    }
    draft = Notice(**body, sender=sender, sent_at=datetime.now(UTC))
    padding = max(0, size - len(draft.model_dump_json(exclude_none=True)) - len(',"details":""'))
    return draft.model_copy(update={"details": "x" * padding})


def encryption_key(keys: AgencyKeys) -> PublicKey:
    return next(k for k in keys.public_keys() if k.kid == keys.encryption_kid)


def signing_key(keys: AgencyKeys) -> PublicKey:
    return next(k for k in keys.public_keys() if k.kid == keys.signing_kid)


def _per_op_us(work: Callable[[], object], number: int, repeats: int) -> Figure:
    """`repeats` runs of `number` calls each; every run gives one sample, the mean per call."""
    work()  # warm caches and lazy imports outside the timing
    runs = timeit.Timer(work).repeat(repeat=repeats, number=number)
    return Figure.of_durations([seconds / number * 1e6 for seconds in runs])


def crypto_floor(number: int, repeats: int) -> dict[str, Figure]:
    """Microseconds per operation, by name."""
    sender = AgencyKeys.generate("bench-sender")
    readers = [AgencyKeys.generate(f"bench-reader-{i:02d}") for i in range(max(RECIPIENT_COUNTS))]
    directory = {k.kid: k for k in [signing_key(sender), *(signing_key(r) for r in readers)]}
    figures: dict[str, Figure] = {}
    for count in RECIPIENT_COUNTS:
        group = readers[:count]
        notice = notice_of(sender.agency, [r.agency for r in group])
        keys = [encryption_key(r) for r in group]
        seal = partial(seal_notice, notice, sender.signer(), keys)
        figures[f"seal, {count} recipient(s)"] = _per_op_us(seal, number, repeats)
        raw = seal()
        opening = partial(_open, raw, group[-1].decryption_keys(), directory)
        figures[f"open, {count} recipient(s)"] = _per_op_us(opening, number, repeats)
        if count == 3:
            outer_key = directory[parse_envelope(raw).kid]
            figures["parse envelope (3 recipients)"] = _per_op_us(
                partial(parse_envelope, raw), number, repeats
            )
            figures[OUTER_CHECK] = _per_op_us(partial(_check_outer, raw, outer_key), number, repeats)
    figures.update(primitives(number, repeats))
    return figures


def _open(raw: bytes, mine: Mapping[str, OKPKey], directory: Mapping[str, PublicKey]) -> Notice:
    return open_envelope(parse_envelope(raw), mine, directory.__getitem__)


def _check_outer(raw: bytes, key: PublicKey) -> None:
    """What the gateway, ingest and audit each do to every envelope before any database work."""
    verify_outer(parse_envelope(raw), key)


def primitives(number: int, repeats: int) -> dict[str, Figure]:
    """The operations the envelope is made of, straight from `cryptography` (OpenSSL)."""
    message = os.urandom(NOTICE_BYTES)
    signer = Ed25519PrivateKey.generate()
    signature = signer.sign(message)
    verifier = signer.public_key()
    ours, theirs = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    aead, nonce = AESGCM(AESGCM.generate_key(256)), os.urandom(12)
    sealed = aead.encrypt(nonce, message, None)
    return {
        "Ed25519 sign 4 KB": _per_op_us(lambda: signer.sign(message), number, repeats),
        "Ed25519 verify 4 KB": _per_op_us(lambda: verifier.verify(signature, message), number, repeats),
        "X25519 key agreement": _per_op_us(lambda: ours.exchange(theirs), number, repeats),
        "AES-256-GCM encrypt 4 KB": _per_op_us(lambda: aead.encrypt(nonce, message, None), number, repeats),
        "AES-256-GCM decrypt 4 KB": _per_op_us(lambda: aead.decrypt(nonce, sealed, None), number, repeats),
    }
