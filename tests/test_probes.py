"""Tests of HTTP probes against httpx.MockTransport, with a clock that records sleeps."""

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from engine.clock import Clock
from engine.probes import _MISSING as MISSING
from engine.probes import ProbeRequest, ProbeResult, json_path, run_probe

URL = "http://probe.test/q/health"


class FakeClock(Clock):
    """A clock that records each sleep and returns at once."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


class Server:
    """A MockTransport handler that replies from a list and records each request."""

    def __init__(self, *replies: httpx.Response | Exception) -> None:
        self._replies: Iterator[httpx.Response | Exception] = iter(replies)
        self.requests: list[httpx.Request] = []
        self.transport = httpx.MockTransport(self._handle)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = next(self._replies)
        if isinstance(reply, Exception):
            raise reply
        return reply


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx routes requests through a proxy named in these variables instead of the transport.
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def probe(server: Server, clock: FakeClock, **fields) -> ProbeResult:
    return run_probe(ProbeRequest(method="GET", url=URL, **fields), clock, server.transport)


# --- attempts and sleeps ---------------------------------------------------------------------


def test_success_first_try(clock: FakeClock):
    server = Server(httpx.Response(200, json={"status": "UP"}))

    result = probe(server, clock, attempts=3, interval=4.0)

    assert result.ok
    assert result.attempts == 1
    assert result.status == 200
    assert result.error is None
    assert clock.sleeps == []
    assert len(server.requests) == 1


def test_retries_until_healthy(clock: FakeClock):
    server = Server(
        httpx.Response(503),
        httpx.ConnectError("connection refused"),
        httpx.Response(200, json={"status": "DOWN"}),
        httpx.Response(200, json={"status": "UP"}),
    )

    result = probe(server, clock, attempts=10, interval=2.5, expect_json={"status": "UP"})

    assert result.ok
    assert result.attempts == 4
    assert clock.sleeps == [2.5, 2.5, 2.5]
    assert len(server.requests) == 4


def test_initial_delay_before_first_attempt(clock: FakeClock):
    server = Server(httpx.Response(500), httpx.Response(200))

    result = probe(server, clock, attempts=2, interval=1.0, initial_delay=30.0)

    assert result.ok
    assert clock.sleeps == [30.0, 1.0]


def test_gives_up_with_last_error(clock: FakeClock):
    server = Server(
        httpx.Response(500),
        httpx.Response(502),
        httpx.Response(503),
        httpx.Response(504, text="gateway timeout"),
    )

    result = probe(server, clock, attempts=4, interval=5.0)

    assert not result.ok
    assert result.attempts == 4
    assert result.status == 504
    assert result.error == "HTTP 504, expected 2xx"
    assert result.body == "gateway timeout"
    assert clock.sleeps == [5.0, 5.0, 5.0]
    assert len(server.requests) == 4


def test_single_attempt_never_sleeps(clock: FakeClock):
    server = Server(httpx.Response(500))

    result = probe(server, clock)

    assert not result.ok
    assert result.attempts == 1
    assert clock.sleeps == []


# --- expectations ----------------------------------------------------------------------------


def test_expect_json_mismatch(clock: FakeClock):
    server = Server(httpx.Response(200, json={"status": "UP", "version": "v1.0.0"}))

    result = probe(server, clock, expect_json={"status": "UP", "version": "v1.1.0"})

    assert not result.ok
    assert result.status == 200
    assert result.error == "version is 'v1.0.0', expected 'v1.1.0'"


def test_expect_json_nested_path(clock: FakeClock):
    reply = {"checks": [{"name": "db", "status": "DOWN"}]}
    server = Server(httpx.Response(200, json=reply))

    result = probe(server, clock, expect_json={"checks.0.status": "UP"})

    assert result.error == "checks.0.status is 'DOWN', expected 'UP'"


def test_expect_json_compares_types(clock: FakeClock):
    server = Server(httpx.Response(200, json={"replicas": "3"}))

    result = probe(server, clock, expect_json={"replicas": 3})

    assert result.error == "replicas is '3', expected 3"


def test_expect_json_missing_path(clock: FakeClock):
    server = Server(httpx.Response(200, json={"data": {}}))

    result = probe(server, clock, expect_json={"data.alerts": []})

    assert not result.ok
    assert result.error == "data.alerts is missing from the reply"


def test_expect_json_match(clock: FakeClock):
    reply = {"status": "success", "data": {"alerts": [], "count": 0, "ready": True}}
    server = Server(httpx.Response(200, json=reply))

    result = probe(
        server,
        clock,
        expect_json={"status": "success", "data.alerts": [], "data.count": 0, "data.ready": True},
    )

    assert result.ok


def test_not_json_reply(clock: FakeClock):
    server = Server(httpx.Response(200, text="<html>maintenance</html>"))

    result = probe(server, clock, expect_json={"status": "UP"})

    assert not result.ok
    assert result.error == "the reply is not JSON"
    assert result.body == "<html>maintenance</html>"


def test_binary_reply_not_json(clock: FakeClock):
    server = Server(httpx.Response(200, content=b"\x80\x81\xfe binary"))

    result = probe(server, clock, expect_json={"status": "UP"})

    assert not result.ok
    assert result.error == "the reply is not JSON"


def test_not_json_without_expectations(clock: FakeClock):
    server = Server(httpx.Response(200, text="OK"))

    result = probe(server, clock)

    assert result.ok
    assert result.body == "OK"


def test_expect_status_list(clock: FakeClock):
    server = Server(httpx.Response(201))

    result = probe(server, clock, expect_status=[200, 201])

    assert result.ok
    assert result.status == 201


def test_expect_status_rejects_other_success(clock: FakeClock):
    server = Server(httpx.Response(202))

    result = probe(server, clock, expect_status=[200, 201])

    assert not result.ok
    assert result.error == "HTTP 202, expected [200, 201]"


def test_expect_status_accepts_error_code(clock: FakeClock):
    server = Server(httpx.Response(404))

    result = probe(server, clock, expect_status=[404])

    assert result.ok


def test_redirect_not_success(clock: FakeClock):
    server = Server(httpx.Response(302, headers={"Location": "/login"}))

    result = probe(server, clock)

    assert not result.ok
    assert result.error == "HTTP 302, expected 2xx"
    assert len(server.requests) == 1


# --- capture ---------------------------------------------------------------------------------


def test_capture_dotted_path(clock: FakeClock):
    reply = {"build": {"version": "v1.4.2", "commit": "abc123"}, "nodes": [{"id": "n1"}]}
    server = Server(httpx.Response(200, json=reply))

    result = probe(server, clock, capture={"running": "build.version", "first": "nodes.0.id"})

    assert result.ok
    assert result.captured == {"running": "v1.4.2", "first": "n1"}


def test_capture_missing_path(clock: FakeClock):
    server = Server(httpx.Response(200, json={"build": {}}))

    result = probe(server, clock, capture={"running": "build.version"})

    assert not result.ok
    assert result.error == "build.version is missing from the reply, so running is unknown"
    assert result.captured == {}


def test_capture_needs_json(clock: FakeClock):
    server = Server(httpx.Response(200, text="v1.4.2"))

    result = probe(server, clock, capture={"running": "version"})

    assert result.error == "the reply is not JSON"


# --- transport errors ------------------------------------------------------------------------


def test_timeout_error(clock: FakeClock):
    server = Server(httpx.ReadTimeout("read timed out"))

    result = probe(server, clock, timeout=2.5)

    assert not result.ok
    assert result.status is None
    assert result.error == "timed out after 2.5 s"


def test_connect_timeout_error(clock: FakeClock):
    server = Server(httpx.ConnectTimeout("connect timed out"))

    result = probe(server, clock, timeout=10.0)

    assert result.error == "timed out after 10 s"


def test_connection_error(clock: FakeClock):
    server = Server(httpx.ConnectError("connection refused"))

    result = probe(server, clock)

    assert not result.ok
    assert result.error == "request failed: connection refused"


def test_timeout_then_success(clock: FakeClock):
    server = Server(httpx.ReadTimeout("slow"), httpx.Response(200))

    result = probe(server, clock, attempts=2, interval=3.0)

    assert result.ok
    assert clock.sleeps == [3.0]


# --- the request sent ------------------------------------------------------------------------


def test_request_fields_sent(clock: FakeClock):
    server = Server(httpx.Response(201))
    request = ProbeRequest(
        method="POST",
        url="http://probe.test/api/approvals",
        headers={"Authorization": "Bearer t0ken"},
        json_body={"versionId": "test-version-123", "totalValidators": 3},
        timeout=7.0,
    )

    run_probe(request, clock, server.transport)
    sent = server.requests[0]

    assert sent.method == "POST"
    assert str(sent.url) == "http://probe.test/api/approvals"
    assert sent.headers["Authorization"] == "Bearer t0ken"
    assert json.loads(sent.content) == {"versionId": "test-version-123", "totalValidators": 3}
    assert sent.extensions["timeout"]["read"] == 7.0


def test_get_sends_no_body(clock: FakeClock):
    server = Server(httpx.Response(200))

    probe(server, clock)

    assert server.requests[0].content == b""


@pytest.mark.parametrize(
    ("data", "path", "expected"),
    [
        ({"a": {"b": 1}}, "a.b", 1),
        ({"a": [10, 20]}, "a.1", 20),
        ({"a": None}, "a", None),
        ({"a": 0}, "a", 0),
    ],
)
def test_json_path_finds_value(data, path: str, expected):
    assert json_path(data, path) == expected


@pytest.mark.parametrize(
    ("data", "path"),
    [({"a": [10]}, "a.1"), ({"a": [10]}, "a.x"), ({"a": 1}, "a.b"), ([], "0"), ({}, "a")],
)
def test_json_path_missing(data, path: str):
    assert json_path(data, path) is MISSING
