"""ULIDs: 26 Crockford digits, the time first, so ids sort by creation."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from inbox_service.core import ids

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _digits(value: int) -> str:
    """The ULID spec's encoding, digit by digit: the reference the fast one must equal."""
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


@given(ms=st.integers(0, 2**48 - 1), rand=st.binary(min_size=10, max_size=10))
def test_ulid_is_the_spec_encoding_of_time_then_randomness(ms: int, rand: bytes) -> None:
    original = ids.os.urandom
    ids.os.urandom = lambda n: rand  # type: ignore[assignment]
    try:
        value = ids.ulid(ms)
    finally:
        ids.os.urandom = original
    assert value == _digits((ms << 80) | int.from_bytes(rand, "big"))


def test_ids_sort_by_creation_time() -> None:
    earlier, later = ids.ulid(1_700_000_000_000), ids.ulid(1_700_000_000_001)
    assert earlier < later
    assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", earlier)
    assert ids.new_id("usr").startswith("usr_")
    assert len({ids.new_id("alr") for _ in range(1000)}) == 1000
