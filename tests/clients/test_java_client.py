"""The Java partner client (clients/java) seals envelopes that deskbridge's own code opens.

The JUnit tests (`cd clients/java && mvn -q -B test`) check the Java side against the published vectors;
this checks the other direction: the Java jar seals the vector notices with the vector keys, and
deskbridge's `parse_envelope`/`verify_outer`/`open_envelope` and jwcrypto open them, as
tests/envelope/test_vectors.py does. The jar is built by `make setup`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.envelope.test_vectors import VECTORS, jwc_open, load_vector, our_open, routing_by_hand

JAR = Path(__file__).resolve().parents[2] / "clients" / "java" / "target" / "deskbridge-partner.jar"

pytestmark = pytest.mark.skipif(shutil.which("java") is None, reason="no Java runtime")


def java_seal(name: str) -> bytes:
    """The envelope the Java client seals for tests/vectors/<name>.json with the vector keys."""
    if not JAR.exists():
        pytest.fail(f"{JAR} is not built: make setup (or cd clients/java && mvn -q -B package -DskipTests)")
    command = ["java", "-cp", str(JAR), "org.deskbridge.client.TestKeysSeal"]
    done = subprocess.run(
        [*command, str(VECTORS / "keys.json"), str(VECTORS / f"{name}.json")],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return done.stdout


@pytest.mark.parametrize("name", ["notice", "reply"])
def test_deskbridge_opens_what_the_java_client_seals(name: str) -> None:
    vector = load_vector(name)
    envelope = java_seal(name)
    assert envelope.startswith(b'{"payload":')
    for recipient in vector.recipients:
        assert our_open(envelope, recipient).model_dump(mode="json", exclude_none=True) == vector.notice
        opened = jwc_open(envelope, vector.sender, recipient)
        # Ed25519 is deterministic and the notice canonical: the inner JWS is the published one exactly.
        assert opened.inner == vector.jws
        assert opened.outer_header == {
            "alg": "Ed25519",
            "kid": opened.inner_header["kid"],
            "typ": "deskbridge-envelope+jws",
            "cty": "deskbridge-notice+jwe",
        }
        assert opened.jwe_header == {"enc": "A256GCM", "typ": "deskbridge-notice+jwe", "cty": "JOSE"} | (
            routing_by_hand(vector.notice)
        )
        assert opened.recipient_header["alg"] == "ECDH-ES+A256KW"
