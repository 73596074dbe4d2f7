"""Unit tests for pixverse_tracker.rules.ids: which ids are accepted, why others are refused, reading id lists."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from pixverse_tracker.rules.ids import (
    MAX_ID_LENGTH,
    InvalidId,
    Refused,
    email_of,
    from_lines,
    problem_with,
    shown,
    split_valid,
    validate,
)

BAD_SHAPE = "does not look like user:<n>-pixverse:<email>-video:<n> (or -image:<n>)"
BAD_CHARS = "contains whitespace or control characters"
VALID = "user:123-pixverse:someone@example.com-video:456789"


@pytest.mark.parametrize(
    "video_id",
    [
        VALID,
        "user:1-pixverse:a@b.co-image:2",
        "user:1-pixverse:first.last@example.com-video:1",
        "user:1-pixverse:first+tag@example.com-video:1",
        "user:1-pixverse:first-last@my-domain.example-video:1",
        "user:1-pixverse:first_last@example.com-video:1",
        "user:1-pixverse:a.b+c-d_e@sub.example.co.uk-video:999999999999",
        "user:1-pixverse:x@y-video:0",
    ],
)
def test_well_formed_ids_are_accepted(video_id: str) -> None:
    assert problem_with(video_id) is None
    assert validate(video_id) == video_id


def test_the_email_inside_an_id_is_found() -> None:
    assert (
        email_of("user:1-pixverse:first+tag@my-domain.example-video:9")
        == "first+tag@my-domain.example"
    )
    assert email_of("user:1-pixverse:a@b.co-image:2") == "a@b.co"
    assert email_of("not an id") is None


@pytest.mark.parametrize(
    ("video_id", "problem"),
    [
        ("", "is empty"),
        ("user:1-pixverse:a@b.co-video:" + "1" * 484, "is 513 characters long (at most 512)"),
        ("user:1-pixverse:a b@b.co-video:1", BAD_CHARS),
        (" " + VALID, BAD_CHARS),
        (VALID + "\t", BAD_CHARS),
        (VALID + "\n", BAD_CHARS),
        ("user:1-pixverse:a\x00@b.co-video:1", BAD_CHARS),
        ("user:1-pixverse:a\x7f@b.co-video:1", BAD_CHARS),
        ("user:1-pixverse:a\u2028@b.co-video:1", BAD_CHARS),
        ("user:1-pixverse:a\u00a0@b.co-video:1", BAD_CHARS),
        ("user:x-pixverse:a@b.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a@b.co-video:x", BAD_SHAPE),
        ("user:1-pixverse:a@b.co-audio:1", BAD_SHAPE),
        ("user:1-pixverse:ab.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a@b.co-video:1/../x", BAD_SHAPE),
        ("user:1-pixverse:a/b@b.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a@b.co-video:1?x=1", BAD_SHAPE),
        ("user:1-pixverse:a#b@b.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a%2F@b.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a@-b.co-video:1", BAD_SHAPE),
        ("USER:1-pixverse:a@b.co-video:1", BAD_SHAPE),
        ("user:1-pixverse:a@b.co-video:1x", BAD_SHAPE),
        ("user:١-pixverse:a@b.co-video:1", BAD_SHAPE),
        ("12345", BAD_SHAPE),
    ],
)
def test_malformed_ids_are_refused_with_the_reason(video_id: str, problem: str) -> None:
    assert problem_with(video_id) == problem
    with pytest.raises(InvalidId) as caught:
        validate(video_id)
    assert str(caught.value) == f"invalid id {shown(video_id)}: {problem}"


def test_an_id_of_exactly_the_maximum_length_is_accepted() -> None:
    prefix = "user:1-pixverse:a@b.co-video:"
    video_id = prefix + "1" * (MAX_ID_LENGTH - len(prefix))
    assert len(video_id) == 512
    assert problem_with(video_id) is None


def test_an_error_message_escapes_control_characters_and_cuts_long_ids() -> None:
    assert shown("a\x00b\nc") == "'a\\x00b\\nc'"
    assert shown("x" * 200) == repr("x" * 80 + "...")


FORBIDDEN = st.sampled_from(list(" \t\n\r\x0b\x0c\x00\x01\x1f\x7f\x85\u2028\u2029\u00a0\u3000/?#"))


@given(st.text(max_size=40), FORBIDDEN, st.text(max_size=40))
@example("user:1-pixverse:a@b.co-video:1", "\n", "")
@example("user:1-pixverse:a", "/", "b@b.co-video:1")
@example("user:1-pixverse:a@b.co-video:1", "?", "x")
def test_an_id_with_whitespace_control_characters_or_url_syntax_is_never_accepted(
    before: str, bad: str, after: str
) -> None:
    assert problem_with(before + bad + after) is not None


@given(st.text(min_size=MAX_ID_LENGTH + 1, max_size=MAX_ID_LENGTH + 200))
def test_an_id_longer_than_the_limit_is_never_accepted(text: str) -> None:
    assert problem_with(text) == f"is {len(text)} characters long (at most {MAX_ID_LENGTH})"


@given(
    st.integers(0, 10**12),
    st.from_regex(r"[A-Za-z0-9+._-]{1,30}", fullmatch=True),
    st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?", fullmatch=True),
    st.sampled_from(["video", "image"]),
    st.integers(0, 10**15),
)
def test_every_well_formed_id_is_accepted(
    user: int, local: str, domain: str, kind: str, number: int
) -> None:
    video_id = f"user:{user}-pixverse:{local}@{domain}-{kind}:{number}"
    assert problem_with(video_id) is None
    assert email_of(video_id) == f"{local}@{domain}"


@given(st.text(max_size=MAX_ID_LENGTH))
def test_whatever_is_accepted_is_a_single_safe_path_segment(text: str) -> None:
    if problem_with(text) is None:
        assert not any(c in text for c in "/?#%\\ \t\r\n\x00")
        assert text.isascii()


# ---------------------------------------------------------------------------------------------
# reading id lists
# ---------------------------------------------------------------------------------------------

OTHER = "user:2-pixverse:b@c.de-image:7"


def test_from_lines_trims_whitespace_and_a_bom_and_skips_blank_lines() -> None:
    lines = [f"\ufeff{VALID}\n", "\n", "   \t\n", f"  {OTHER}  \r\n", "\ufeff\n", "last"]
    assert list(from_lines(lines)) == [(1, VALID), (4, OTHER), (6, "last")]


def test_from_lines_trims_a_bom_behind_leading_spaces() -> None:
    assert list(from_lines([f"  \ufeff{VALID}"])) == [(1, VALID)]


def test_from_lines_keeps_inner_text_as_is_for_validation_to_judge() -> None:
    assert list(from_lines(["user:1 x  \n"])) == [(1, "user:1 x")]


def test_split_valid_drops_duplicates_keeping_the_first_order() -> None:
    numbered = [(1, OTHER), (2, VALID), (3, OTHER), (4, "nope"), (5, VALID), (6, "")]
    valid, refused = split_valid(numbered)
    assert valid == [OTHER, VALID]
    assert refused == [Refused(4, "nope", BAD_SHAPE), Refused(6, "", "is empty")]


def test_split_valid_reports_each_bad_line_even_when_repeated() -> None:
    _, refused = split_valid([(1, "bad id"), (2, "bad id")])
    assert [r.where for r in refused] == [1, 2]
    assert str(refused[0]) == f"line 1: invalid id 'bad id': {BAD_CHARS}"


def test_reading_a_file_end_to_end_gives_valid_ids_and_refusals_with_line_numbers() -> None:
    text = f"\ufeff{VALID}\n\n{OTHER}\nuser:x-pixverse:a@b.co-video:1\n{VALID}\n"
    valid, refused = split_valid(from_lines(text.splitlines(keepends=True)))
    assert valid == [VALID, OTHER]
    assert refused == [Refused(4, "user:x-pixverse:a@b.co-video:1", BAD_SHAPE)]
