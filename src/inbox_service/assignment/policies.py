"""Choosing the next assignee: pure functions over a snapshot of the candidates.

The snapshot (who is available, how many open conversations each holds) is taken under the
inbox's cursor lock and per-user locks (`service.py`), so the choice here is never made
from stale counts; these functions only decide.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Policy = Literal["off", "round_robin", "least_loaded"]


@dataclass
class Candidate:
    """An available, live member of the inbox and their current load."""

    user_id: str
    capacity: int
    load: int  # open conversations assigned to them, in every inbox

    @property
    def has_room(self) -> bool:
        return self.load < self.capacity


def _in_turn(candidates: Sequence[Candidate], last_user_id: str | None) -> list[Candidate]:
    """Candidates with room, starting with the one after `last_user_id` (ids in order)."""
    ordered = sorted((c for c in candidates if c.has_room), key=lambda c: c.user_id)
    if last_user_id is None:
        return ordered
    after = [c for c in ordered if c.user_id > last_user_id]
    return after + [c for c in ordered if c.user_id <= last_user_id]


def pick(
    policy: Policy, candidates: Sequence[Candidate], last_user_id: str | None
) -> Candidate | None:
    """Who gets the next conversation; None when nobody has room (or the policy is off).

    round_robin: the next member in id order after the last one chosen, skipping anyone
    away or at capacity. least_loaded: the fewest open conversations; ties go in turn, so
    equally loaded agents alternate too.
    """
    if policy == "off":
        return None
    turn = _in_turn(candidates, last_user_id)
    if not turn:
        return None
    if policy == "round_robin":
        return turn[0]
    return min(turn, key=lambda c: c.load)  # min keeps the first of equals: the turn order
