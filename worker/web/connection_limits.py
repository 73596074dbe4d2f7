"""Limits on the receiver's connections: a cap, and deadlines for a whole request's arrival.

A slow client (slowloris) sends its request a byte at a time; a timeout that restarts with every
byte never ends it. So each request gets two deadlines on the wall clock: its request line and
headers within ``header_timeout`` of its first byte (or of the accept), its body within
``body_timeout`` of the end of its headers. A connection that misses one is closed. The cap
bounds how many connections are open at once; beyond it, new ones wait in the listen queue
instead of taking memory, threads or file descriptors. Both receiver servers apply these
(``web.builtin_server`` and ``web.waitress_server``).
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

from pixverse_tracker.settings import SettingsError
from pixverse_tracker.settings.values import (
    PUSH_BODY_TIMEOUT,
    PUSH_HEADER_TIMEOUT,
    PUSH_MAX_CONNECTIONS,
)

MAX_CONNECTIONS_VARIABLE = "TRACKER_PUSH_MAX_CONNECTIONS"

# Descriptors a receiver needs besides its connections: stdio, the listening socket, the
# database pool, waitress's wake-up pipe, imported files. Generous, since running out costs more.
RESERVED_FILES = 64
# The kernel's listen queue (capped by net.core.somaxconn): socketserver's default of 5 drops
# the SYNs of any burst of connections, and each dropped one waits 1 s, then 3 s, to retry.
LISTEN_BACKLOG = 1024


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections at once, and how long a request may take to arrive."""

    # The settings' defaults (TRACKER_PUSH_*, read by the settings package).
    max_connections: int = PUSH_MAX_CONNECTIONS
    header_timeout: float = PUSH_HEADER_TIMEOUT
    body_timeout: float = PUSH_BODY_TIMEOUT


def deadline(limits: ConnectionLimits, started: float, headers_done: float | None) -> float:
    """When the request being received must have arrived whole (same clock as the arguments).

    ``started`` is when its first byte came (or the connection was accepted), ``headers_done``
    when its headers were complete, None while they are not.
    """
    if headers_done is None:
        return started + limits.header_timeout
    return headers_done + limits.body_timeout


# --- fitting the cap to the process's open-file limit -----------------------------------------


@dataclass(frozen=True)
class FileFit:
    """What to do about RLIMIT_NOFILE: the soft limit to set (None: leave it) and the cap."""

    soft_limit: int | None
    max_connections: int

    def lowered_from(self, wanted: int) -> str | None:
        """A line saying the cap was lowered, or None when it was not."""
        if self.max_connections >= wanted:
            return None
        return (
            f"{MAX_CONNECTIONS_VARIABLE}={wanted} does not fit the open-file limit: "
            f"accepting at most {self.max_connections} connections (raise `ulimit -n`, "
            "or the container's nofile limit, to allow more)"
        )


def fit(max_connections: int, soft: int, hard: int) -> FileFit:
    """Raise the soft limit toward what the cap needs (never past the hard one), else lower the cap.

    Out of descriptors, accept() fails at once while the listening socket stays readable: a
    server without this busy-loops and answers nobody. Values of resource.RLIM_INFINITY (-1)
    mean no limit.
    """
    needed = max_connections + RESERVED_FILES
    unlimited = resource.RLIM_INFINITY
    if soft == unlimited or soft >= needed:
        return FileFit(None, max_connections)
    raised = needed if hard == unlimited else min(hard, needed)  # >= soft, as hard >= soft
    available = raised - RESERVED_FILES
    if available < 1:
        raise SettingsError(
            f"the open-file limit ({raised}) leaves no room for connections: "
            f"the receiver needs at least {RESERVED_FILES + 1} (`ulimit -n`)"
        )
    return FileFit(raised if raised > soft else None, min(max_connections, available))


def fit_open_files(limits: ConnectionLimits) -> tuple[ConnectionLimits, str | None]:
    """Apply ``fit`` to this process; the limits to use and a line to log if the cap was cut."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fitted = fit(limits.max_connections, soft, hard)
    if fitted.soft_limit is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (fitted.soft_limit, hard))
    cap = fitted.max_connections
    return (
        ConnectionLimits(cap, limits.header_timeout, limits.body_timeout),
        fitted.lowered_from(limits.max_connections),
    )


def describe(limits: ConnectionLimits) -> str:
    """The limits in words, for the start-up line."""
    return (
        f"at most {limits.max_connections} connections, request headers within "
        f"{limits.header_timeout:g} s, bodies within {limits.body_timeout:g} s"
    )
