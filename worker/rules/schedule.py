"""When to look at a pending video next: the adaptive schedule, as pure functions.

Blind backoff polls every video alike. This module chooses each next check from what is known:
how long ago the video was enqueued, what the upstream last said about it (nothing yet, QUEUED
with its ``queue_data``, or GENERATING since when), and how long videos took in our own table.
The rule: look again when the chance that the video has finished since the last look reaches
``CHECK_PROBABILITY``, but never sooner than the floor nor later than the cap. Where many videos
finish, that is the floor; before the first ones usually finish, and in the long tail, it is
later. Until the table holds ``MIN_SAMPLES`` finished videos (a new installation), a prior
from the upstream's documentation stands in for the completion times.

Ids read through the list endpoint share one request per account, so their checks are put on
a per-account grid: every id of an account comes due at the same instants, and one list call
answers for all of them. The rule then applies to the request, not to each id: when a page
shows ``n`` of the account's videos in progress, each is looked at again when *its* chance
reaches ``share_probability(n)``, so that the chance of the request finding one of them
finished reaches ``CHECK_PROBABILITY`` (see docs/architecture.md, "The adaptive schedule").
"""

from __future__ import annotations

import bisect
import functools
import math
import statistics
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum

# Below this many observations a distribution is noise; the caller uses backoff instead.
MIN_SAMPLES = 30
# The chance of finding a video finished that justifies one more look. Lower: more calls and
# lower latency. At 0.2 the looks stay at the floor wherever videos finish often and thin out
# before the first ones usually finish and in the long tail; against blind backoff that is
# fewer calls *and* lower latency (docs/performance.md has the figures).
CHECK_PROBABILITY = 0.2
# How many of the newest finished rows the distributions are read from (service.knowledge).
SAMPLE_ROWS = 1000
# A queue_data.queue_time beyond this is not an estimate we would act on.
MAX_QUEUE_TIME = 6 * 3600.0

QUEUED_CODES = frozenset({5})
GENERATING_CODES = frozenset({9, 10})


def _lognormal_quantiles(median: float, sigma: float, count: int) -> tuple[float, ...]:
    normal = statistics.NormalDist()
    return tuple(median * math.exp(sigma * normal.inv_cdf((i + 0.5) / count)) for i in range(count))


class Stage(Enum):
    """What the upstream last told us about a pending video."""

    UNKNOWN = "unknown"  # nothing, or only 404s (the single-video endpoint says nothing more)
    QUEUED = "queued"  # waiting for a generation slot
    GENERATING = "generating"


@dataclass(frozen=True)
class Durations:
    """Observed durations in seconds, sorted: an empirical distribution."""

    values: tuple[float, ...] = ()

    @classmethod
    def of(cls, samples: Iterable[float | None]) -> Durations:
        return cls(
            tuple(sorted(s for s in samples if s is not None and math.isfinite(s) and s >= 0))
        )

    def __len__(self) -> int:
        return len(self.values)

    def cdf(self, x: float) -> float:
        """The share of observations at or below ``x``."""
        if not self.values:
            return 0.0
        return bisect.bisect_right(self.values, x) / len(self.values)

    def quantile(self, p: float) -> float:
        """The smallest observation ``v`` with ``cdf(v) >= p``."""
        if not self.values:
            raise ValueError("no observations")
        index = min(len(self.values) - 1, max(0, math.ceil(p * len(self.values) - 1e-9) - 1))
        return self.values[index]


@functools.lru_cache(maxsize=8)
def prior_for(median: float) -> Durations:
    """What a video is assumed to take before our table knows: a log-normal around ``median``
    (``TRACKER_TYPICAL_DURATION``) with 90% between 0.37x and 2.7x of it."""
    return Durations(_lognormal_quantiles(median, 0.6, 200))


# "Typical PixVerse generations take one to a few minutes" (upstream.md): a median of 90 s,
# 90% between 33 s and 4 min. Used only until our own table has MIN_SAMPLES finished videos;
# then what was observed replaces it.
PRIOR_COMPLETION = prior_for(90.0)
# Past every video finished so far, but younger than the prior's 99th percentile (about six
# minutes for the default), a video is timed by the prior: right after a cold start or a burst,
# the table holds only the quickest finishers, and being older than those says nothing yet
# about a stall.
PRIOR_LAST_SHARE = 0.99


@dataclass(frozen=True)
class Knowledge:
    """What our own table says about how long videos take (``service.knowledge`` reads it)."""

    completion: Durations = field(default_factory=Durations)  # done_at - enqueued_at
    generation: Durations = field(default_factory=Durations)  # done_at - started_at
    prior: Durations = PRIOR_COMPLETION  # stands in for ``completion`` until it is observed


@dataclass(frozen=True)
class Progress:
    """One pending video's progress as the rules see it when choosing the next check."""

    age: float  # seconds since enqueue
    stage: Stage = Stage.UNKNOWN
    generating_for: float | None = None  # seconds since it was first seen GENERATING
    queue_time: float | None = None  # queue_data.queue_time while QUEUED, when plausible


def stage_of(status_code: int | None) -> Stage:
    if status_code in QUEUED_CODES:
        return Stage.QUEUED
    if status_code in GENERATING_CODES:
        return Stage.GENERATING
    return Stage.UNKNOWN


def queue_time_of(record: dict[str, object]) -> float | None:
    """``queue_data.queue_time`` when it is a plausible number of seconds, else None.

    Its meaning is not documented; we read it as the upstream's estimate of the time left in
    the queue and only ever use it to wait *longer*, never to look sooner.
    """
    data = record.get("queue_data")
    if not isinstance(data, dict):
        return None
    value = data.get("queue_time")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    seconds = float(value)
    return seconds if math.isfinite(seconds) and 0 < seconds <= MAX_QUEUE_TIME else None


def share_probability(share: int) -> float:
    """The chance per video at which ``share`` videos answered by one request together reach
    ``CHECK_PROBABILITY`` of one of them having finished (as if they were alike and independent:
    1 - (1 - p) ** share = CHECK_PROBABILITY)."""
    if share <= 1:
        return CHECK_PROBABILITY
    return 1.0 - math.pow(1.0 - CHECK_PROBABILITY, 1.0 / share)


def adaptive_gap(
    progress: Progress,
    knowledge: Knowledge,
    floor: float,
    cap: float,
    probability: float = CHECK_PROBABILITY,
) -> float:
    """Seconds until the chance of the video having finished since now reaches ``probability``
    (``CHECK_PROBABILITY`` for a request of its own, ``share_probability`` for a shared one),
    within ``cap``: the latency contract. Only while our own table rules a finish out
    (``cannot_finish_for``) may the wait be longer."""
    gap = _chance_gap(progress, knowledge, floor, cap, probability)
    return max(gap, cannot_finish_for(progress, knowledge))


def _chance_gap(
    progress: Progress, knowledge: Knowledge, floor: float, cap: float, probability: float
) -> float:
    generation = knowledge.generation
    if (
        progress.stage is Stage.GENERATING
        and progress.generating_for is not None
        and len(generation) >= MIN_SAMPLES
        # Generating longer than any video seen: the generation times say nothing more, so
        # its age decides (below) rather than the cap.
        and generation.cdf(progress.generating_for) < 1.0
    ):
        return _gap(generation, progress.generating_for, floor, cap, probability)
    completion = knowledge.completion
    prior = knowledge.prior
    if len(completion) < MIN_SAMPLES or (
        completion.cdf(progress.age) >= 1.0 and progress.age < prior.quantile(PRIOR_LAST_SHARE)
    ):
        completion = prior
    by_age = _gap(completion, progress.age, floor, cap, probability)
    if progress.stage is Stage.QUEUED and len(generation) >= MIN_SAMPLES:
        # Not started yet: it cannot finish before a whole generation (plus whatever of the
        # queue is left; half the upstream's estimate, as that estimate's meaning is a guess).
        # Both that and its age must allow it to finish, so the later of the two is the one.
        lead = 0.5 * progress.queue_time if progress.queue_time is not None else 0.0
        by_age = max(_clamp(lead + generation.quantile(probability), floor, cap), by_age)
    return by_age


def cannot_finish_for(progress: Progress, knowledge: Knowledge) -> float:
    """Seconds during which the video cannot plausibly finish, by the quickest videos our own
    table has seen (never by the prior): younger than the quickest completion, generating for
    less than the quickest generation, or still queued (a generation has yet to run whole).

    0 when nothing rules a finish out: then the next look comes within the cap.
    """
    wait = 0.0
    completion, generation = knowledge.completion, knowledge.generation
    if len(completion) >= MIN_SAMPLES:
        wait = max(wait, completion.values[0] - progress.age)
    if len(generation) >= MIN_SAMPLES:
        if progress.stage is Stage.QUEUED:
            wait = max(wait, generation.values[0])
        elif progress.stage is Stage.GENERATING and progress.generating_for is not None:
            wait = max(wait, generation.values[0] - progress.generating_for)
    return wait


def _gap(
    durations: Durations, elapsed: float, floor: float, cap: float, probability: float
) -> float:
    """The time until the chance of having finished since ``elapsed`` reaches the target."""
    done = durations.cdf(elapsed)
    if done >= 1.0:
        # Older than every video we have seen finish: a stalled queue or a video that never
        # ends. Nothing to go by, so look rarely.
        return cap
    target = done + probability * (1.0 - done)
    return _clamp(durations.quantile(target) - elapsed, floor, cap)


def _clamp(value: float, floor: float, cap: float) -> float:
    return min(cap, max(floor, value))


# --- the per-account grid ------------------------------------------------------------------------

_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Grid:
    """Instants ``period`` seconds apart, shifted by a per-account phase.

    Every id of one account snaps its checks to the same instants, so they come due together
    and one list request answers for all; different accounts get different phases, which
    spreads their requests evenly over the period.
    """

    period: float
    phase: float

    @classmethod
    def for_account(cls, account: str, period: float) -> Grid:
        # crc32, not hash(): the phase must be the same in every process.
        fraction = zlib.crc32(account.casefold().encode("utf-8", "surrogatepass")) / 2**32
        return cls(period, fraction * period)

    def snap(self, when: datetime) -> datetime:
        """The grid instant nearest to ``when``."""
        offset = (when - _EPOCH).total_seconds() - self.phase
        steps = math.floor(offset / self.period + 0.5)
        return _EPOCH + timedelta(seconds=steps * self.period + self.phase)

    def at_or_before(self, when: datetime) -> datetime:
        """The latest grid instant not after ``when``: snapping there never lengthens a gap."""
        offset = (when - _EPOCH).total_seconds() - self.phase
        steps = math.floor(offset / self.period + 1e-9)
        return _EPOCH + timedelta(seconds=steps * self.period + self.phase)
