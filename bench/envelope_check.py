"""What reading one envelope costs each service before any database work: parse, the outer signature, the
envelope's SHA-256 as often as that service asks for it. A ~12 KB envelope (a 4 KB notice to three
recipients, bench.crypto's), run as `python -m bench.envelope_check [calls] [runs]`; prints medians and
p99 in microseconds of this process's CPU time, which other work on a busy machine disturbs far less than
wall-clock time."""

from __future__ import annotations

import base64
import sys
import time
import timeit
from collections.abc import Callable

from bench.crypto import encryption_key, notice_of, signing_key
from bench.stats import Figure
from services.envelope.keys import AgencyKeys, PublicKey
from services.envelope.service import parse_envelope, seal_notice, sha256_hex, verify_outer

RECIPIENTS = 3
# How often each service's happy path reads `ParsedEnvelope.sha256` (gateway: the duplicate check twice and
# the submission row; ingest: the notice row; audit: its record).
HASHES = {"gateway": 3, "ingest": 1, "audit": 1}


def _service(raw: bytes, key: PublicKey, hashes: int) -> Callable[[], None]:
    def run() -> None:
        envelope = parse_envelope(raw)
        for _ in range(hashes):
            _ = envelope.sha256
        verify_outer(envelope, key)

    return run


def measure(number: int, repeats: int) -> dict[str, Figure]:
    sender = AgencyKeys.generate("bench-sender")
    readers = [AgencyKeys.generate(f"bench-reader-{i:02d}") for i in range(RECIPIENTS)]
    raw = seal_notice(
        notice_of(sender.agency, [r.agency for r in readers]),
        sender.signer(),
        [encryption_key(r) for r in readers],
    )
    key = signing_key(sender)
    parsed = parse_envelope(raw)
    signed = f"{parsed.outer.protected}.{parsed.outer.payload}".encode()
    signature = base64.urlsafe_b64decode(parsed.outer.signature + "==")
    work: dict[str, Callable[[], object]] = {
        "parse_envelope": lambda: parse_envelope(raw),
        "verify_outer": lambda: verify_outer(parsed, key),
        "Ed25519 verify alone (the same bytes)": lambda: key.ed25519().verify(signature, signed),
        "sha256_hex(envelope)": lambda: sha256_hex(raw),
        **{f"{name}: parse + {n}x sha256 + verify": _service(raw, key, n) for name, n in HASHES.items()},
    }
    figures = {}
    for name, call in work.items():
        call()
        runs = timeit.Timer(call, timer=time.process_time).repeat(repeat=repeats, number=number)
        figures[name] = Figure.of_durations([s / number * 1e6 for s in runs])
    figures["envelope bytes"] = Figure(len(raw), len(raw), 1)
    return figures


def main() -> None:
    number, repeats = (int(a) for a in (sys.argv[1:] + ["500", "15"])[:2])
    for name, figure in measure(number, repeats).items():
        print(f"{name:45s} median {figure.median:9.1f}  p99 {figure.p99:9.1f}")


if __name__ == "__main__":
    main()
