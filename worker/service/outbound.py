"""One webhook POST on the wire: resolved once, checked, pinned, and bounded.

The host is resolved once; every address is checked against ``addresses.AddressPolicy``; the
connection goes to exactly the address that was checked (no second lookup, so no DNS-rebinding
window), while the ``Host`` header and the TLS server name stay the URL's. The whole request,
from the lookup to the response headers, ends by one wall-clock deadline: a watchdog shuts the
socket down when it passes, so a peer that sends a byte at a time (resetting every per-read
timeout) is cut off all the same.

Only the status is read; the body of the answer is never downloaded. Redirects are not
followed (the body is signed for this URL). Errors never quote the URL.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote, urlsplit

from pixverse_tracker.rules.addresses import AddressPolicy, IPAddress, literal_address

Resolver = Callable[[str, int], list[IPAddress]]
# Left as they are in the request target: every printable ASCII character (validate_url has
# refused spaces and controls); anything else is percent-encoded, as browsers and requests do.
_TARGET_SAFE = "".join(chr(c) for c in range(33, 127))


@dataclass(frozen=True)
class Attempt:
    """What one POST came to; ``permanent`` when no retry can succeed (a forbidden address)."""

    ok: bool
    status: int | None
    error: str | None
    permanent: bool = False


class _Expired(Exception):
    """The deadline passed."""


def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in the resolver's order, without duplicates."""
    found: list[IPAddress] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in found:
            found.append(ip)
    return found


def _resolve_within(resolve: Resolver, host: str, port: int, deadline: float) -> list[IPAddress]:
    """``resolve`` in a helper thread: getaddrinfo cannot be interrupted, and a name server
    that answers slowly is as much the endpoint's choice as a slow answer. A lookup that
    outlives the deadline is left to finish on its own (the resolver's timeouts end it)."""
    result: list[IPAddress] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def run() -> None:
        try:
            result.extend(resolve(host, port))
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            failure.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, name="webhook-resolve", daemon=True).start()
    if not done.wait(max(0.0, deadline - time.monotonic())):
        raise _Expired
    if failure:
        raise failure[0]
    return result


class _Watchdog:
    """Shuts the watched socket down at the deadline, whatever the request is doing."""

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._over = False
        self._timer = threading.Timer(max(0.0, seconds), self._fire)
        self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            self._sock = sock
            late = self.fired
        if late:
            self._fire()

    def _fire(self) -> None:
        # Under the lock: once __exit__ has run, the socket may be closed and its descriptor
        # reused, so it must not be touched any more.
        with self._lock:
            if self._over:
                return
            self.fired = True
            if self._sock is not None:
                # socket.socket.shutdown, not SSLSocket's own, which would drop its TLS state
                # under the thread still reading; a blocked read returns at once either way.
                with suppress(OSError):
                    socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._over = True
        self._timer.cancel()


def _connect(candidates: list[IPAddress], port: int, deadline: float) -> socket.socket:
    """A TCP connection to the first of ``candidates`` that accepts, before the deadline."""
    failure: OSError | None = None
    for ip in candidates:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _Expired
        family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(left)
        try:
            sock.connect((str(ip), port))
        except TimeoutError:
            sock.close()
            raise _Expired from None
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        return sock
    assert failure is not None
    raise failure


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not accepted: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or type(exc).__name__}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    if isinstance(exc, http.client.HTTPException):
        return f"not an HTTP answer ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return type(exc).__name__


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    policy: AddressPolicy,
    seconds: float,
    *,
    resolve: Resolver = system_resolver,
    tls: ssl.SSLContext | None = None,
) -> Attempt:
    """POST ``body`` to ``url`` within ``seconds`` of wall-clock time; never raises."""
    deadline = time.monotonic() + seconds
    expired = Attempt(False, None, f"no answer within the {seconds:g}s deadline")
    parts = urlsplit(url)
    https = parts.scheme == "https"
    try:
        host = (parts.hostname or "").encode("idna").decode("ascii")
        port = parts.port or (443 if https else 80)
    except (UnicodeError, ValueError):
        return Attempt(False, None, "the URL's host or port is not valid", permanent=True)
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _TARGET_SAFE)

    literal = literal_address(host)
    try:
        candidates = [literal] if literal else _resolve_within(resolve, host, port, deadline)
    except _Expired:
        return expired
    except (OSError, UnicodeError, ValueError) as exc:
        return Attempt(False, None, _describe(exc))
    verdicts = [(ip, policy.refusal(host, ip)) for ip in candidates]
    allowed = [ip for ip, refusal in verdicts if refusal is None]
    refusals = [refusal for _, refusal in verdicts if refusal is not None]
    if not allowed:
        if not refusals:
            return Attempt(False, None, "the host resolved to no address")
        permanent = all(r.permanent for r in refusals)
        return Attempt(False, None, f"refused: {refusals[0].reason}", permanent=permanent)

    with _Watchdog(deadline - time.monotonic()) as watchdog:
        sock: socket.socket | None = None
        try:
            sock = _connect(allowed, port, deadline)
            watchdog.watch(sock)
            if https:
                # The handshake is bounded by the socket's timeout (the watchdog cannot reach
                # the socket while the TLS layer takes it over), so give it only what is left.
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                # The certificate is checked against the URL's host, not the address.
                context = tls or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
                watchdog.watch(sock)
            conn_class = http.client.HTTPSConnection if https else http.client.HTTPConnection
            conn = conn_class(host, port)  # never connects itself: it is handed our socket
            conn.sock = sock
            conn.request("POST", target, body=body, headers=dict(headers))
            status = conn.getresponse().status
            if watchdog.fired:  # cut off mid-headers: http.client takes the end for their end
                return expired
        except _Expired:
            return expired
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if watchdog.fired or time.monotonic() >= deadline:
                return expired
            return Attempt(False, None, _describe(exc))
        finally:
            if sock is not None:
                with suppress(OSError):
                    sock.close()
    if 200 <= status < 300:
        return Attempt(True, status, None)
    return Attempt(False, status, f"HTTP {status}")
