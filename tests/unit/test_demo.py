"""Unit tests for the demo's progress view: a live view on a terminal, one line per change elsewhere."""

from __future__ import annotations

import io
import logging
import re

from pixverse_tracker.cli.demo import progress_view
from pixverse_tracker.logs import event


class Terminal(io.StringIO):
    """Output that says it is a terminal, as a real one would, so rich draws its live view."""

    def isatty(self) -> bool:
        return True


def counts(done: int, abandoned: int, pending: int) -> dict[str, int]:
    return {"done": done, "abandoned": abandoned, "pending": pending}


def screen_lines(text: str) -> list[str]:
    """What the terminal shows, line by line: control sequences dropped, redraws split apart."""
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    return [line for line in re.split(r"[\r\n]", plain) if line.strip()]


def test_without_a_terminal_each_change_is_one_line_and_no_bar_is_drawn() -> None:
    out = io.StringIO()
    with progress_view(out, 4) as show:
        show(counts(0, 0, 4), 0.0)
        show(counts(0, 0, 4), 0.5)  # nothing changed: nothing printed
        show(counts(1, 0, 3), 1.0)
        show(counts(1, 0, 3), 1.5)
        show(counts(3, 1, 0), 2.0)
    assert out.getvalue().splitlines() == [
        "0/4 finished  (done 0, abandoned 0, pending 4)     0s",
        "1/4 finished  (done 1, abandoned 0, pending 3)     1s",
        "4/4 finished  (done 3, abandoned 1, pending 0)     2s",
    ]


def test_on_a_terminal_log_records_are_printed_above_the_live_bar_not_through_it() -> None:
    out = Terminal()
    root = logging.getLogger()
    before = root.handlers[:]
    log = logging.getLogger("tracker.poll")
    with progress_view(out, 4) as show:
        show(counts(1, 0, 3), 1.0)
        event(log, logging.WARNING, "poll", video_id="v1", outcome="transient", http_status=500)
        show(counts(2, 0, 2), 2.0)
    assert root.handlers == before, "the view gives the log handlers back"
    lines = screen_lines(out.getvalue())
    logged = [line for line in lines if "poll video_id=v1" in line]
    assert logged, lines
    assert all("finished" not in line and "#" not in line for line in logged), lines
    assert "outcome=transient http_status=500" in logged[0]
    assert lines[-1].startswith("[" + "#" * 15 + "-" * 15 + "] 2/4 finished"), lines
