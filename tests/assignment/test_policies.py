"""Choosing the next assignee from a snapshot of candidates (pure functions)."""

from __future__ import annotations

from inbox_service.assignment.policies import Candidate, pick


def team(*loads_and_capacities: tuple[int, int]) -> list[Candidate]:
    return [
        Candidate(user_id=f"usr_{n}", capacity=capacity, load=load)
        for n, (load, capacity) in enumerate(loads_and_capacities)
    ]


class TestPick:
    def test_off_picks_nobody(self) -> None:
        assert pick("off", team((0, 5)), None) is None

    def test_round_robin_goes_after_the_last_one_and_wraps(self) -> None:
        candidates = team((0, 5), (0, 5), (0, 5))
        assert pick("round_robin", candidates, None) == candidates[0]
        assert pick("round_robin", candidates, "usr_0") == candidates[1]
        assert pick("round_robin", candidates, "usr_2") == candidates[0]

    def test_round_robin_skips_anyone_at_capacity(self) -> None:
        candidates = team((0, 5), (5, 5), (0, 5))
        assert pick("round_robin", candidates, "usr_0") == candidates[2]

    def test_a_last_assignee_who_left_does_not_break_the_turn(self) -> None:
        candidates = team((0, 5), (0, 5))
        assert pick("round_robin", candidates, "usr_0x") == candidates[1]

    def test_least_loaded_takes_the_fewest_open_conversations(self) -> None:
        candidates = team((3, 9), (1, 9), (2, 9))
        assert pick("least_loaded", candidates, None) == candidates[1]

    def test_least_loaded_breaks_ties_in_turn(self) -> None:
        candidates = team((1, 9), (1, 9), (4, 9))
        assert pick("least_loaded", candidates, "usr_0") == candidates[1]
        assert pick("least_loaded", candidates, "usr_1") == candidates[0]

    def test_nobody_with_room_is_none(self) -> None:
        for policy in ("round_robin", "least_loaded"):
            assert pick(policy, team((2, 2), (0, 0)), None) is None  # type: ignore[arg-type]
        assert pick("least_loaded", [], None) is None
