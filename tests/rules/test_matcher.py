"""The compiled matcher on its own: what matches, where, and what wins."""

from __future__ import annotations

import unicodedata

import pytest

from inbox_service.rules.matcher import Mail, Matcher, RuleSpec


def rule(rule_id: str, *keywords: str, **kwargs: object) -> RuleSpec:
    kwargs.setdefault("priority", "urgent")
    return RuleSpec(id=rule_id, keywords=keywords, **kwargs)  # type: ignore[arg-type]


def matched(matcher: Matcher, subject: str = "", body: str = "", **kwargs: object) -> list[str]:
    evaluation = matcher.evaluate(Mail(subject=subject, body=body, **kwargs))  # type: ignore[arg-type]
    return [m.rule.id for m in evaluation.matches]


class TestWhereAndHow:
    def test_keyword_in_subject_only(self) -> None:
        m = Matcher([rule("r", "urgent")])
        evaluation = m.evaluate(Mail(subject="URGENT: server down", body="hello"))
        assert [(h.field, h.start, h.end, h.text) for h in evaluation.matches[0].hits] == [
            ("subject", 0, 6, "URGENT")
        ]

    def test_keyword_in_body_only(self) -> None:
        m = Matcher([rule("r", "outage")])
        evaluation = m.evaluate(Mail(subject="Hello", body="We see an Outage since 9."))
        hit = evaluation.matches[0].hits[0]
        assert (hit.field, hit.start, hit.end, hit.text) == ("body", 10, 16, "Outage")

    def test_rule_limited_to_the_subject_ignores_the_body(self) -> None:
        m = Matcher([rule("r", "refund", fields=("subject",))])
        assert matched(m, "Hi", "I want a refund") == []
        assert matched(m, "Refund please", "") == ["r"]

    @pytest.mark.parametrize("text", ["urgent", "URGENT", "Urgent", "uRgEnT"])
    def test_any_case(self, text: str) -> None:
        assert matched(Matcher([rule("r", "Urgent")]), body=f"this is {text}!") == ["r"]

    @pytest.mark.parametrize(
        "text", ["Überweisung fehlt", "ÜBERWEISUNG FEHLT", "die überweisung", "(Überweisung)"]
    )
    def test_diacritics_and_case(self, text: str) -> None:
        assert matched(Matcher([rule("r", "Überweisung")]), body=text) == ["r"]

    def test_decomposed_text_matches_a_composed_keyword(self) -> None:
        decomposed = unicodedata.normalize("NFD", "ÜBERWEISUNG")
        assert decomposed != "ÜBERWEISUNG"
        assert matched(Matcher([rule("r", "Überweisung")]), body=decomposed) == ["r"]

    def test_a_letter_without_its_diacritic_is_another_word(self) -> None:
        assert matched(Matcher([rule("r", "Überweisung")]), body="Uberweisung") == []

    def test_full_case_folding(self) -> None:
        m = Matcher([rule("r", "Straße")])
        assert matched(m, body="STRASSE 5") == ["r"]
        assert matched(m, body="straße 5") == ["r"]

    def test_a_keyword_matches_its_own_spellings_whatever_other_rules_hold(self) -> None:
        m = Matcher([rule("gross", "gross"), rule("sharp", "Groß")])
        assert matched(m, body="Groß") == ["sharp"]
        assert matched(m, body="GROSS") == ["gross", "sharp"]

    @pytest.mark.parametrize(
        "text", ["urgently", "nonurgent", "urgent_ly", "urgent2", "refundable", "Überweisungen"]
    )
    def test_inside_another_word_does_not_match(self, text: str) -> None:
        assert matched(Matcher([rule("r", "urgent", "refund", "Überweisung")]), body=text) == []

    @pytest.mark.parametrize("text", ["urgent.", "(urgent)", "urgent-ish", "«urgent»", "x\nurgent"])
    def test_punctuation_is_a_word_boundary(self, text: str) -> None:
        assert matched(Matcher([rule("r", "urgent")]), body=text) == ["r"]

    def test_phrase_across_a_line_break(self) -> None:
        m = Matcher([rule("r", "damaged product")])
        evaluation = m.evaluate(Mail(subject="", body="the damaged\r\n   product arrived"))
        hit = evaluation.matches[0].hits[0]
        assert hit.text == "damaged\r\n   product"
        assert (hit.start, hit.end) == (4, 23)
        assert matched(m, body="damagedproduct") == []
        assert matched(m, body="damaged products") == []

    def test_regex_looking_keywords_are_literal(self) -> None:
        m = Matcher([rule("r", "urgent.*"), rule("s", "a+b"), rule("t", "[vip]")])
        assert matched(m, body="urgent now") == []
        assert matched(m, body="urgent.* now") == ["r"]
        assert matched(m, body="aaab") == []
        assert matched(m, body="a+b") == ["s"]
        assert matched(m, body="v") == []
        assert matched(m, body="[VIP] customer") == ["t"]


class TestExclusions:
    def test_an_exclusion_phrase_cancels_the_rule(self) -> None:
        m = Matcher([rule("r", "urgent", exclusions=("not urgent",))])
        assert matched(m, body="This is not urgent at all") == []
        assert matched(m, body="This is NOT\nurgent") == []
        assert matched(m, body="This is urgent") == ["r"]

    def test_an_exclusion_only_cancels_its_own_rule(self) -> None:
        m = Matcher(
            [rule("r", "urgent", exclusions=("not urgent",)), rule("s", "urgent", priority="high")]
        )
        assert matched(m, body="not urgent") == ["s"]

    def test_exclusions_count_only_where_the_rule_looks(self) -> None:
        m = Matcher([rule("r", "refund", exclusions=("newsletter",), fields=("subject",))])
        assert matched(m, "Refund", "our newsletter") == ["r"]
        assert matched(m, "Refund newsletter", "") == []


class TestCombining:
    def test_highest_priority_wins_and_all_tags_are_added(self) -> None:
        m = Matcher(
            [
                rule("low", "invoice", priority="low", tags=("billing",), position=0),
                rule("hi", "refund", priority="high", tags=("Refunds",), position=1),
                rule("urg", "outage", priority="urgent", tags=("incident",), position=2),
                rule("tag", "refund", priority=None, tags=("billing", "money"), position=3),
            ]
        )
        evaluation = m.evaluate(Mail(subject="Refund for the outage", body="invoice 12"))
        assert [x.rule.id for x in evaluation.matches] == ["low", "hi", "urg", "tag"]
        assert evaluation.priority == "urgent"
        assert evaluation.source is not None
        assert evaluation.source.rule.id == "urg"
        assert evaluation.keyword == "outage"
        assert evaluation.tags == ("billing", "Refunds", "incident", "money")

    def test_on_a_tie_the_first_rule_in_order_is_the_source(self) -> None:
        m = Matcher(
            [rule("b", "refund", priority="high", position=2), rule("a", "angry", priority="high",
             position=1)]
        )  # fmt: skip
        evaluation = m.evaluate(Mail(subject="refund", body="very angry"))
        assert evaluation.source is not None
        assert evaluation.source.rule.id == "a"

    def test_overlapping_and_nested_phrases_all_match(self) -> None:
        m = Matcher(
            [
                rule("a", "damaged"),
                rule("b", "damaged product"),
                rule("c", "product outage"),
                rule("d", "outage report"),
            ]
        )
        assert matched(m, body="damaged product outage report") == ["a", "b", "c", "d"]

    def test_inbox_scope_and_sender_domains(self) -> None:
        m = Matcher(
            [
                rule("everywhere", "refund"),
                rule("inbox_a", "refund", inbox_id="inb_a"),
                rule("vip", "refund", sender_domains=("bigcorp.com",)),
            ]
        )
        assert matched(m, body="refund", inbox_id="inb_b", sender="x@other.com") == ["everywhere"]
        assert matched(m, body="refund", inbox_id="inb_a", sender="x@mail.bigcorp.com") == [
            "everywhere",
            "inbox_a",
            "vip",
        ]
        assert matched(m, body="refund", sender="x@notbigcorp.com") == ["everywhere"]

    def test_no_rules_match_nothing(self) -> None:
        assert Matcher([]).empty
        assert Matcher([]).evaluate(Mail(subject="urgent", body="urgent")).matches == ()
