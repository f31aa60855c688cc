"""The SQL behind the reports: one row of facts per conversation, then aggregates over them.

The cohort is the conversations created in `[from, to)` in the caller's inboxes (merged
ones left out); every figure describes that cohort as it stands now (README, "Reports").
The latest resolution and the reopenings are the conversation's `resolved_at` and
`reopen_count` (kept by a trigger on every status change), SLA outcomes come from
`conversation_slas`, ratings from `csat_ratings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import String, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY

GroupBy = Literal["agent", "inbox", "day", "tag"]

# The percentiles and the status history sort and hash ~100k rows: in memory, not on disk
# (the default 4 MB spills). For this transaction only.
REPORT_WORK_MEM = text("SET LOCAL work_mem = '64MB'")


def _seconds(end: str, start: str) -> str:
    # greatest() skips NULLs, so guard: an unanswered conversation has no response time
    return (
        f"(CASE WHEN {end} IS NOT NULL THEN greatest(0, extract(epoch FROM {end} - {start})) END)"
    )


def _sla_outcome(alias: str) -> str:
    # Late is breached even before the timer tick has noticed (answered after the due time,
    # or still unanswered past it); `due_at` is kept at meeting time for exactly this.
    # Without a target there is nothing to comply with (NULL).
    x = alias
    return (
        f"CASE WHEN {x}.target_seconds IS NULL THEN NULL "
        f"WHEN {x}.breached_at IS NOT NULL OR {x}.met_at > {x}.due_at "
        f"OR ({x}.met_at IS NULL AND {x}.due_at <= :now) THEN 'breached' "
        f"WHEN {x}.met_at IS NOT NULL THEN 'met' ELSE 'running' END"
    )


def _clock(alias: str, metric: str) -> str:
    # (conversation_id, metric) is the primary key: one row, the current cycle
    return (
        f"LEFT JOIN conversation_slas {alias} ON {alias}.conversation_id = c.id "
        f"AND {alias}.metric = '{metric}' AND {alias}.cycle > 0"
    )


_FRT = _seconds("c.first_response_at", "c.created_at")

# Per-conversation facts, one flat statement: ratings are aggregated for the period only
# (nothing of a conversation happens before it exists), the SLA clocks are primary-key
# joins. `tz`: the inbox's SLA policy time zone (inboxes
# have none of their own), UTC without a policy; days are cut in it.
# The f-strings below splice in only this module's constants; values are bound parameters.
FACTS = f"""
facts AS (
    SELECT c.id, c.inbox_id, c.assignee_id, c.status, c.created_at,
           (c.created_at AT TIME ZONE coalesce(p.business_hours->>'timezone', 'UTC'))::date
               AS day,
           c.first_response_at, c.reply_count,
           {_FRT}::float8 AS frt_seconds,
           -- business time: the SLA first-response clock (pauses excluded); calendar time
           -- when no policy covers the conversation
           CASE WHEN fr.conversation_id IS NULL THEN {_FRT}
                WHEN fr.met_at IS NOT NULL THEN fr.consumed_seconds END::float8
               AS frt_business_seconds,
           c.status = 'resolved' AS resolved,
           CASE WHEN c.status = 'resolved' THEN c.resolved_at END AS resolved_at,
           CASE WHEN c.status = 'resolved'
                THEN {_seconds("c.resolved_at", "c.created_at")}::float8 END AS resolution_seconds,
           c.reopen_count AS reopens,
           c.status = 'resolved' AND c.reply_count = 1 AND c.reopen_count = 0 AS fcr,
           {_sla_outcome("fr")} AS sla_first_response,
           {_sla_outcome("nr")} AS sla_next_response,
           {_sla_outcome("rs")} AS sla_resolution,
           coalesce(rt.csat_count, 0) AS csat_count, coalesce(rt.csat_sum, 0) AS csat_sum,
           coalesce(rt.csat_1, 0) AS csat_1, coalesce(rt.csat_2, 0) AS csat_2,
           coalesce(rt.csat_3, 0) AS csat_3, coalesce(rt.csat_4, 0) AS csat_4,
           coalesce(rt.csat_5, 0) AS csat_5, rt.csat_last
    FROM conversations c
    LEFT JOIN sla_policy_inboxes spi ON spi.inbox_id = c.inbox_id
    LEFT JOIN sla_policies p ON p.id = spi.policy_id
    {_clock("fr", "first_response")}
    {_clock("nr", "next_response")}
    {_clock("rs", "resolution")}
    LEFT JOIN (
        SELECT r.conversation_id, count(*) AS csat_count, sum(r.score) AS csat_sum,
               count(*) FILTER (WHERE r.score = 1) AS csat_1,
               count(*) FILTER (WHERE r.score = 2) AS csat_2,
               count(*) FILTER (WHERE r.score = 3) AS csat_3,
               count(*) FILTER (WHERE r.score = 4) AS csat_4,
               count(*) FILTER (WHERE r.score = 5) AS csat_5,
               (array_agg(r.score ORDER BY r.cycle DESC))[1] AS csat_last
        FROM csat_ratings r
        WHERE r.created_at >= :date_from
        GROUP BY r.conversation_id
    ) rt ON rt.conversation_id = c.id
    WHERE c.merged_into_id IS NULL
      AND c.created_at >= :date_from AND c.created_at < :date_to
      AND (CAST(:inbox_ids AS varchar[]) IS NULL OR c.inbox_id = ANY(:inbox_ids))
)"""  # noqa: S608


def _met(metric: str) -> str:
    return (
        f"count(*) FILTER (WHERE f.sla_{metric} = 'met') AS sla_{metric}_met, "
        f"count(*) FILTER (WHERE f.sla_{metric} = 'breached') AS sla_{metric}_breached"
    )


def _percentiles(column: str, name: str) -> str:
    # one sort gives both (PostgreSQL computes identical aggregate calls once)
    both = f"percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY {column})"
    return f"({both})[1] AS {name}_median, ({both})[2] AS {name}_p90"


AGGREGATES = f"""
    count(*) AS new,
    count(*) FILTER (WHERE f.resolved) AS resolved,
    count(*) FILTER (WHERE f.reopens > 0) AS reopened,
    count(f.frt_seconds) AS frt_count,
    {_percentiles("f.frt_seconds", "frt")},
    {_percentiles("f.frt_business_seconds", "frt_business")},
    {_percentiles("f.resolution_seconds", "resolution")},
    count(*) FILTER (WHERE f.fcr) AS fcr,
    avg(f.reply_count) FILTER (WHERE f.resolved)::float8 AS replies_to_resolution,
    {_met("first_response")}, {_met("next_response")}, {_met("resolution")},
    sum(f.csat_count) AS csat_count, sum(f.csat_sum) AS csat_sum,
    sum(f.csat_1) AS csat_1, sum(f.csat_2) AS csat_2, sum(f.csat_3) AS csat_3,
    sum(f.csat_4) AS csat_4, sum(f.csat_5) AS csat_5"""

# The group key of each grouping (tags: see `summary_sql`).
_KEYS: dict[GroupBy, str] = {
    "agent": "f.assignee_id",
    "inbox": "f.inbox_id",
    "day": "f.day::text",
}


def _params(statement: TextClause) -> TextClause:
    return statement.bindparams(bindparam("inbox_ids", type_=ARRAY(String)))


def summary_sql(group_by: GroupBy | None, *, prefix: str = "") -> TextClause:
    """The summary's query: the totals row (`total` true), then one row per group.

    One pass computes both with GROUPING SETS; tags fan a conversation out over its tags,
    so their totals come from a second branch over the plain facts."""
    if group_by is None:
        query = f"{prefix}WITH {FACTS} SELECT true AS total, NULL AS key, {AGGREGATES} FROM facts f"  # noqa: S608
    elif group_by == "tag":
        query = (
            f"{prefix}WITH {FACTS} "  # noqa: S608
            f"SELECT true AS total, NULL AS key, {AGGREGATES} FROM facts f "
            f"UNION ALL (SELECT false, t.name, {AGGREGATES} FROM facts f "
            "LEFT JOIN conversation_tags ct ON ct.conversation_id = f.id "
            "LEFT JOIN tags t ON t.id = ct.tag_id GROUP BY t.name ORDER BY t.name NULLS LAST)"
        )
    else:
        key = _KEYS[group_by]
        query = (
            f"{prefix}WITH {FACTS} SELECT GROUPING({key}) = 1 AS total, {key} AS key, "  # noqa: S608
            f"{AGGREGATES} FROM facts f GROUP BY GROUPING SETS ((), ({key})) "
            "ORDER BY 1 DESC, 2 NULLS LAST"
        )
    return _params(text(query))


EXPORT_COLUMNS = (
    "id",
    "inbox_id",
    "assignee_id",
    "status",
    "created_at",
    "day",
    "first_response_at",
    "frt_seconds",
    "frt_business_seconds",
    "resolved_at",
    "resolution_seconds",
    "reply_count",
    "reopens",
    "fcr",
    "sla_first_response",
    "sla_next_response",
    "sla_resolution",
    "csat_last",
)


def export_sql() -> TextClause:
    columns = ", ".join(f"f.{c}" for c in EXPORT_COLUMNS)
    query = f"WITH {FACTS} SELECT {columns} FROM facts f ORDER BY f.created_at, f.id"  # noqa: S608
    return _params(text(query))


@dataclass(frozen=True)
class Window:
    """What a report covers: the period and the inboxes (None: every inbox)."""

    date_from: datetime
    date_to: datetime
    inbox_ids: list[str] | None
    now: datetime

    def params(self) -> dict[str, object]:
        return {
            "date_from": self.date_from,
            "date_to": self.date_to,
            "inbox_ids": self.inbox_ids,
            "now": self.now,
        }
