"""The /metrics endpoint: what one process serves (its worker metrics, the table gauges if it
reads them, the process collectors) on the port its setting names.

Each process serves only what it produces: beat shows no empty worker histograms.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pixverse_tracker.logs import event
from pixverse_tracker.service.metrics import GAUGES, WORKER_METRICS, Gauge, table_reader
from pixverse_tracker.service.runtime import Runtime

log = logging.getLogger("tracker.metrics")


_started: set[int] = set()
_lock = threading.Lock()


class TableCollector(Collector):
    """Gauges read from the database at scrape time (cached briefly against rapid scrapes)."""

    def __init__(self, read: Callable[[], list[Gauge]], ttl: float = 5.0) -> None:
        self._read = read  # () -> [(name, labels, value)], or raises
        self._ttl = ttl
        self._cached: tuple[float, list[Gauge]] | None = None
        self._lock = threading.Lock()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families: dict[str, GaugeMetricFamily] = {}
        for name, labels, value in self._values():
            if name not in families:
                families[name] = GaugeMetricFamily(name, GAUGES[name], labels=sorted(labels))
            families[name].add_metric([labels[k] for k in sorted(labels)], value)
        yield from families.values()

    def _values(self) -> list[Gauge]:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > self._ttl:
                try:
                    values = [("tracker_database_up", {}, 1.0), *self._read()]
                except Exception as exc:  # noqa: BLE001 - a scrape must never fail
                    event(log, logging.WARNING, "metrics_read_failed", error=type(exc).__name__)
                    values = [("tracker_database_up", {}, 0.0)]
                self._cached = (now, values)
            return self._cached[1]


def registry(
    table: Callable[[], list[Gauge]] | None = None, *, work: bool = True
) -> CollectorRegistry:
    """What one process serves: the worker metrics if it ``work``s, the table gauges if it has
    a ``table`` reader, and always the process and platform collectors."""
    served = CollectorRegistry(auto_describe=True)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        served.register(standard)
    if work:
        for metric in WORKER_METRICS:
            served.register(metric)
    if table is not None:
        served.register(TableCollector(table))
    return served


def serve(
    port: int,
    rt: Runtime | None = None,
    *,
    work: bool = True,
    variable: str = "TRACKER_METRICS_PORT",
) -> bool:
    """Expose /metrics on ``port`` (0: off); with ``rt``, also the table gauges.

    ``variable`` names the setting the port came from, for the line logged when the port
    cannot be had: that is logged, not fatal, since metrics must never stop the tracker.
    """
    if port == 0:
        return False
    with _lock:
        if port in _started:
            return True
        served = registry(table_reader(rt) if rt is not None else None, work=work)
        try:
            start_http_server(port, registry=served)
        except OSError as exc:
            event(
                log, logging.WARNING, "metrics_unavailable", detail=unavailable(port, variable, exc)
            )
            return False
        _started.add(port)
    event(log, logging.INFO, "metrics_listening", port=port)
    return True


def unavailable(port: int, variable: str, exc: OSError) -> str:
    """The operator's line for a metrics port that could not be opened."""
    if exc.errno == errno.EADDRINUSE:
        why = "is already in use (another tracker process on this host?)"
    else:
        why = f"cannot be opened: {exc.strerror or exc}"
    return (
        f"metrics port {port} ({variable}) {why}; this process serves no /metrics. "
        f"Give each process on this host its own {variable}, or 0 to turn it off"
    )
