"""Logging: one line per event with a stable ``action`` key, and the token scrubbed everywhere.

An event's message text is the action and its fields (``poll video_id=... outcome=not_yet``), so
any handler shows what happened: an application's logging config, Sentry, pytest's caplog. The
tracker's own formatters read the structured fields instead (``action=poll ...`` or JSON).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS_ATTR = "fields"


def event(logger: logging.Logger, level: int, action: str, **fields: Any) -> None:
    """Log ``action`` with machine-readable fields: ``action=poll video_id=... outcome=...``."""
    if logger.isEnabledFor(level):
        template, args = _message(action, fields)
        logger.log(level, template, *args, extra={"action": action, _FIELDS_ATTR: fields})


def _message(action: str, fields: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """``("poll video_id=%s outcome=%s", (id, "not_yet"))``: the template is the same for every
    event of one shape, so a tool that groups by it (Sentry) sees one kind of line, not one per id.
    """
    template = action.replace("%", "%%") + "".join(f" {key}=%s" for key in fields)
    return template, tuple(_value(value) for value in fields.values())


class KeyValueFormatter(logging.Formatter):
    """``2026-11-29T04:31:04Z INFO tracker.poll action=poll video_id=... status=404``."""

    converter = staticmethod(time.gmtime)  # stamps in UTC, like every time the tracker stores

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, "%Y-%m-%dT%H:%M:%SZ")
        fields: dict[str, Any] = getattr(record, _FIELDS_ATTR, None) or {}
        action = getattr(record, "action", None)
        if action is not None:
            body = f"action={action}" + "".join(f" {k}={_value(v)}" for k, v in fields.items())
        else:
            body = record.getMessage()
        line = f"{stamp} {record.levelname} {record.name} {body}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    return repr(text) if (" " in text or not text) else text


class RedactSecrets(logging.Filter):
    """Replace known secrets in every record, whoever logged it (defence in depth)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        fields = getattr(record, _FIELDS_ATTR, None)
        action = getattr(record, "action", None)
        if fields is not None:
            fields = {k: self._scrub(v) for k, v in fields.items()}
            setattr(record, _FIELDS_ATTR, fields)
            if action is not None:
                # An event's message is made of its fields: make it again from the clean ones.
                record.msg, record.args = _message(str(action), fields)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed call: the handler reports it, as logging does
            return True
        if any(secret in message for secret in self._secrets):
            for secret in self._secrets:
                message = message.replace(secret, "********")
            record.msg, record.args = message, None
        if record.exc_info and record.exc_info[1] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            if any(secret in text for secret in self._secrets):
                record.exc_info = None
                record.msg = f"{message} (exception hidden: it contained a secret)"
                record.args = None
                if fields is not None:
                    record.__dict__[_FIELDS_ATTR] = {
                        **fields,
                        "exception": "hidden: it contained a secret",
                    }
        return True

    def _scrub(self, value: Any) -> Any:
        # Anything is printed with str() by the formatter, so check that text, not just strings.
        text = value if isinstance(value, str) else _value(value)
        if not any(secret in text for secret in self._secrets):
            return value
        for secret in self._secrets:
            text = text.replace(secret, "********")
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``{"ts", "level", "logger", "action", ...}``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        data: dict[str, Any] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        action = getattr(record, "action", None)
        if action is not None:
            data["action"] = action
            for key, value in (getattr(record, _FIELDS_ATTR, None) or {}).items():
                data[key] = value if isinstance(value, int | float | bool | None) else str(value)
        else:
            data["message"] = record.getMessage()
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def choose_format(setting: str, stream: Any) -> logging.Formatter:
    """``auto``: readable key=value on a terminal, JSON lines otherwise."""
    if setting == "json" or (setting == "auto" and not _isatty(stream)):
        return JsonFormatter()
    return KeyValueFormatter()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def configure(
    level: str = "INFO", secrets: list[str] | None = None, log_format: str = "auto"
) -> None:
    """Send everything to stderr (JSON unless on a terminal), with secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(choose_format(log_format, sys.stderr))
    handler.addFilter(RedactSecrets(secrets or []))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party chatter that is noise at INFO.
    for noisy in ("urllib3", "kombu", "amqp"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
