"""Checks the bot can run itself for a release checklist, each returning its evidence.

Every check returns an `Evidence` with a one-line summary for people and the details behind
it. A failure of the host, network or server being checked becomes ``ok=False`` and one
WARNING line in the log, not an exception. Invalid arguments still raise, for example a remote
host in an environment without an ``ssh`` section.
"""

import logging
import re
import shlex
import socket
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from cryptography import x509

from engine.clock import Clock
from engine.config import Environment
from engine.hosts import CommandResult, run_command

logger = logging.getLogger(__name__)

GB = 10**9

# Output kept in Evidence.detail: the last lines of a command, and the start of an HTTP body.
DETAIL_LINES = 20
DETAIL_CHARS = 3000
BODY_CHARS = 500

# One data line of `df -P`: filesystem, size, used, available, capacity, mount point.
# The lazy first group and the last group allow spaces in device names and mount points.
_DF_LINE = re.compile(
    r"^(?P<filesystem>.*?)\s+\d+\s+\d+\s+(?P<available>\d+)\s+\d+%\s+(?P<mount>.+)$"
)

# X509_V_ERR_* codes from OpenSSL 3.0 x509_vfy.h, as in SSLCertVerificationError.verify_code.
_CERT_NOT_YET_VALID = 9
_CERT_HAS_EXPIRED = 10
_NAME_MISMATCH = frozenset({62, 64})  # host name mismatch, IP address mismatch
_UNTRUSTED = frozenset(
    {
        2,  # unable to get issuer certificate
        18,  # self-signed certificate
        19,  # self-signed certificate in certificate chain
        20,  # unable to get local issuer certificate
        21,  # unable to verify the first certificate
    }
)


@dataclass(frozen=True, kw_only=True)
class Evidence:
    """The outcome of one checklist check."""

    ok: bool  # True when the checked requirement is met
    summary: str  # one line for people, naming the host or URL and the finding
    detail: str = ""  # command output tail, certificate fields or error text, for the thread
    checked_at: datetime  # aware UTC, from the clock passed to the check


def disk_space(
    environment: Environment,
    host: str,
    path: str,
    minimum_bytes: int,
    *,
    clock: Clock,
    timeout: float = 30,
) -> Evidence:
    """Check that the filesystem holding ``path`` on ``host`` has ``minimum_bytes`` available.

    Runs ``df -P -B1`` through `run_command` and compares the bytes available to unprivileged
    users. Sizes in the summary are in GB (10^9 bytes), rounded down.
    """
    result = run_command(environment, host, f"df -P -B1 -- {shlex.quote(path)}", timeout)
    checked_at = _now(clock)
    if not result.ok:
        summary = f"Free space on {path} at {host} could not be checked: {_failure_reason(result)}"
        return _failed(summary, _output_tail(result), checked_at)

    available = _parse_df_available(result.stdout)
    if available is None:
        summary = f"Free space on {path} at {host} could not be checked: unexpected df output"
        return _failed(summary, _output_tail(result), checked_at)

    detail = result.stdout.strip()
    if available < minimum_bytes:
        summary = (
            f"{format_size(available)} free on {path} at {host}, "
            f"under the {format_size(minimum_bytes)} minimum"
        )
        return _failed(summary, detail, checked_at)
    summary = (
        f"{format_size(available)} free on {path} at {host} (minimum {format_size(minimum_bytes)})"
    )
    return Evidence(ok=True, summary=summary, detail=detail, checked_at=checked_at)


def command_succeeds(
    environment: Environment,
    host: str,
    script: str,
    description: str,
    *,
    clock: Clock,
    timeout: float = 30,
) -> Evidence:
    """Check that ``script`` exits with code 0 on ``host``.

    ``description`` names the item for people, for example "database reachable", and starts
    the summary.
    """
    result = run_command(environment, host, script, timeout)
    checked_at = _now(clock)
    if not result.ok:
        summary = f"{description}: failed on {host} ({_failure_reason(result)})"
        return _failed(summary, _output_tail(result), checked_at)
    summary = f"{description}: passed on {host}"
    return Evidence(ok=True, summary=summary, detail=_output_tail(result), checked_at=checked_at)


def tls_certificate(
    host: str,
    port: int = 443,
    *,
    minimum_days: int = 14,
    clock: Clock,
    timeout: float = 10,
    server_name: str | None = None,
    ca_file: str | None = None,
) -> Evidence:
    """Check the TLS certificate that ``host:port`` presents in a real handshake.

    The chain is verified against the system CA store, or only against ``ca_file`` when
    given, and the certificate must match ``server_name`` (default: ``host``), which is also
    sent as SNI. A certificate that verifies must also stay valid for ``minimum_days`` more
    days, counted from ``clock.now()``. ``timeout`` bounds the whole check in seconds.
    """
    address = _host_port(host, port)
    name = server_name or host
    deadline = time.monotonic() + timeout
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as error:
        summary = f"TLS check of {address} failed: CA file {ca_file} could not be loaded"
        return _failed(summary, str(error), _now(clock))

    try:
        certificate = _fetch_certificate(host, port, name, context, deadline)
    except ssl.SSLCertVerificationError as error:
        # The verified handshake failed, so fetch the certificate unverified for the details.
        certificate = _fetch_unverified_certificate(host, port, name, deadline)
        now = _now(clock)
        summary = (
            f"TLS certificate of {address} {_describe_rejection(error, name, certificate, now)}"
        )
        return _failed(summary, _certificate_detail(certificate, error), now)
    except (TimeoutError, OSError, ssl.SSLError, ValueError) as error:
        summary = f"TLS check of {address} failed: {_describe_connection_error(error, timeout)}"
        return _failed(summary, str(error), _now(clock))

    now = _now(clock)
    detail = _certificate_detail(certificate)
    not_after = certificate.not_valid_after_utc
    days_left = (not_after - now).days
    if not_after <= now:
        # OpenSSL checks expiry against the system time, which may differ from the clock's.
        summary = f"TLS certificate of {address} {_describe_expired(not_after, now)}"
        return _failed(summary, detail, now)
    if days_left < minimum_days:
        summary = (
            f"TLS certificate of {address} expires in {_days(days_left)} "
            f"({not_after:%Y-%m-%d}), under the {minimum_days}-day minimum"
        )
        return _failed(summary, detail, now)
    summary = (
        f"TLS certificate of {address} is valid and expires in {_days(days_left)} "
        f"({not_after:%Y-%m-%d})"
    )
    return Evidence(ok=True, summary=summary, detail=detail, checked_at=now)


def http_endpoint(
    url: str,
    *,
    clock: Clock,
    timeout: float = 10,
    transport: httpx.BaseTransport | None = None,
) -> Evidence:
    """Check that a GET of ``url`` returns a 2xx status.

    Redirects are not followed, so a 3xx status fails the check.
    """
    display_url = _redact_url(url)
    started = time.monotonic()
    try:
        with httpx.Client(timeout=timeout, transport=transport) as client:
            response = client.get(url)
    except httpx.TimeoutException as error:
        summary = f"GET {display_url} timed out after {timeout:g} s"
        return _failed(summary, str(error), _now(clock))
    except (httpx.HTTPError, httpx.InvalidURL) as error:
        summary = f"GET {display_url} failed: {str(error) or type(error).__name__}"
        return _failed(summary, str(error), _now(clock))

    elapsed_ms = round((time.monotonic() - started) * 1000)
    checked_at = _now(clock)
    summary = f"GET {display_url} returned HTTP {response.status_code} in {elapsed_ms} ms"
    if not response.is_success:
        return _failed(f"{summary}, expected 2xx", response.text[:BODY_CHARS], checked_at)
    return Evidence(ok=True, summary=summary, checked_at=checked_at)


def format_size(size_bytes: int) -> str:
    """Format a size in GB (10^9 bytes), rounded down: whole GB from 10 GB, else one decimal.

    A size under 0.1 GB other than zero is given in bytes, so that it does not read as 0.
    """
    if 0 < size_bytes < GB // 10:
        return f"{size_bytes} byte" if size_bytes == 1 else f"{size_bytes} bytes"
    if size_bytes >= 10 * GB:
        return f"{size_bytes // GB} GB"
    tenths = size_bytes * 10 // GB
    return f"{tenths // 10}.{tenths % 10} GB"


# --- helpers ---------------------------------------------------------------------------------


def _now(clock: Clock) -> datetime:
    return clock.now().astimezone(UTC)


def _failed(summary: str, detail: str, checked_at: datetime) -> Evidence:
    logger.warning("Check failed: %s", summary)
    return Evidence(ok=False, summary=summary, detail=detail, checked_at=checked_at)


def _failure_reason(result: CommandResult) -> str:
    if result.error:
        return result.error
    last_error_line = next(reversed(result.stderr.strip().splitlines()), "")
    reason = f"exit code {result.exit_code}"
    return f"{reason}: {last_error_line}" if last_error_line else reason


def _output_tail(result: CommandResult) -> str:
    parts = [result.stdout.strip(), result.stderr.strip(), result.error or ""]
    lines = "\n".join(part for part in parts if part).splitlines()
    return "\n".join(lines[-DETAIL_LINES:])[-DETAIL_CHARS:]


def _parse_df_available(output: str) -> int | None:
    """Return the available bytes from `df -P -B1` output with one filesystem, or None."""
    lines = output.strip().splitlines()
    if len(lines) != 2:
        return None
    match = _DF_LINE.match(lines[1].strip())
    return int(match["available"]) if match else None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _fetch_certificate(
    host: str, port: int, server_name: str, context: ssl.SSLContext, deadline: float
) -> x509.Certificate:
    """Complete a TLS handshake and return the peer's leaf certificate.

    Raises OSError (including TimeoutError and ssl.SSLError) when the connection or the
    handshake fails, and ValueError when the certificate cannot be parsed.
    """
    with socket.create_connection((host, port), timeout=_remaining(deadline)) as connection:
        connection.settimeout(_remaining(deadline))
        with context.wrap_socket(connection, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    if der is None:
        raise ValueError("the server sent no certificate")
    return x509.load_der_x509_certificate(der)


def _fetch_unverified_certificate(
    host: str, port: int, server_name: str, deadline: float
) -> x509.Certificate | None:
    """Return the peer's certificate without verifying it, or None if that fails too."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        return _fetch_certificate(host, port, server_name, context, deadline)
    except (OSError, ValueError) as error:
        logger.debug("Fetching the certificate of %s:%s unverified failed: %s", host, port, error)
        return None


def _remaining(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("the timeout of the check ran out")
    return remaining


def _describe_rejection(
    error: ssl.SSLCertVerificationError,
    server_name: str,
    certificate: x509.Certificate | None,
    now: datetime,
) -> str:
    """Describe why verification rejected the certificate, to follow "TLS certificate of X"."""
    code = error.verify_code
    if code == _CERT_HAS_EXPIRED:
        if certificate is None:
            return "has expired"
        return _describe_expired(certificate.not_valid_after_utc, now)
    if code == _CERT_NOT_YET_VALID:
        if certificate is None:
            return "is not valid yet"
        return f"is not valid yet, only from {certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    if code in _NAME_MISMATCH:
        return f"is not valid for the name {server_name}"
    if code in _UNTRUSTED:
        return f"is not trusted: {error.verify_message}"
    return f"failed verification: {error.verify_message}"


def _describe_expired(not_after: datetime, now: datetime) -> str:
    days_ago = (now - not_after).days
    when = f"{_days(days_ago)} ago" if days_ago >= 1 else "less than a day ago"
    return f"expired {when} ({not_after:%Y-%m-%d})"


def _describe_connection_error(error: Exception, timeout: float) -> str:
    if isinstance(error, TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, socket.gaierror):
        return f"host name could not be resolved ({error.strerror})"
    if isinstance(error, ssl.SSLError):
        return f"TLS handshake failed ({error.reason or error})"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error)


def _certificate_detail(
    certificate: x509.Certificate | None, error: ssl.SSLCertVerificationError | None = None
) -> str:
    lines = [f"verification: {error.verify_message}"] if error else []
    if certificate is None:
        return "\n".join(lines)
    lines += [
        f"subject: {certificate.subject.rfc4514_string()}",
        f"issuer: {certificate.issuer.rfc4514_string()}",
    ]
    names = _subject_alternative_names(certificate)
    if names:
        lines.append(f"names: {', '.join(names)}")
    lines += [
        f"not before: {certificate.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC",
        f"not after: {certificate.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC",
    ]
    return "\n".join(lines)


def _subject_alternative_names(certificate: x509.Certificate) -> list[str]:
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (x509.ExtensionNotFound, ValueError):  # ValueError: a malformed extension
        return []
    names = extension.value.get_values_for_type(x509.DNSName)
    names += [str(address) for address in extension.value.get_values_for_type(x509.IPAddress)]
    return names


def _days(count: int) -> str:
    return "1 day" if count == 1 else f"{count} days"


def _redact_url(url: str) -> str:
    """Return ``url`` without a user name or password, for summaries and logs."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return url
    if not parsed.userinfo:
        return url
    return str(parsed.copy_with(username=None, password=None))
