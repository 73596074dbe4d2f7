"""The scenarios the simulator plays: named in a video id's email tag
(``sim+generating_2_6@example.com``) or set with ``script()``, and what one request sees of one."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Parameter names per scenario, in the order they follow the name in the tag.
# N counts requests (integer); A, D and S are seconds (decimals allowed).
_SCENARIO_PARAMS: dict[str, tuple[str, ...]] = {
    "completed": ("D",),
    "generating": ("A", "D"),
    "failed": ("D",),
    "moderated": ("D",),
    "deleted": ("D",),
    "rejected": (),
    "ratelimit": ("N", "D"),
    "retryafter": ("N", "S", "D"),
    "errors": ("N", "D"),
    "slow": ("N", "S", "D"),
    "garbage": ("N", "D"),
    "queuedfinal": ("A", "D"),
    "nourl": ("A", "D"),
    "unknown": ("A", "D"),
    "hostile": ("N", "D"),
    "queued": ("Q", "D"),
    "deep": ("D",),
    "echo": ("D",),
    "badurl": ("D",),
    "never": (),
}

_COUNT_RE = re.compile(r"\d+")

_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?")

# The tag is whatever sits between a "+" and the "@" of the email inside the id.
_TAG_RE = re.compile(r"\+([^+@]*)@")


@dataclass(frozen=True)
class Scenario:
    name: str
    params: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Moment:
    """What a scenario needs to know to answer one request for one id."""

    video_id: str
    elapsed: float
    ordinal: int
    created_at: str
    params: dict[str, float]
    token: str = ""  # the token the simulator accepts, for a scenario that echoes it


def make_id(scenario: str, n: int, user: int = 1, kind: str = "video") -> str:
    """Build a useapi.net-shaped id whose email tag names the scenario the simulator plays."""
    return f"user:{user}-pixverse:sim+{scenario}@example.com-{kind}:{n}"


def _parse_param(name: str, raw: str) -> float:
    pattern = _COUNT_RE if name == "N" else _SECONDS_RE
    if not pattern.fullmatch(raw):
        raise ValueError(f"parameter {name} must be a non-negative number, got {raw!r}")
    return float(raw)


def parse_scenario(text: str, default_delay: float) -> Scenario:
    """Parse ``name_p1_p2`` into a scenario; a missing trailing D takes its default."""
    name, *raw = text.strip().lower().split("_")
    names = _SCENARIO_PARAMS.get(name)
    if names is None:
        raise ValueError(f"unknown scenario {name!r}")
    optional_d = 1 if names[-1:] == ("D",) else 0
    if not len(names) - optional_d <= len(raw) <= len(names):
        raise ValueError(f"scenario {name!r} takes parameters {'_'.join(names) or 'none'}")
    params = {key: _parse_param(key, value) for key, value in zip(names, raw, strict=False)}
    if optional_d and "D" not in params:
        # A bare "deleted" means gone from the first request; others wait the default delay.
        params["D"] = 0.0 if name == "deleted" else default_delay
    if "Q" in params and params["Q"] > params["D"]:
        raise ValueError("Q must not exceed D")
    return Scenario(name, params)


def scenario_from_id(video_id: str, default_delay: float) -> Scenario:
    match = _TAG_RE.search(video_id)
    if match is not None:
        try:
            return parse_scenario(match.group(1), default_delay)
        except ValueError:
            pass  # an ordinary email tag (john+work@...) is not a script: use the default
    return Scenario("completed", {"D": default_delay})


def final_after(scenario: Scenario) -> float | None:
    """Seconds after first sight at which the scenario reaches its true final state."""
    if scenario.name in ("never", "rejected"):
        return None
    return scenario.params["D"]
