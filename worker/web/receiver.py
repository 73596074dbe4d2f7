"""The receiver for useapi.net's ``replyUrl`` pushes: a WSGI app turning each push into a hint
(the id is due now; nothing pushed is stored), and the same app built from the environment for
production WSGI servers (``gunicorn 'pixverse_tracker.web.receiver:application'``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, BinaryIO
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

from sqlalchemy.exc import SQLAlchemyError

from pixverse_tracker import logs
from pixverse_tracker.rules import ids
from pixverse_tracker.service.database import describe_error
from pixverse_tracker.service.hints import make_due
from pixverse_tracker.service.runtime import Runtime
from pixverse_tracker.settings import DATABASE, LOGGING, RECEIVER, SettingsError, load
from pixverse_tracker.settings.parsing import DIGITS
from pixverse_tracker.web.receiver_config import ReceiverConfig, from_settings

log = logging.getLogger("tracker.push")


# The URL path keeps its old word: the replyUrls already handed to useapi.net name it, and a
# push to a path that moved would be a 404 (README "Renamed in 0.2: the inbound push").
PUSH_PREFIX = "/callbacks/"
HEALTH_PATH = "/healthz"
MASKED_PATH = PUSH_PREFIX + "****"
READ_CHUNK = 65_536
RETRY_AFTER_SECONDS = "30"


@dataclass(frozen=True)
class _Reply:
    """One answer and what its log line says about it."""

    status: HTTPStatus
    payload: dict[str, Any] | str
    outcome: str
    level: int = logging.INFO
    video_id: str | None = None
    detail: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    exception: BaseException | None = None


# Refusals whose reason goes into the log line too (a 404 must say nothing more than "not found").
_EXPLAINED = (
    HTTPStatus.BAD_REQUEST,
    HTTPStatus.REQUEST_TIMEOUT,
    HTTPStatus.LENGTH_REQUIRED,
    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
)


def _error(
    status: HTTPStatus, message: str, outcome: str, level: int = logging.WARNING, **kw: Any
) -> _Reply:
    if status in _EXPLAINED:
        kw.setdefault("detail", message)  # the log says why, as the answer does
    return _Reply(status, {"error": message}, outcome, level, **kw)


# One body for every 404, so a wrong secret looks exactly like a path that does not exist.
_NOT_FOUND_MESSAGE = "not found"


def _respond(start_response: StartResponse, reply: _Reply, *, head: bool) -> list[bytes]:
    if isinstance(reply.payload, str):
        body, content_type = reply.payload.encode(), "text/plain; charset=utf-8"
    else:
        body, content_type = json.dumps(reply.payload).encode(), "application/json"
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-store"),
        *reply.headers,
    ]
    start_response(f"{reply.status.value} {reply.status.phrase}", headers)
    return [] if head else [body]


class _Receiver:
    """Routes one request; every expected outcome is a _Reply, never an exception."""

    def __init__(self, rt: Runtime, config: ReceiverConfig) -> None:
        self._rt = rt
        self._config = config
        self._secret = config.secret.reveal()
        self._secret_digest = hashlib.sha256(self._secret.encode()).digest()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        started = time.monotonic()
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        path = str(environ.get("PATH_INFO", "")) or "/"
        try:
            reply = self._route(method, path, environ)
        except Exception as exc:  # noqa: BLE001 - a bug still answers and logs its line
            reply = _error(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                "internal error",
                "bug",
                logging.ERROR,
                exception=exc,
            )
        self._log(reply, method, path, started)
        return _respond(start_response, reply, head=method == "HEAD")

    def _route(self, method: str, path: str, environ: WSGIEnvironment) -> _Reply:
        if path == HEALTH_PATH:
            if method not in ("GET", "HEAD"):
                return _error(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    "method not allowed",
                    "method_not_allowed",
                    headers=(("Allow", "GET, HEAD"),),
                )
            # Liveness only: touching the database here would let a database outage restart
            # receivers that are fine (and answer 503 to pushes on their own anyway).
            return _Reply(HTTPStatus.OK, "ok", "health", logging.DEBUG)
        if path.startswith(PUSH_PREFIX) and self._secret_matches(path[len(PUSH_PREFIX) :]):
            if method != "POST":
                return _error(
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    "method not allowed",
                    "method_not_allowed",
                    headers=(("Allow", "POST"),),
                )
            return self._push(environ)
        if path == PUSH_PREFIX.rstrip("/") or path.startswith(PUSH_PREFIX):
            return _error(HTTPStatus.NOT_FOUND, _NOT_FOUND_MESSAGE, "wrong_secret")
        return _error(HTTPStatus.NOT_FOUND, _NOT_FOUND_MESSAGE, "not_found", logging.INFO)

    def _secret_matches(self, given: str) -> bool:
        # PATH_INFO is bytes decoded as latin-1 (PEP 3333). Hashing first makes the comparison
        # independent of the given length too, not just of where the first difference is.
        digest = hashlib.sha256(given.encode("latin-1", "replace")).digest()
        return hmac.compare_digest(digest, self._secret_digest)

    def _push(self, environ: WSGIEnvironment) -> _Reply:
        body = self._read_body(environ)
        if isinstance(body, _Reply):
            return body
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
            message = "the body is empty" if not body.strip() else "the body is not valid JSON"
            return _error(HTTPStatus.BAD_REQUEST, message, "invalid")
        if not isinstance(data, dict):
            return _error(HTTPStatus.BAD_REQUEST, "the body is not a JSON object", "invalid")
        video_id, problem = _video_id_of(data)
        if video_id is None:
            return _error(HTTPStatus.BAD_REQUEST, problem, "invalid")
        try:
            # The pushed record is deliberately ignored: it is unsigned and may be forged,
            # stale or replayed. The next poll reads the truth from the upstream itself.
            moved = make_due(self._rt, video_id)
        except SQLAlchemyError as exc:
            # Nothing is lost by refusing: the row keeps its poll schedule, and an upstream
            # that retries will find us back.
            return _error(
                HTTPStatus.SERVICE_UNAVAILABLE,
                "database unavailable",
                "db_error",
                logging.ERROR,
                video_id=video_id,
                detail=describe_error(exc),
                headers=(("Retry-After", RETRY_AFTER_SECONDS),),
            )
        # 202 even when nothing moved (unknown, finished or being polled): an error would make
        # a retrying sender insist, and would tell a stranger which ids we track.
        return _Reply(
            HTTPStatus.ACCEPTED,
            {"accepted": True, "due_now": moved},
            "due_now" if moved else "ignored",
            video_id=video_id,
        )

    def _read_body(self, environ: WSGIEnvironment) -> bytes | _Reply:
        cap = self._config.max_body_bytes
        stream: BinaryIO = environ["wsgi.input"]
        too_large = _error(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"the body is larger than {cap} bytes",
            "too_large",
        )
        raw_length = str(environ.get("CONTENT_LENGTH") or "").strip()
        try:
            if raw_length:
                if not DIGITS.fullmatch(raw_length):
                    return _error(HTTPStatus.BAD_REQUEST, "invalid Content-Length", "invalid")
                length = int(raw_length)
                if length > cap:
                    return too_large  # refused before reading a byte of it
                body = _read_at_most(stream, length)
                if len(body) < length:
                    return _error(HTTPStatus.BAD_REQUEST, "the body was cut short", "invalid")
                return body
            if environ.get("wsgi.input_terminated"):
                # The server delimits the body itself (gunicorn, chunked uploads): one byte
                # past the cap is enough to know it is too large.
                body = _read_at_most(stream, cap + 1)
                return too_large if len(body) > cap else body
        except TimeoutError:  # the body missed its deadline (TRACKER_PUSH_BODY_TIMEOUT)
            return _error(
                HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time", "body_timeout"
            )
        except OSError:  # the client hung up
            return _error(HTTPStatus.BAD_REQUEST, "the body could not be read", "invalid")
        if environ.get("HTTP_TRANSFER_ENCODING"):
            # A chunked body on a server that does not decode it (wsgiref): ask for a length
            # rather than parse chunk framing as JSON.
            return _error(HTTPStatus.LENGTH_REQUIRED, "a Content-Length is required", "invalid")
        # Neither a length nor a server that ends the stream: per HTTP there is no body, and
        # reading would block until the client closes the connection.
        return b""

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "****")

    def _masked(self, path: str) -> str:
        """``path`` with the secret, and anything after a ``/callbacks/``, replaced by stars."""
        # Also a path a proxy forwarded under a prefix, e.g. /tracker/callbacks/<secret>.
        head, sep, _ = self._scrub(path).partition(PUSH_PREFIX)
        # PATH_INFO arrives percent-decoded: encode blanks and controls again, so a %0A in a
        # URL cannot start a forged line in a text log.
        return _UNPRINTABLE.sub(_percent, head + MASKED_PATH if sep else head[:200])

    def _log(self, reply: _Reply, method: str, path: str, started: float) -> None:
        fields: dict[str, Any] = {
            "outcome": reply.outcome,
            "status": reply.status.value,
            "method": method[:16],
            "path": self._masked(path),
        }
        if reply.video_id is not None:
            fields["video_id"] = reply.video_id
        if reply.detail is not None:
            fields["detail"] = self._scrub(reply.detail)
        fields["seconds"] = time.monotonic() - started
        if reply.exception is not None:
            # logs.event has no traceback; the redacting filter still scrubs this one.
            extra = {"action": "push", "fields": fields}
            log.log(reply.level, "push", exc_info=reply.exception, extra=extra)
            return
        logs.event(log, reply.level, "push", **fields)


_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\xa0%]")


def _percent(match: re.Match[str]) -> str:
    return f"%{ord(match.group()):02X}"


def _video_id_of(data: Mapping[str, Any]) -> tuple[str | None, str]:
    """The id a pushed record is about, or None and the problem, fit for a 400 answer."""
    raw = data.get("video_id")
    if raw is None:
        # replyRef is whatever we passed on create: usable when we passed the id itself.
        ref = data.get("replyRef")
        if isinstance(ref, str) and ids.problem_with(ref) is None:
            return ref, ""
        return None, "the body has no video_id (nor a replyRef that is a video id)"
    if not isinstance(raw, str):
        return None, "video_id is not a string"
    problem = ids.problem_with(raw)
    if problem is not None:
        return None, f"video_id {problem}"
    return raw, ""


def _read_at_most(stream: BinaryIO, limit: int) -> bytes:
    """Up to ``limit`` bytes: a short read is not the end of a socket stream, only EOF is."""
    body = bytearray()
    while len(body) < limit:
        chunk = stream.read(min(READ_CHUNK, limit - len(body)))
        if not chunk:
            break
        body += chunk
    return bytes(body)


def make_app(rt: Runtime, config: ReceiverConfig) -> WSGIApplication:
    """The receiver as a WSGI application writing through ``rt``'s database."""
    return _Receiver(rt, config)


# --- for production WSGI servers: `gunicorn 'pixverse_tracker.web.receiver:application'` ------


@dataclass(frozen=True)
class _Built:
    pid: int
    rt: Runtime
    app: WSGIApplication


_build_lock = threading.Lock()


_built: _Built | None = None


def _production_app() -> _Built:
    global _built
    built = _built
    # Rebuilt in a forked child: engines and their connections must not cross a fork.
    if built is not None and built.pid == os.getpid():
        return built
    with _build_lock:
        if _built is None or _built.pid != os.getpid():
            settings = load(needs=(DATABASE, LOGGING, RECEIVER))
            settings.require_database()  # never a stray local file: name the tracker's database
            config = from_settings(settings)
            logs.configure(
                settings.log_level,
                secrets=[config.secret.reveal(), settings.useapi_token.reveal()],
                log_format=settings.log_format,
            )
            rt = Runtime(settings)
            _built = _Built(os.getpid(), rt, make_app(rt, config))
        return _built


def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    """The receiver built from the environment on first request (DATABASE_URL, the secret...)."""
    try:
        built = _production_app()
    except SettingsError as exc:
        # /healthz fails too, so a probe notices a receiver that cannot work.
        reply = _error(
            HTTPStatus.INTERNAL_SERVER_ERROR,
            "receiver misconfigured",
            "misconfigured",
            logging.ERROR,
            detail=str(exc),
        )
        logs.event(log, reply.level, "push", outcome=reply.outcome, status=500, detail=str(exc))
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        return _respond(start_response, reply, head=method == "HEAD")
    return built.app(environ, start_response)
