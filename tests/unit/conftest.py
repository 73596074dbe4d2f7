"""The unit tests' fakes of the HTTP transport, shared by the client's tests: a response body
that counts what is read of it, a transport adapter that answers from a script and records what
was sent, and ``endpoint``, the client's two reads of videos (by id and the account's list) for
the tests they share (test_client_reads.py)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
import requests
import urllib3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from pixverse_tracker.rules.outcomes import ListOutcome, Outcome, Page, Record
from pixverse_tracker.upstream.transport import UseapiClient

# Distinctive, and full of characters that percent-encode, so an echo in any form is caught.
TOKEN = "tok-SECRET+7f3a/9c1e=5b_d00d"
ENCODED_TOKEN = quote(TOKEN, safe="")
BASE = "https://api.useapi.net"
VID = "user:1-pixverse:a+b@x.com-video:1"
MB = 1024 * 1024

GENERIC_404 = "The video was deleted, not found, or is still processing."
DELETED_404 = "The original video has been deleted"


# ---------------------------------------------------------------------------------------------
# Fakes
# ---------------------------------------------------------------------------------------------


class FakeRaw:
    """A response body stream that counts what the client pulls from it.

    ``size`` without ``body`` streams that many filler bytes lazily, so a "50 MB" body costs
    nothing unless someone actually reads it.
    """

    def __init__(
        self,
        body: bytes = b"",
        *,
        size: int | None = None,
        per_read: int | None = None,
        delay: float = 0.0,
        fail_with: BaseException | None = None,
        fail_after: int = 0,
    ) -> None:
        self._body = body
        self._size = len(body) if size is None else size
        self._per_read = per_read
        self._delay = delay
        self._fail_with = fail_with
        self._fail_after = fail_after
        self.bytes_read = 0
        self.reads = 0
        self.closed = False

    def read(self, amt: int | None = None, **_: Any) -> bytes:
        if self.closed:
            return b""
        self.reads += 1
        if self._fail_with is not None and self.bytes_read >= self._fail_after:
            raise self._fail_with
        if self._delay:
            time.sleep(self._delay)
        n = self._size - self.bytes_read
        if amt is not None:
            n = min(n, amt)
        if self._per_read is not None:
            n = min(n, self._per_read)
        if self._fail_with is not None:
            n = min(n, self._fail_after - self.bytes_read)
        start = self.bytes_read
        self.bytes_read += n
        if self._body:
            return self._body[start : start + n]
        return b"x" * n

    def close(self) -> None:
        self.closed = True


def make_response(
    status: int,
    body: bytes | str | dict[str, Any] | list[Any] = b"",
    *,
    headers: dict[str, str] | None = None,
    raw: FakeRaw | None = None,
) -> requests.Response:
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    response = requests.Response()
    response.status_code = status
    response.headers = CaseInsensitiveDict(headers or {})
    response.raw = raw if raw is not None else FakeRaw(body)
    response.reason = "Fake"
    return response


Reply = requests.Response | BaseException | Callable[[requests.PreparedRequest], Any]


@dataclass
class Sent:
    request: requests.PreparedRequest
    stream: bool
    timeout: Any
    verify: Any


class FakeAdapter(BaseAdapter):
    """Answers each request with the next reply (the last one repeats) and records what was sent."""

    def __init__(self, *replies: Reply) -> None:
        super().__init__()
        self.replies = list(replies)
        self.sent: list[Sent] = []

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> requests.Response:
        self.sent.append(Sent(request, stream, timeout, verify))
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if callable(reply) and not isinstance(reply, requests.Response):
            reply = reply(request)
        if isinstance(reply, BaseException):
            raise reply
        assert isinstance(reply, requests.Response)
        reply.url = request.url or ""
        reply.request = request
        return reply

    def close(self) -> None:
        pass


def client_with(*replies: Reply, **kwargs: Any) -> tuple[UseapiClient, FakeAdapter]:
    adapter = FakeAdapter(*replies)
    session = kwargs.pop("session", None) or requests.Session()
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return UseapiClient(BASE, TOKEN, session=session, **kwargs), adapter


def record_for(video_id: str = VID, **fields: Any) -> dict[str, Any]:
    return {"video_id": video_id, "video_status": 1, **fields}


# ---------------------------------------------------------------------------------------------
# The two reads of videos
# ---------------------------------------------------------------------------------------------

EMAIL = "a+b@x.com"


def list_entry(n: int, **fields: Any) -> dict[str, Any]:
    """An entry of EMAIL's list: video ``n``, generating."""
    return {"video_id": f"user:1-pixverse:{EMAIL}-video:{n}", "video_status": 10, **fields}


def list_entries(count: int, start: int = 0) -> list[dict[str, Any]]:
    return [list_entry(n) for n in range(start, start + count)]


@dataclass(frozen=True)
class Endpoint:
    """One of the client's reads of videos, as the tests they share see it."""

    name: str
    read: Callable[[UseapiClient], Outcome | ListOutcome]
    answer: Callable[[], dict[str, Any]]  # a 200 body the read takes as its answer
    answer_type: type[Record | Page]
    long_answer: Callable[[], dict[str, Any]]  # the same, over 1 kB

    def outcome(self, reply: Reply, **client_kwargs: Any) -> Outcome | ListOutcome:
        client, _ = client_with(reply, **client_kwargs)
        return self.read(client)


BY_ID = Endpoint(
    name="by-id",
    read=lambda client: client.fetch(VID),
    answer=lambda: record_for(),
    answer_type=Record,
    long_answer=lambda: record_for(prompt="p" * 1000),
)
LIST = Endpoint(
    name="list",
    read=lambda client: client.list_videos(EMAIL),
    answer=lambda: {"data": list_entries(3)},
    answer_type=Page,
    long_answer=lambda: {"data": list_entries(20)},
)


@pytest.fixture(params=[BY_ID, LIST], ids=lambda endpoint: endpoint.name)
def endpoint(request: pytest.FixtureRequest) -> Endpoint:
    """Each of the two reads in turn: ``GET /videos/<id>`` and ``GET /videos/?email=``."""
    result = request.param
    assert isinstance(result, Endpoint)
    return result


def echoing_errors(token: str, missing: str) -> list[Reply]:
    """Error answers of a collection read (the list, the scheduler) in which a careless
    upstream reflects the token back at us; ``missing`` names what a 404 did not find."""
    return [
        make_response(400, {"error": f"bad token {token}"}),
        make_response(401, {"error": f"Unauthorized: Bearer {token}", "code": 401}),
        make_response(403, f"Forbidden for {token}"),
        make_response(404, {"error": f"no {missing} for {token}"}),
        make_response(429, {"error": f"slow down {token}"}),
        make_response(503, f"<html>upstream down for {token}</html>"),
        make_response(200, {"error": f"token {token} rejected"}),
        make_response(200, {"error": {"nested": token}, "code": 500}),
        make_response(200, f"not json {token}"),
        make_response(200, "x" * 490 + token),  # the token straddles the truncation point
    ]


def echoing_transport(token: str, empty_body: bytes) -> list[Reply]:
    """A connection error and a body cut off mid-read, each carrying the token in its text."""
    return [
        requests.exceptions.ConnectionError(f"failed with header Bearer {token}"),
        make_response(
            200,
            raw=FakeRaw(
                empty_body,
                fail_with=urllib3.exceptions.ProtocolError(f"broke at {token}"),
                fail_after=1,
            ),
        ),
    ]
