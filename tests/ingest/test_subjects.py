from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inbox_service.ingest.subjects import base_subject, thread_index_guid


class TestBaseSubject:
    @pytest.mark.parametrize(
        ("subject", "expected"),
        [
            ("Hello", "hello"),
            ("  Hello    World  ", "hello world"),
            ("Re: Hello", "hello"),
            ("RE: RE: Hello", "hello"),
            ("re:Hello", "hello"),
            ("Re[2]: Hello", "hello"),
            ("RE(3): Hello", "hello"),
            ("Re: Re[3]: AW:  Invoice", "invoice"),
            ("Fw: Hello", "hello"),
            ("FWD: Hello", "hello"),
            ("AW: WG: Hallo", "hallo"),
            ("SV: VS: Hei", "hei"),
            ("Antw: Hoi", "hoi"),
            ("RIF: Ciao", "ciao"),
            ("R: Ciao", "ciao"),
            ("TR: Salut", "salut"),
            ("Réf : Facture", "facture"),
            ("RE : Re: Facture erronée", "facture erronée"),
            ("回复\uff1a你好", "你好"),
            ("答复: 你好", "你好"),
            ("转发: 你好", "你好"),
            ("\uff32\uff25\uff1ahi", "hi"),
            ("[mxr] Re: Topic", "topic"),
            ("Re: [list] Topic", "topic"),
            ("[list] [other] Re: Topic", "topic"),
            ("[#ABC123] Invoice", "invoice"),
            ("[only a blob]", "[only a blob]"),
            ("[Fwd: Hello world]", "hello world"),
            ("Fwd: [Fwd: Re: hello (fwd)]", "hello"),
            ("Hello (fwd)", "hello"),
            ("Hello (fwd) (fwd)", "hello"),
            ("Re:", ""),
            ("", ""),
            ("Reply needed", "reply needed"),
            ("Rewards: your points", "rewards: your points"),
            ("Re: Straße", "strasse"),
        ],
    )
    def test_table(self, subject: str, expected: str) -> None:
        assert base_subject(subject) == expected

    def test_many_prefixes_are_all_removed(self) -> None:
        assert base_subject("Re: AW: " * 200 + "Order 17") == "order 17"

    @settings(deadline=None)
    @given(
        st.lists(
            st.sampled_from(
                ["Re: ", "AW:", "Fwd: ", "[list] ", "RE[2]: ", "回复\uff1a", " (fwd)", "[Fwd: "]
            )
            | st.text(max_size=12),
            max_size=8,
        ).map("".join)
    )
    def test_idempotent(self, subject: str) -> None:
        once = base_subject(subject)
        assert base_subject(once) == once

    @settings(deadline=None)
    @given(st.text())
    def test_idempotent_on_any_text(self, subject: str) -> None:
        once = base_subject(subject)
        assert base_subject(once) == once


class TestThreadIndexGuid:
    def test_guid_is_the_16_bytes_at_offset_6(self) -> None:
        index = bytes([1]) + bytes(range(100, 105)) + bytes(range(16)) + bytes(10)
        assert thread_index_guid(index) == bytes(range(16))

    def test_exactly_22_bytes(self) -> None:
        assert thread_index_guid(bytes(22)) == bytes(16)

    def test_short_index_has_no_guid(self) -> None:
        assert thread_index_guid(bytes(21)) is None
        assert thread_index_guid(b"") is None
