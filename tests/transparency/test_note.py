"""C2SP signed notes, checkpoints and cosignatures, checked against the Go reference implementation's
vectors and by tampering. Pure: keys are generated in memory, nothing touches disk or network.

Vectors:
  golang.org/x/mod/sumdb/note, note_test.go and the package documentation (BSD-style licence): the
    PeterNeumann and EnochRoot keys, their signed note, and the manglings Go's NewVerifier and Open refuse
  c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature: the example checkpoint, its cosignature line
    and the example signed message "cosignature/v1\\ntime 1679315147\\n..."
  transparency-dev/formats, note/note_cosigv1_test.go TestCosignatureTimestamp: a cosignature's time
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.envelope.keys import SigningKey
from services.transparency.merkle import EMPTY_ROOT
from services.transparency.note import (
    MAX_SIGNATURES,
    SIG_COSIGNATURE_V1,
    Checkpoint,
    CosignatureSigner,
    CosignatureVerifier,
    NoteError,
    NoteSigner,
    NoteVerifier,
    cosignature_timestamp,
    key_id,
    open_checkpoint,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    signature_line,
    vkey,
)

# --- golang.org/x/mod/sumdb/note -----------------------------------------------------------------------
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6Ryy"
    "BwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1R"
    "vMc+QQ=\n"
)

# --- c2sp.org/tlog-checkpoint, c2sp.org/tlog-cosignature ---------------------------------------------
C2SP_BODY = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
C2SP_NOTE = (
    C2SP_BODY
    + "\n— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGz"
    "Gku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)


def peter_signer() -> NoteSigner:
    seed = base64.b64decode(PETER_SKEY.split("+", 4)[4])[1:]  # type byte 0x01, then the Ed25519 seed
    return NoteSigner("PeterNeumann", SigningKey.from_seed("test", seed))


def test_go_verifier_keys_parse_and_reencode() -> None:
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    assert isinstance(peter, NoteVerifier) and isinstance(enoch, NoteVerifier)
    assert (peter.name, peter.key_id.hex()) == ("PeterNeumann", "c74f20a3")
    assert (enoch.name, enoch.key_id.hex()) == ("EnochRoot", "af0cfe78")
    assert vkey(peter.name, peter.public_key) == PETER_VKEY
    assert vkey(enoch.name, enoch.public_key) == ENOCH_VKEY
    assert peter_signer().key_id == peter.key_id


def test_go_verifier_key_manglings_are_refused() -> None:
    """Go TestNewVerifier: every proper substring, every character bumped by one, and two keys whose
    key ID was recomputed for a wrong-length key and for an unknown algorithm."""
    bad = [PETER_VKEY[i:j] for i in range(len(PETER_VKEY) + 1) for j in range(i + 1, len(PETER_VKEY) + 1)]
    bad.remove(PETER_VKEY)
    bad += [PETER_VKEY[:i] + chr(ord(c) + 1) + PETER_VKEY[i + 1 :] for i, c in enumerate(PETER_VKEY)]
    bad += [
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ]
    accepted = []
    for text in bad:
        try:
            parse_vkey(text)
            accepted.append(text)
        except NoteError as exc:
            assert exc.code == "vkey_malformed"
    assert accepted == []


def test_go_signed_note_byte_for_byte() -> None:
    """Ed25519 is deterministic: our signer must write exactly what Go's note.Sign wrote."""
    assert sign_note(TEXT, [peter_signer()]) == TEXT + "\n" + PETER_SIG


def test_go_open() -> None:
    """Go TestOpen, with our semantics: unknown keys are ignored, a note no known key signed is refused."""
    peter, enoch = parse_vkey(PETER_VKEY), parse_vkey(ENOCH_VKEY)
    both = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    assert open_note(both, [peter]) == (TEXT, ("PeterNeumann",))
    assert open_note(both, [peter, enoch]) == (TEXT, ("PeterNeumann", "EnochRoot"))
    with pytest.raises(NoteError) as unverified:
        open_note(both, [])
    assert unverified.value.code == "note_unverified"

    with pytest.raises(NoteError) as ambiguous:
        open_note(TEXT + "\n" + ENOCH_SIG, [enoch, peter, enoch])
    assert ambiguous.value.code == "note_ambiguous_key"
    assert open_note(TEXT + "\n" + PETER_SIG, [enoch, peter, enoch])[1] == ("PeterNeumann",)

    for verifiers in ([peter], []):
        with pytest.raises(NoteError) as too_many:
            open_note(TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1), verifiers)
        assert too_many.value.code == "note_malformed"
    assert open_note(TEXT + "\n" + PETER_SIG * MAX_SIGNATURES, [peter])[1] == ("PeterNeumann",)

    with pytest.raises(NoteError) as invalid:
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [peter])
    assert invalid.value.code == "note_bad_signature"

    # Repeated signatures, and unknown ones (even a corrupted unknown one), leave one verified name.
    repeated = PETER_SIG * 2 + ENOCH_SIG * 2 + ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    assert open_note(TEXT + "\n" + repeated, [peter]) == (TEXT, ("PeterNeumann",))


@pytest.mark.parametrize(
    "note",
    [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        "\udcff" + TEXT + "\n" + PETER_SIG,  # Go's "\xff": not UTF-8
        TEXT
        + "\n"
        + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6Ry"
        "yBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        # and ours: bad base64, a name with '+', a key ID alone, non-canonical base64 (the same bytes)
        TEXT + "\n" + "— PeterNeumann x08go/ZJkuBS9UG!\n",
        TEXT
        + "\n"
        + "— Peter+Neumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpR"
        "Zb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + "— PeterNeumann x08gow==\n",
        TEXT + "\n" + PETER_SIG.replace("AM=\n", "AN=\n"),
    ],
)
def test_go_malformed_notes(note: str) -> None:
    with pytest.raises(NoteError) as refused:
        open_note(note, [parse_vkey(PETER_VKEY)])
    assert refused.value.code == "note_malformed"


# --- Checkpoints ---------------------------------------------------------------------------------------


def test_c2sp_example_checkpoint() -> None:
    checkpoint = Checkpoint.parse(C2SP_BODY)
    assert checkpoint == Checkpoint(
        "example.com/behind-the-sofa",
        20852163,
        base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="),
    )
    assert checkpoint.body() == C2SP_BODY
    body, signatures = parse_note(C2SP_NOTE)
    assert body == C2SP_BODY
    assert [s.name for s in signatures] == ["example.com/behind-the-sofa", "witness.example.com/w1"]
    assert cosignature_timestamp(signatures[1].signature) == 1679315147  # the spec's example message time


def test_checkpoint_extensions_and_empty_tree() -> None:
    empty = Checkpoint("log.example/audit", 0, EMPTY_ROOT, ("ext one", "ext two"))
    assert (
        empty.body()
        == "log.example/audit\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next one\next two\n"
    )
    assert Checkpoint.parse(empty.body()) == empty


@pytest.mark.parametrize(
    "text",
    [
        "",
        "log\n",
        "log\n1\n",
        "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",  # no final newline
        "\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",  # empty origin
        "log\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n+1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n 1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n\uff11\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",  # a fullwidth digit
        "log\n1_0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n" + "9" * 5000 + "\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
        "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV=\n",  # non-canonical base64
        "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\n",  # unpadded
        "log\n1\n47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU=\n",  # URL-safe alphabet
        "log\n1\nAAAA\n",  # not 32 bytes
        "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n",  # empty extension line
        "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\next\x07\n",
    ],
)
def test_malformed_checkpoints(text: str) -> None:
    with pytest.raises(NoteError) as refused:
        Checkpoint.parse(text)
    assert refused.value.code == "checkpoint_malformed"


LINE = st.text(st.characters(exclude_categories=["Cc", "Cs"]), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None, database=None)
@given(
    origin=LINE,
    size=st.integers(0, 2**64),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=st.lists(LINE, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root_hash: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root_hash, tuple(extensions))
    assert Checkpoint.parse(checkpoint.body()) == checkpoint


# --- Signing and opening checkpoints --------------------------------------------------------------------

ORIGIN = "deskbridge.example/audit"


def signed_checkpoint(
    log_key: SigningKey, *cosigners: CosignatureSigner, origin: str = ORIGIN
) -> tuple[Checkpoint, str]:
    checkpoint = Checkpoint(origin, 1234, b"\x42" * 32)
    return checkpoint, sign_note(checkpoint.body(), [NoteSigner(origin, log_key), *cosigners])


def test_checkpoint_sign_and_open() -> None:
    log_key = SigningKey.generate("test")
    checkpoint, note = signed_checkpoint(log_key)
    log = NoteVerifier(ORIGIN, log_key.public())
    assert open_checkpoint(note, ORIGIN, log) == (checkpoint, ())
    assert open_note(note, [log]) == (checkpoint.body(), (ORIGIN,))
    assert open_checkpoint(note, ORIGIN, parse_vkey(vkey(ORIGIN, log_key.public())))[0] == checkpoint


def refusal(
    note: str, origin: str, log: NoteVerifier, cosigners: tuple[CosignatureVerifier, ...] = ()
) -> str:
    with pytest.raises(NoteError) as refused:
        open_checkpoint(note, origin, log, cosigners)
    return refused.value.code


def test_checkpoint_refusals() -> None:
    log_key, other_key = SigningKey.generate("test"), SigningKey.generate("test")
    checkpoint, note = signed_checkpoint(log_key)
    log = NoteVerifier(ORIGIN, log_key.public())

    # A wrong key under the right name has another key ID: it is not the log's signature at all.
    assert refusal(note, ORIGIN, NoteVerifier(ORIGIN, other_key.public())) == "note_unverified"
    assert refusal(signed_checkpoint(other_key)[1], ORIGIN, log) == "note_unverified"
    # An origin swapped after signing breaks the signature; a genuine checkpoint of another log is refused.
    swapped = note.replace(ORIGIN + "\n", "elsewhere.example/log\n", 1)
    assert refusal(swapped, "elsewhere.example/log", log) == "note_bad_signature"
    other_log = NoteVerifier("elsewhere.example/log", log_key.public())
    _, elsewhere = signed_checkpoint(log_key, origin="elsewhere.example/log")
    assert refusal(elsewhere, ORIGIN, other_log) == "note_wrong_origin"
    # A note signed only by someone we do not know.
    stranger = sign_note(checkpoint.body(), [NoteSigner("stranger.example", other_key)])
    assert refusal(stranger, ORIGIN, log) == "note_unverified"
    # Signed by a witness we know, but not by the log.
    witness = CosignatureSigner("witness.example/w1", other_key, 1_700_000_000)
    cosigned_only = sign_note(checkpoint.body(), [witness])
    assert refusal(cosigned_only, ORIGIN, log, (witness.verifier(),)) == "note_unverified"
    # A well-signed note whose text is not a checkpoint.
    not_a_checkpoint = sign_note("hello\n", [NoteSigner(ORIGIN, log_key)])
    assert refusal(not_a_checkpoint, ORIGIN, log) == "checkpoint_malformed"


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.data())
def test_any_changed_character_fails_some_signature(data: st.DataObject) -> None:
    """Replace one character anywhere in a note signed by a log and two witnesses: the note is refused,
    or at least one signer no longer verifies."""
    keys = [SigningKey.from_seed("test", bytes([i]) * 32) for i in range(3)]
    witnesses = [CosignatureSigner(f"witness.example/w{i}", keys[i], 1_700_000_000 + i) for i in (1, 2)]
    checkpoint, note = signed_checkpoint(keys[0], *witnesses)
    log = NoteVerifier(ORIGIN, keys[0].public())
    cosigners = tuple(w.verifier() for w in witnesses)
    assert open_checkpoint(note, ORIGIN, log, cosigners) == (
        checkpoint,
        ("witness.example/w1", "witness.example/w2"),
    )

    i = data.draw(st.integers(0, len(note) - 1), label="position")
    replacement = data.draw(st.characters().filter(lambda c: c != note[i]), label="replacement")
    changed = note[:i] + replacement + note[i + 1 :]
    try:
        opened, names = open_checkpoint(changed, ORIGIN, log, cosigners)
    except NoteError:
        return
    assert len(names) < len(cosigners)
    assert opened == checkpoint


# --- Cosignatures ------------------------------------------------------------------------------------


def test_cosignature_signs_the_spec_message() -> None:
    """c2sp.org/tlog-cosignature: key ID with type 0x04; the line holds key ID, u64 time, signature; the
    signed message is "cosignature/v1", "time <t>", then the whole checkpoint text."""
    key = SigningKey.generate("test")
    witness = CosignatureSigner("witness.example.com/w1", key, 1679315147)
    line = signature_line(C2SP_BODY, witness)
    name, b64 = line.removeprefix("— ").removesuffix("\n").split(" ")
    raw = base64.b64decode(b64)
    assert name == "witness.example.com/w1" and len(raw) == 4 + 8 + 64
    raw_key = key.public().raw()
    assert raw[:4] == witness.key_id == key_id("witness.example.com/w1", 0x04, raw_key)
    assert raw[4:12] == (1679315147).to_bytes(8, "big") and cosignature_timestamp(raw[4:]) == 1679315147
    assert key.public().verify(raw[12:], b"cosignature/v1\ntime 1679315147\n" + C2SP_BODY.encode())

    cosigned = C2SP_NOTE.split("— witness")[0] + line  # the log's line (unverifiable here), then ours
    assert open_note(cosigned, [witness.verifier()]) == (C2SP_BODY, ("witness.example.com/w1",))


def test_cosignature_time_vector() -> None:
    """transparency-dev/formats TestCosignatureTimestamp."""
    raw = base64.b64decode(
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
    )
    assert cosignature_timestamp(raw[4:]) == 1727964367


def test_cosignature_and_note_signature_do_not_stand_in_for_each_other() -> None:
    key = SigningKey.generate("test")
    body = Checkpoint(ORIGIN, 7, b"\x07" * 32).body()
    as_note = sign_note(body, [NoteSigner("w.example", key)])
    as_cosignature = sign_note(body, [CosignatureSigner("w.example", key, 1)])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(as_note, [CosignatureVerifier("w.example", key.public())])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(as_cosignature, [NoteVerifier("w.example", key.public())])


def test_cosignature_vkey_round_trip() -> None:
    key = SigningKey.generate("test")
    witness = CosignatureSigner("witness.example/w1", key, 5)
    text = vkey("witness.example/w1", key.public(), SIG_COSIGNATURE_V1)
    verifier = parse_vkey(text)
    assert isinstance(verifier, CosignatureVerifier) and verifier.key_id == witness.key_id
    assert open_note(sign_note("x\n", [witness]), [verifier])[1] == ("witness.example/w1",)


def test_cosignature_timestamps_beyond_int63_are_refused() -> None:
    key = SigningKey.generate("test")
    with pytest.raises(ValueError, match="timestamp"):
        CosignatureSigner("w.example", key, 2**63)
    body = "x\n"
    t = 2**63  # sign it by hand: a well-formed signature over a time the spec forbids
    raw = t.to_bytes(8, "big") + key.sign(b"cosignature/v1\ntime %d\n" % t + body.encode())
    verifier = CosignatureVerifier("w.example", key.public())
    note = body + "\n— w.example " + base64.b64encode(verifier.key_id + raw).decode() + "\n"
    with pytest.raises(NoteError) as refused:
        open_note(note, [verifier])
    assert refused.value.code == "note_bad_signature"


def test_signing_refuses_what_cannot_be_a_note() -> None:
    key = SigningKey.generate("test")
    signer = NoteSigner("log.example", key)
    for body in ["no final newline", "bell\x07\n"]:
        with pytest.raises(NoteError):
            sign_note(body, [signer])
    with pytest.raises(ValueError, match="at least one signer"):
        sign_note("x\n", [])
    for name in ["", "has space", "has+plus", "tab\there"]:
        with pytest.raises(ValueError, match="key name"):
            NoteSigner(name, key)
    with pytest.raises(ValueError, match="cosigner shares"):
        open_checkpoint(
            "x\n\n— a AAAAAAA=\n",
            "a",
            signer.verifier(),
            [CosignatureVerifier("log.example", key.public())],
        )
