"""No id, however hostile, makes a request outside /v2/pixverse/videos/<one path segment>."""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pixverse_tracker.rules.ids import problem_with
from pixverse_tracker.upstream.urls import VIDEOS_PATH, video_url

BASE = "https://api.useapi.net"
NASTY = st.sampled_from(["/", "?", "#", "%", "..", ".", "%2F", "%2e%2e", "\\", " ", "\n", "@", ":"])
IDS = st.one_of(
    st.text(max_size=60),
    st.lists(st.one_of(NASTY, st.text(max_size=5)), max_size=12).map("".join),
)


def _sent_path(video_id: str) -> tuple[str, str, str] | None:
    """(path, query, fragment) of the request requests would send, or None if refused."""
    try:
        url = video_url(BASE, video_id)
    except ValueError:
        return None
    prepared = requests.Request("GET", url).prepare()
    assert prepared.url is not None
    parts = urlsplit(prepared.url)
    return parts.path, parts.query, parts.fragment


@settings(max_examples=400)
@given(IDS)
@example("../../v1/admin")
@example("a/../../x?y#z")
@example("..")
@example("%2e%2e")
def test_any_id_stays_one_segment_under_the_videos_path(video_id: str) -> None:
    sent = _sent_path(video_id)
    if sent is None:  # refused outright: empty, dot segments, unencodable
        return
    path, query, fragment = sent
    assert path.startswith(VIDEOS_PATH)
    segment = path[len(VIDEOS_PATH) :]
    assert segment and "/" not in segment
    assert segment not in (".", "..")
    assert query == "" and fragment == ""


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=10**12),
    st.from_regex(r"[A-Za-z0-9._+-]{1,20}@[a-z0-9]{1,10}\.[a-z]{2,5}", fullmatch=True),
    st.sampled_from(["video", "image"]),
    st.integers(min_value=0, max_value=10**15),
)
def test_a_valid_id_arrives_intact_at_the_upstream(
    user: int, email: str, kind: str, n: int
) -> None:
    video_id = f"user:{user}-pixverse:{email}-{kind}:{n}"
    assert problem_with(video_id) is None
    sent = _sent_path(video_id)
    assert sent is not None
    assert unquote(sent[0][len(VIDEOS_PATH) :]) == video_id
