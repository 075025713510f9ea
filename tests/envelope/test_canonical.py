"""Canonical JSON is RFC 8785 (JCS), docs/envelope.md section 3: the RFC's own examples come out of
`canonical_json` byte for byte, its bytes read back as the value they were made from, and canonicalising
them again changes nothing. Pure unit tests."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.envelope.service import canonical_json

SAFE = 2**53 - 1  # RFC 8785 section 3.2.2.3 and I-JSON: the integers an IEEE double holds exactly

# RFC 8785 Appendix B: an IEEE 754 double, as its bits, and the number as JCS writes it.
APPENDIX_B = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]
NO_FORM = ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"]  # NaN, +Infinity, -Infinity

# RFC 8785 section 3.2.2: the input as JSON text, and its canonical form.
PRIMITIVES_IN = r"""{
  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
  "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
  "literals": [null, true, false]
}"""
PRIMITIVES_OUT = r"""{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"""  # noqa: E501

# RFC 8785 section 3.2.3: members are sorted by the UTF-16 code units of their names.
SORTING_IN = r"""{
  "\u20ac": "Euro Sign",
  "\r": "Carriage Return",
  "\ufb33": "Hebrew Letter Dalet With Dagesh",
  "1": "One",
  "\ud83d\ude00": "Emoji: Grinning Face",
  "\u0080": "Control",
  "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
SORTED_VALUES = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


def _legacy(value: Any) -> bytes:
    """The canonical form before RFC 8785, kept to pin down where the two differ."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert canonical_json(_double(bits)) == expected.encode()
    assert canonical_json({"n": [_double(bits)]}) == b'{"n":[' + expected.encode() + b"]}"


@pytest.mark.parametrize("bits", NO_FORM)
def test_nan_and_infinity_have_no_canonical_form(bits: str) -> None:
    with pytest.raises(ValueError, match="not representable"):
        canonical_json({"n": _double(bits)})


def test_rfc8785_primitives_example() -> None:
    assert canonical_json(json.loads(PRIMITIVES_IN)) == PRIMITIVES_OUT.encode()


def test_rfc8785_sorting_example() -> None:
    canonical = canonical_json(json.loads(SORTING_IN))
    assert list(json.loads(canonical).values()) == SORTED_VALUES
    assert (
        canonical
        == (
            '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With '
            'Diaeresis","\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter '
            'Dalet With Dagesh"}'
        ).encode()
    )
    # Python's sort_keys orders by code point: U+FB33 before U+1F600, the one place the names differ.
    legacy = list(json.loads(_legacy(json.loads(SORTING_IN))).values())
    assert legacy == [*SORTED_VALUES[:5], "Hebrew Letter Dalet With Dagesh", "Emoji: Grinning Face"]


@pytest.mark.parametrize(
    ("value", "jcs", "legacy"),
    [
        (11.0, "11", "11.0"),
        (-0.0, "0", "-0.0"),
        (1e-05, "0.00001", "1e-05"),
        (1e-07, "1e-7", "1e-07"),
        (1e16, "10000000000000000", "1e+16"),
        (1e21, "1e+21", "1e+21"),
        (10.6093, "10.6093", "10.6093"),
        (SAFE, str(SAFE), str(SAFE)),
    ],
)
def test_where_numbers_differ_from_the_old_form(value: float, jcs: str, legacy: str) -> None:
    assert canonical_json(value) == jcs.encode()
    assert _legacy(value) == legacy.encode()


def test_integers_beyond_the_safe_range_have_no_canonical_form() -> None:
    assert canonical_json([SAFE, -SAFE]) == f"[{SAFE},-{SAFE}]".encode()
    for value in (SAFE + 1, -SAFE - 1, 2**64):
        with pytest.raises(ValueError, match="safe integer"):
            canonical_json({"n": value})


def test_strings_escape_only_what_rfc8785_says() -> None:
    """Control characters as the short escapes or lowercase \\u00xx; everything else as UTF-8, also
    U+007F, U+2028 and U+2029; `/` unescaped. The old form agreed on every string."""
    text = "".join(chr(c) for c in range(0x20)) + '"\\/\x7f\u2028\u2029박😀'
    expected = (
        '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r\\u000e\\u000f'
        "\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018\\u0019\\u001a\\u001b\\u001c"
        '\\u001d\\u001e\\u001f\\"\\\\/\x7f\u2028\u2029박😀"'
    ).encode()
    assert canonical_json(text) == expected == _legacy(text)


@pytest.mark.parametrize("value", ["\ud800", {"\udfff": 1}])
def test_lone_surrogates_have_no_canonical_form(value: Any) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


# ---- properties -------------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-SAFE, max_value=SAFE)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5)
)


def _number(text: str) -> int | float:
    """Reads a JSON integer as JCS does, as an IEEE double: JCS writes the double 2**53 as
    9007199254740992, which a plain json.loads makes a Python int that has no canonical form."""
    value = int(text)
    return value if -SAFE <= value <= SAFE else float(text)


def _read(canonical: bytes, **options: Any) -> Any:
    return json.loads(canonical.decode("utf-8"), parse_int=_number, **options)


def _same(a: Any, b: Any) -> bool:
    """JSON equality: numbers by their IEEE double value (JCS writes 1e16 as 10000000000000000, which
    reads back as a Python int), everything else by type and value."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@settings(max_examples=300, deadline=None, database=None)
@given(VALUES)
def test_canonical_bytes_read_back_as_the_value(value: Any) -> None:
    canonical = canonical_json(value)
    assert _same(_read(canonical), value)


@settings(max_examples=300, deadline=None, database=None)
@given(VALUES)
def test_canonicalising_again_changes_nothing(value: Any) -> None:
    canonical = canonical_json(value)
    assert canonical_json(_read(canonical)) == canonical
    # member order in the input does not matter
    assert (
        canonical_json(_read(canonical, object_pairs_hook=lambda pairs: dict(reversed(pairs)))) == canonical
    )
