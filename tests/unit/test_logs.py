"""Unit tests for pixverse_tracker.logs: the key=value line format, and the token never reaching a log."""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from pixverse_tracker.logs import KeyValueFormatter, RedactSecrets, event

TOKEN = "tok-Zq81-DISTINCTIVE-5ecr3t-77aa"
OTHER_SECRET = "second-secret-value-31337"
VID = "user:1-pixverse:a+b@x.com-video:42"


@dataclass
class Captured:
    logger: logging.Logger
    stream: io.StringIO

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def lines(self) -> list[str]:
        return self.text.splitlines()


@pytest.fixture
def captured() -> Iterator[Captured]:
    """A private logger writing through the real formatter and filter into memory."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RedactSecrets([TOKEN, OTHER_SECRET, ""]))
    logger = logging.getLogger(f"test.logs.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield Captured(logger, stream)
    logger.removeHandler(handler)


def body(line: str) -> str:
    """The line without its timestamp."""
    return line.split(" ", 1)[1]


# ---------------------------------------------------------------------------------------------
# the format
# ---------------------------------------------------------------------------------------------


def test_an_event_is_one_line_of_action_and_fields(captured: Captured) -> None:
    event(captured.logger, logging.INFO, "poll", video_id=VID, outcome="not_yet", http_status=404)
    [line] = captured.lines
    assert body(line) == (
        f"INFO {captured.logger.name} action=poll video_id={VID} outcome=not_yet http_status=404"
    )


def test_field_values_with_spaces_or_empty_are_quoted_and_floats_rounded(
    captured: Captured,
) -> None:
    event(
        captured.logger, logging.WARNING, "poll", reason="read timed out", note="", latency=0.12345
    )
    [line] = captured.lines
    assert body(line).endswith("action=poll reason='read timed out' note='' latency=0.123")
    assert body(line).startswith("WARNING ")


def test_a_plain_log_call_prints_its_formatted_message(captured: Captured) -> None:
    captured.logger.warning("polled %d ids in %s", 3, "batch-1")
    [line] = captured.lines
    assert body(line) == f"WARNING {captured.logger.name} polled 3 ids in batch-1"


def test_an_event_below_the_level_is_not_logged(captured: Captured) -> None:
    captured.logger.setLevel(logging.INFO)
    event(captured.logger, logging.DEBUG, "poll", video_id=VID)
    assert captured.text == ""


def test_the_timestamp_is_utc_with_a_z() -> None:
    record = logging.LogRecord("tracker.poll", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1795926664.0  # 2026-11-29T04:31:04Z
    assert KeyValueFormatter().format(record).startswith("2026-11-29T04:31:04Z INFO tracker.poll ")


class Collecting(logging.Handler):
    """A handler of someone else's: it knows nothing of the tracker's fields or formatters."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def foreign() -> Iterator[tuple[logging.Logger, Collecting]]:
    handler = Collecting()
    logger = logging.getLogger(f"test.foreign.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield logger, handler
    logger.removeHandler(handler)


def test_a_foreign_handler_sees_the_event_and_its_fields_in_the_message(
    foreign: tuple[logging.Logger, Collecting],
) -> None:
    logger, handler = foreign
    event(logger, logging.WARNING, "poll", video_id=VID, outcome="transient", latency=0.25,
          reason="read timed out")  # fmt: skip
    [record] = handler.records
    assert record.getMessage() == (
        f"poll video_id={VID} outcome=transient latency=0.250 reason='read timed out'"
    )
    shown = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert shown == f"WARNING {logger.name}: {record.getMessage()}"


def test_events_of_one_shape_share_one_message_template(
    foreign: tuple[logging.Logger, Collecting],
) -> None:
    # Sentry and similar tools group lines by the unformatted message
    logger, handler = foreign
    event(logger, logging.INFO, "poll", video_id=VID, outcome="not_yet")
    event(logger, logging.INFO, "poll", video_id=VID + "1", outcome="record")
    first, second = handler.records
    assert first.msg == second.msg == "poll video_id=%s outcome=%s"
    assert first.getMessage() != second.getMessage()


def test_an_event_whose_value_holds_a_percent_sign_is_shown_as_it_is(
    foreign: tuple[logging.Logger, Collecting],
) -> None:
    logger, handler = foreign
    event(logger, logging.INFO, "anomaly", detail="100% done, %s and %(x)s")
    assert handler.records[0].getMessage() == "anomaly detail='100% done, %s and %(x)s'"


def test_the_token_is_redacted_in_the_message_a_foreign_handler_reads(
    foreign: tuple[logging.Logger, Collecting],
) -> None:
    logger, handler = foreign
    handler.addFilter(RedactSecrets([TOKEN]))
    event(logger, logging.WARNING, "poll", video_id=VID, reason=f"echoed {TOKEN} back")
    [record] = handler.records
    assert TOKEN not in record.getMessage()
    assert record.getMessage() == f"poll video_id={VID} reason='echoed ******** back'"


# ---------------------------------------------------------------------------------------------
# redaction
# ---------------------------------------------------------------------------------------------


def test_a_token_in_the_message_is_replaced_by_stars(captured: Captured) -> None:
    captured.logger.error(f"upstream said: bad token Bearer {TOKEN}")
    assert TOKEN not in captured.text
    assert body(captured.lines[0]).endswith("upstream said: bad token Bearer ********")


def test_a_token_in_the_arguments_is_replaced_by_stars(captured: Captured) -> None:
    captured.logger.info("header %s for %s", f"Bearer {TOKEN}", VID)
    assert TOKEN not in captured.text
    assert body(captured.lines[0]).endswith(f"header Bearer ******** for {VID}")


def test_every_known_secret_is_replaced(captured: Captured) -> None:
    captured.logger.info("%s and %s and %s", TOKEN, OTHER_SECRET, TOKEN)
    assert body(captured.lines[0]).endswith("******** and ******** and ********")


def test_a_token_in_event_fields_is_replaced_by_stars(captured: Captured) -> None:
    event(captured.logger, logging.WARNING, "poll", video_id=VID, reason=f"echoed {TOKEN} back")
    [line] = captured.lines
    assert TOKEN not in line
    assert body(line).endswith(f"action=poll video_id={VID} reason='echoed ******** back'")


def test_non_string_fields_without_secrets_are_kept_as_they_are(captured: Captured) -> None:
    event(captured.logger, logging.INFO, "dispatch", claimed=25, latency=1.5, ok=True)
    assert body(captured.lines[0]).endswith("action=dispatch claimed=25 latency=1.500 ok=True")


def test_an_exception_mentioning_the_token_is_hidden(captured: Captured) -> None:
    try:
        raise RuntimeError(f"connect failed with Authorization: Bearer {TOKEN}")
    except RuntimeError:
        captured.logger.exception("fetch failed")
    assert TOKEN not in captured.text
    assert "Traceback" not in captured.text
    assert captured.lines == [
        captured.lines[0].split(" ", 1)[0]
        + f" ERROR {captured.logger.name} fetch failed (exception hidden: it contained a secret)"
    ]


def test_an_exception_without_the_token_keeps_its_traceback(captured: Captured) -> None:
    try:
        raise RuntimeError("connection reset")
    except RuntimeError:
        captured.logger.exception("fetch failed")
    assert "Traceback (most recent call last)" in captured.text
    assert "RuntimeError: connection reset" in captured.text


def test_an_exception_mentioning_the_token_is_hidden_when_the_message_has_arguments(
    captured: Captured,
) -> None:
    try:
        raise RuntimeError(f"Bearer {TOKEN} refused")
    except RuntimeError:
        captured.logger.exception("fetch failed for %s", VID)
    assert TOKEN not in captured.text
    assert body(captured.lines[0]).endswith(
        f"fetch failed for {VID} (exception hidden: it contained a secret)"
    )


def test_a_token_inside_a_non_string_field_is_replaced_by_stars(captured: Captured) -> None:
    event(
        captured.logger,
        logging.ERROR,
        "store_failed",
        error=RuntimeError(f"Bearer {TOKEN}"),
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert captured.lines
    assert TOKEN not in captured.text


def test_a_malformed_log_call_does_not_raise_out_of_the_filter() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "polled %d ids", ("three",), None)
    # the handler then reports it as "--- Logging error ---", as plain logging does
    assert RedactSecrets([TOKEN]).filter(record) is True


def test_without_secrets_records_pass_through_untouched() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "a %s", ("b",), None)
    assert RedactSecrets(["", ""]).filter(record) is True
    assert (record.msg, record.args) == ("a %s", ("b",))


def test_the_filter_never_drops_a_record() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, f"t={TOKEN}", None, None)
    assert RedactSecrets([TOKEN]).filter(record) is True
    assert record.getMessage() == "t=********"


def test_json_lines_carry_the_action_and_fields_and_never_the_token() -> None:
    import io
    import json

    from pixverse_tracker.logs import JsonFormatter, choose_format

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(choose_format("auto", stream))  # not a terminal: JSON
    handler.addFilter(RedactSecrets([TOKEN]))
    logger = logging.getLogger("test.json.lines")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        event(
            logger,
            logging.INFO,
            "poll",
            video_id=VID,
            outcome="not_yet",
            http_status=404,
            latency=0.25,
            reason=f"echo {TOKEN}",
        )
    finally:
        logger.removeHandler(handler)
    assert isinstance(handler.formatter, JsonFormatter)
    line = json.loads(stream.getvalue())
    assert line["action"] == "poll" and line["video_id"] == VID
    assert (line["http_status"], line["latency"], line["level"]) == (404, 0.25, "INFO")
    assert line["ts"].endswith("Z")
    assert TOKEN not in stream.getvalue()
