"""A population of ids across the simulator's scenarios, and the end state each must reach."""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, text

from pixverse_tracker.testing import CLI, make_id

# scenario tag -> (expected state, expected status name, or the abandon reason's prefix)
EXPECTED = {
    "completed_{d}": ("done", "COMPLETED"),
    "generating_1_{d}": ("done", "COMPLETED"),
    "failed_{d}": ("done", "FAILED"),
    "moderated_{d}": ("done", "MODERATED"),
    "deleted_{d}": ("abandoned", "deleted"),
    "rejected": ("abandoned", "rejected"),
    "ratelimit_2_{d}": ("done", "COMPLETED"),
    "retryafter_1_1_{d}": ("done", "COMPLETED"),
    "errors_3_{d}": ("done", "COMPLETED"),
    "slow_1_3_{d}": ("done", "COMPLETED"),
    "garbage_5_{d}": ("done", "COMPLETED"),
    "queuedfinal_1_{d}": ("done", "COMPLETED"),
    "nourl_1_{d}": ("done", "COMPLETED"),
    "unknown_1_{d}": ("done", "COMPLETED"),
    "hostile_5_{d}": ("done", None),  # completes with a status given as the string "1"
    "never": ("abandoned", "expired"),
}
DELAYS = (2, 4, 6, 9)


def population(
    templates: Iterable[str] = EXPECTED, delays: Iterable[int] = DELAYS, user: int = 7
) -> dict[str, tuple[str, str | None]]:
    ids: dict[str, tuple[str, str | None]] = {}
    n = 0
    for template in templates:
        for tag in sorted({template.format(d=d) for d in delays}):
            n += 1
            ids[make_id(tag, n, user=user)] = EXPECTED[template]
    return ids


def enqueue(env: dict[str, str], video_ids: Iterable[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "enqueue", "-"],
        input="\n".join(video_ids) + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@dataclass(frozen=True)
class Outcome:
    """What the database says happened, checked against what should have."""

    wrong: list[tuple[str, str, str | None]]
    lost_or_invented: set[str]
    done_twice: list[str]
    finished_twice: list[str]
    regressions: list[str]  # ids with a state-changing event after they finished
    finished_at: dict[str, float]  # epoch seconds (database clock) each id finished


def check(engine: Engine, expected: dict[str, tuple[str, str | None]]) -> Outcome:
    with engine.connect() as conn:
        rows = {
            r.video_id: r
            for r in conn.execute(
                text("SELECT video_id, state, status_name, status_code, abandon_reason FROM videos")
            )
        }
        finishes = conn.execute(
            text(
                "SELECT video_id, kind, count(*) AS n FROM video_events "
                "WHERE kind IN ('done', 'abandoned') GROUP BY video_id, kind"
            )
        ).all()
        regressions = list(
            conn.execute(
                text(
                    "SELECT DISTINCT e.video_id FROM video_events e JOIN ("
                    " SELECT video_id, min(id) AS id FROM video_events"
                    " WHERE kind IN ('done', 'abandoned') GROUP BY video_id) f"
                    " ON f.video_id = e.video_id AND e.id > f.id"
                    " WHERE e.kind NOT IN ('retracked', 'enqueued')"
                )
            ).scalars()
        )
        finished_at = dict(
            conn.execute(
                text(
                    "SELECT video_id, extract(epoch FROM min(at))::float FROM video_events "
                    "WHERE kind IN ('done', 'abandoned') GROUP BY video_id"
                )
            ).all()
        )
    wrong = []
    for video_id, (state, detail) in expected.items():
        row = rows.get(video_id)
        if row is None:
            continue
        if state == "done":
            got = row.status_name if detail is not None else str(row.status_code)
            ok = row.state == "done" and (got == detail if detail is not None else got == "1")
        else:
            got = row.abandon_reason
            ok = row.state == "abandoned" and (got or "").startswith(detail or "")
        if not ok:
            wrong.append((video_id, row.state, got))
    per_id: dict[str, int] = {}
    for video_id, _, n in finishes:
        per_id[video_id] = per_id.get(video_id, 0) + n
    return Outcome(
        wrong=wrong,
        lost_or_invented=set(rows) ^ set(expected),
        done_twice=[v for v, k, n in finishes if k == "done" and n > 1],
        finished_twice=[v for v, n in per_id.items() if n > 1],
        regressions=regressions,
        finished_at=finished_at,
    )


def assert_all_right(engine: Engine, expected: dict[str, tuple[str, str | None]]) -> Outcome:
    outcome = check(engine, expected)
    assert not outcome.lost_or_invented, f"lost or invented: {outcome.lost_or_invented}"
    assert not outcome.wrong, f"wrong end states: {outcome.wrong}"
    assert not outcome.finished_twice, f"finished twice: {outcome.finished_twice}"
    assert not outcome.regressions, f"changed after finishing: {outcome.regressions}"
    return outcome
