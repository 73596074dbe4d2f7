"""What a valid useapi.net PixVerse id looks like, and how to read ids from text lines.

Pure functions: validation happens before anything touches the database or the network.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pixverse_tracker.rules.errors import TrackerError

MAX_ID_LENGTH = 512

# user:<n>-pixverse:<email>-video:<n> (or -image:<n>), as the upstream documents it. The email's
# local part may hold "+", ".", "-", "_" (upstream.md); we accept the usual RFC 5322 atom set
# minus anything that has a meaning in a URL path, so the id stays one harmless path segment.
_ID = re.compile(
    r"user:(?P<user>[0-9]+)"
    r"-pixverse:(?P<email>[A-Za-z0-9!$&'*+=^_`{|}~.-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"-(?P<kind>video|image):(?P<number>[0-9]+)"
)
_BAD_CHARS = re.compile(r"[\s\x00-\x1f\x7f\u0085\u2028\u2029]")


class InvalidId(TrackerError, ValueError):
    """An id the tracker refuses; the message names the problem."""


def problem_with(video_id: str) -> str | None:
    """Why ``video_id`` is not a valid id, or None when it is."""
    if video_id == "":
        return "is empty"
    if len(video_id) > MAX_ID_LENGTH:
        return f"is {len(video_id)} characters long (at most {MAX_ID_LENGTH})"
    if _BAD_CHARS.search(video_id):
        return "contains whitespace or control characters"
    if not _ID.fullmatch(video_id):
        return "does not look like user:<n>-pixverse:<email>-video:<n> (or -image:<n>)"
    return None


def validate(video_id: str) -> str:
    """Return ``video_id`` unchanged, or raise InvalidId naming the problem."""
    problem = problem_with(video_id)
    if problem is not None:
        raise InvalidId(f"invalid id {shown(video_id)}: {problem}")
    return video_id


def email_of(video_id: str) -> str | None:
    """The PixVerse account email inside a valid id."""
    match = _ID.fullmatch(video_id)
    return match.group("email") if match else None


def shown(video_id: str, limit: int = 80) -> str:
    """The id quoted for an error message: control characters escaped, long ids cut."""
    text = video_id if len(video_id) <= limit else video_id[:limit] + "..."
    return repr(text)


@dataclass(frozen=True)
class Refused:
    """One input that is not a valid id, with where it came from (1-based line, or position)."""

    where: int
    video_id: str
    problem: str

    def __str__(self) -> str:
        return f"line {self.where}: invalid id {shown(self.video_id)}: {self.problem}"


def from_lines(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(line number, id) for each non-blank line, surrounding whitespace (and a BOM) trimmed."""
    for number, line in enumerate(lines, start=1):
        text = line.strip().lstrip("\ufeff").strip()
        if text:
            yield number, text


def split_valid(numbered: Iterable[tuple[int, str]]) -> tuple[list[str], list[Refused]]:
    """Valid ids (duplicates dropped, order kept) and the refused ones with their reasons."""
    valid: dict[str, None] = {}
    refused: list[Refused] = []
    for where, video_id in numbered:
        problem = problem_with(video_id)
        if problem is None:
            valid.setdefault(video_id, None)
        else:
            refused.append(Refused(where, video_id, problem))
    return list(valid), refused
