"""HTTP probes: a request repeated until its expectations hold or its attempts run out."""

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx

from engine.clock import Clock

logger = logging.getLogger(__name__)

_MISSING = object()


@dataclass
class ProbeRequest:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json_body: Any = None
    expect_status: list[int] = field(default_factory=list)
    expect_json: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1
    interval: float = 5.0
    initial_delay: float = 0.0
    timeout: float = 10.0
    capture: dict[str, str] = field(default_factory=dict)


@dataclass
class ProbeResult:
    ok: bool
    attempts: int
    status: int | None
    body: str
    error: str | None
    captured: dict[str, Any] = field(default_factory=dict)


def run_probe(
    request: ProbeRequest, clock: Clock, transport: httpx.BaseTransport | None = None
) -> ProbeResult:
    if request.initial_delay:
        clock.sleep(request.initial_delay)
    result = ProbeResult(False, 0, None, "", "no attempt was made")
    with httpx.Client(timeout=request.timeout, transport=transport) as client:
        for attempt in range(1, request.attempts + 1):
            result = _attempt(client, request)
            result.attempts = attempt
            if result.ok:
                return result
            logger.info(
                "Probe %s %s attempt %d/%d failed: %s",
                request.method,
                request.url,
                attempt,
                request.attempts,
                result.error,
            )
            if attempt < request.attempts:
                clock.sleep(request.interval)
    return result


def json_path(data: Any, path: str) -> Any:
    """Return the value at a dotted path such as ``data.alerts``, or _MISSING."""
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def _attempt(client: httpx.Client, request: ProbeRequest) -> ProbeResult:
    try:
        response = client.request(
            request.method, request.url, headers=request.headers, json=request.json_body
        )
    except httpx.TimeoutException:
        return ProbeResult(False, 0, None, "", f"timed out after {request.timeout:g} s")
    except httpx.HTTPError as error:
        return ProbeResult(False, 0, None, "", f"request failed: {error}")
    body = response.text

    def failed(reason: str) -> ProbeResult:
        return ProbeResult(False, 0, response.status_code, body, reason)

    if request.expect_status:
        status_ok = response.status_code in request.expect_status
    else:
        status_ok = response.is_success
    if not status_ok:
        expected = request.expect_status or "2xx"
        return failed(f"HTTP {response.status_code}, expected {expected}")
    if not request.expect_json and not request.capture:
        return ProbeResult(True, 0, response.status_code, body, None)
    try:
        data = response.json()
    except ValueError:  # JSONDecodeError, or UnicodeDecodeError for a body that is not UTF-8
        return failed("the reply is not JSON")
    for path, expected in request.expect_json.items():
        actual = json_path(data, path)
        if actual is _MISSING:
            return failed(f"{path} is missing from the reply")
        if actual != expected:
            return failed(f"{path} is {actual!r}, expected {expected!r}")
    captured = {}
    for name, path in request.capture.items():
        value = json_path(data, path)
        if value is _MISSING:
            return failed(f"{path} is missing from the reply, so {name} is unknown")
        captured[name] = value
    return ProbeResult(True, 0, response.status_code, body, None, captured)
