"""Checklist evidence: disk space and commands on real hosts, TLS handshakes with real servers.

TLS tests generate a CA and server certificates, serve each from a loopback TLS server and
check them through ``ca_file``. The fake clock returns the moment the certificates were
generated from, so the days left are exact.
"""

import contextlib
import ipaddress
import logging
import re
import socket
import socketserver
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from engine.clock import Clock
from engine.config import Environment, SshSettings
from engine.evidence import (
    command_succeeds,
    disk_space,
    format_size,
    http_endpoint,
    tls_certificate,
)
from tests.support.sshd import SshServer

NOW = datetime.now(UTC).replace(microsecond=0)
HEALTH_URL = "http://app.test/q/health"


class FakeClock(Clock):
    """A clock that always returns NOW."""

    def now(self) -> datetime:
        return NOW


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def local_environment(**overrides) -> Environment:
    return Environment(name="t", channel="C0", hosts={"app": ["local"]}, **overrides)


# --- disk space ------------------------------------------------------------------------------


def test_disk_space_enough(tmp_path, clock):
    evidence = disk_space(local_environment(), "local", str(tmp_path), 1, clock=clock)

    assert evidence.ok
    assert re.fullmatch(
        rf"\d+(\.\d)? GB free on {re.escape(str(tmp_path))} at local \(minimum 1 byte\)",
        evidence.summary,
    )
    assert "1-blocks" in evidence.detail
    assert evidence.checked_at == NOW


def test_disk_space_under_minimum(tmp_path, clock):
    evidence = disk_space(local_environment(), "local", str(tmp_path), 10**18, clock=clock)

    assert not evidence.ok
    assert re.fullmatch(
        rf"\d+(\.\d)? GB free on {re.escape(str(tmp_path))} at local, "
        r"under the 1000000000 GB minimum",
        evidence.summary,
    )


def test_disk_space_missing_path(tmp_path, clock):
    missing = tmp_path / "missing"
    evidence = disk_space(local_environment(), "local", str(missing), 1, clock=clock)

    assert not evidence.ok
    assert evidence.summary.startswith(
        f"Free space on {missing} at local could not be checked: exit code 1: "
    )
    assert "No such file or directory" in evidence.summary
    assert "No such file or directory" in evidence.detail


def test_disk_space_quotes_path(tmp_path, clock):
    directory = tmp_path / "it's $(touch pwned) here"
    directory.mkdir()
    evidence = disk_space(local_environment(), "local", str(directory), 1, clock=clock)

    assert evidence.ok
    assert f"free on {directory} at local" in evidence.summary
    assert not (Path.cwd() / "pwned").exists()


def test_disk_space_unexpected_df_output(tmp_path, clock):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_df = bin_dir / "df"
    fake_df.write_text("#!/bin/sh\necho 'Filesystem Size'\necho '/dev/x - - - - /'\n")
    fake_df.chmod(0o755)
    environment = local_environment(path_prepend=[str(bin_dir)])
    evidence = disk_space(environment, "local", "/", 1, clock=clock)

    assert not evidence.ok
    assert evidence.summary == "Free space on / at local could not be checked: unexpected df output"
    assert "/dev/x - - - - /" in evidence.detail


def test_disk_space_mount_point_with_spaces(tmp_path, clock):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_df = bin_dir / "df"
    fake_df.write_text(
        "#!/bin/sh\n"
        "echo 'Filesystem 1-blocks Used Available Capacity Mounted on'\n"
        "echo 'my volume 100000000000 39000000000 61000000000 39% /mnt/back ups'\n"
    )
    fake_df.chmod(0o755)
    environment = local_environment(path_prepend=[str(bin_dir)])
    evidence = disk_space(environment, "local", "/mnt/back ups", 50 * 10**9, clock=clock)

    assert evidence.ok
    assert evidence.summary == "61 GB free on /mnt/back ups at local (minimum 50 GB)"


@pytest.mark.parametrize(
    ("size_bytes", "expected"),
    [
        (0, "0.0 GB"),
        (1, "1 byte"),
        (99_999_999, "99999999 bytes"),
        (100_000_000, "0.1 GB"),
        (3_290_000_000, "3.2 GB"),
        (9_999_999_999, "9.9 GB"),
        (10 * 10**9, "10 GB"),
        (61_900_000_000, "61 GB"),
    ],
)
def test_format_size(size_bytes, expected):
    assert format_size(size_bytes) == expected


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    with SshServer(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_disk_space_over_ssh(sshd, clock):
    settings = SshSettings(
        user=sshd.user,
        port=sshd.port,
        key_file=str(sshd.key_file),
        known_hosts=str(sshd.known_hosts),
        connect_timeout=5,
    )
    environment = Environment(name="t", channel="C0", hosts={"app": [sshd.host]}, ssh=settings)
    evidence = disk_space(environment, sshd.host, "/", 1, clock=clock)

    assert evidence.ok
    assert re.fullmatch(
        r"\d+(\.\d)? GB free on / at 127\.0\.0\.1 \(minimum 1 byte\)", evidence.summary
    )


# --- commands --------------------------------------------------------------------------------


def test_command_true_passes(clock):
    evidence = command_succeeds(
        local_environment(), "local", "true", "cache reachable", clock=clock
    )

    assert evidence.ok
    assert evidence.summary == "cache reachable: passed on local"
    assert evidence.checked_at == NOW


def test_command_false_fails(clock):
    evidence = command_succeeds(
        local_environment(), "local", "false", "database reachable", clock=clock
    )

    assert not evidence.ok
    assert evidence.summary == "database reachable: failed on local (exit code 1)"


def test_command_failure_shows_output(clock):
    script = "echo connecting; echo 'psql: error: connection refused' >&2; exit 2"
    evidence = command_succeeds(
        local_environment(), "local", script, "database reachable", clock=clock
    )

    assert evidence.summary == (
        "database reachable: failed on local (exit code 2: psql: error: connection refused)"
    )
    assert evidence.detail == "connecting\npsql: error: connection refused"


def test_command_timeout_fails(clock):
    evidence = command_succeeds(
        local_environment(), "local", "sleep 5", "cache reachable", clock=clock, timeout=0.5
    )

    assert not evidence.ok
    assert evidence.summary == "cache reachable: failed on local (timed out after 0.5 s on local)"


def test_failure_logs_one_warning(clock, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.evidence"):
        command_succeeds(local_environment(), "local", "false", "cache reachable", clock=clock)

    assert [record.getMessage() for record in caplog.records] == [
        "Check failed: cache reachable: failed on local (exit code 1)"
    ]


# --- HTTP ------------------------------------------------------------------------------------


def test_http_200_passes(clock):
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="UP"))
    evidence = http_endpoint(HEALTH_URL, clock=clock, transport=transport)

    assert evidence.ok
    assert re.fullmatch(rf"GET {HEALTH_URL} returned HTTP 200 in \d+ ms", evidence.summary)
    assert evidence.checked_at == NOW


def test_http_503_fails(clock):
    transport = httpx.MockTransport(lambda request: httpx.Response(503, text="DOWN: db"))
    evidence = http_endpoint(HEALTH_URL, clock=clock, transport=transport)

    assert not evidence.ok
    assert re.fullmatch(
        rf"GET {HEALTH_URL} returned HTTP 503 in \d+ ms, expected 2xx", evidence.summary
    )
    assert evidence.detail == "DOWN: db"


def test_http_connect_error_fails(clock):
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    evidence = http_endpoint(HEALTH_URL, clock=clock, transport=httpx.MockTransport(refuse))

    assert not evidence.ok
    assert evidence.summary == f"GET {HEALTH_URL} failed: [Errno 111] Connection refused"


def test_http_refused_on_loopback(clock):
    port = _closed_port()
    evidence = http_endpoint(f"http://127.0.0.1:{port}/health", clock=clock, timeout=5)

    assert not evidence.ok
    assert evidence.summary.startswith(f"GET http://127.0.0.1:{port}/health failed: ")
    assert "Connection refused" in evidence.summary


def test_http_timeout_fails(clock):
    def stall(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    evidence = http_endpoint(
        HEALTH_URL, clock=clock, timeout=2, transport=httpx.MockTransport(stall)
    )

    assert not evidence.ok
    assert evidence.summary == f"GET {HEALTH_URL} timed out after 2 s"


def test_http_hides_credentials(clock):
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    evidence = http_endpoint("http://user:s3cret@app.test/health", clock=clock, transport=transport)

    assert "s3cret" not in evidence.summary
    assert "http://app.test/health" in evidence.summary


def test_http_invalid_url_fails(clock):
    evidence = http_endpoint("ftp://app.test/health", clock=clock)

    assert not evidence.ok
    assert evidence.summary.startswith("GET ftp://app.test/health failed: ")


# --- TLS -------------------------------------------------------------------------------------


class Certificates:
    """A test CA and the server certificates it signed, as PEM files in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gonogo test CA")])
        self._ca_name = ca_name
        self.ca_certificate = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(self._ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(days=365))
            .not_valid_after(NOW + timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(self.ca_certificate.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        label: str,
        *,
        names: list[str],
        not_before: datetime,
        not_after: datetime,
    ) -> tuple[Path, Path]:
        """Sign a server certificate for ``names`` (host names or IP addresses).

        Returns the paths of the certificate and of its private key.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        alternative_names = [_general_name(name) for name in names]
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self._ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._ca_key.public_key()),
                critical=False,
            )
            .sign(self._ca_key, hashes.SHA256())
        )
        certificate_file = self.directory / f"{label}.pem"
        key_file = self.directory / f"{label}.key"
        certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return certificate_file, key_file


class _TlsHandshake(socketserver.BaseRequestHandler):
    """Complete the server side of a handshake, then wait for the client to close."""

    def handle(self) -> None:
        self.request.settimeout(10)
        try:
            with self.server.tls_context.wrap_socket(self.request, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass  # the client rejected the certificate or closed the connection


class _PlainText(socketserver.BaseRequestHandler):
    """Reply to anything with a line that is not TLS."""

    def handle(self) -> None:
        self.request.sendall(b"SSH-2.0-not-tls\r\n")


class LoopbackServer:
    """A threaded TCP server on 127.0.0.1 and a free port, stopped on exit."""

    def __init__(self, handler: type[socketserver.BaseRequestHandler], **attributes) -> None:
        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        for name, value in attributes.items():
            setattr(self._server, name, value)
        self.port = self._server.server_address[1]
        # The poll interval bounds how long shutdown() waits for the serving loop to notice.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "LoopbackServer":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Certificates:
    return Certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def tls_server(certificates):
    """Return a function that starts a TLS server for a new certificate, stopped at the end."""
    with contextlib.ExitStack() as servers:

        def start(label: str, names: list[str], not_before: datetime, not_after: datetime) -> int:
            certificate_file, key_file = certificates.issue(
                label, names=names, not_before=not_before, not_after=not_after
            )
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certificate_file, key_file)
            return servers.enter_context(LoopbackServer(_TlsHandshake, tls_context=context)).port

        yield start


LOOPBACK_NAMES = ["localhost", "127.0.0.1"]


@pytest.fixture(scope="module")
def valid_port(tls_server) -> int:
    return tls_server("valid", LOOPBACK_NAMES, NOW - timedelta(days=1), NOW + timedelta(days=90))


def test_tls_valid_certificate(valid_port, certificates, clock):
    evidence = tls_certificate(
        "127.0.0.1", valid_port, clock=clock, ca_file=str(certificates.ca_file)
    )

    assert evidence.ok
    assert evidence.summary == (
        f"TLS certificate of 127.0.0.1:{valid_port} is valid and expires in 90 days "
        f"({NOW + timedelta(days=90):%Y-%m-%d})"
    )
    assert "names: localhost, 127.0.0.1" in evidence.detail
    assert "issuer: CN=gonogo test CA" in evidence.detail
    assert evidence.checked_at == NOW


def test_tls_valid_for_server_name(valid_port, certificates, clock):
    evidence = tls_certificate(
        "127.0.0.1",
        valid_port,
        clock=clock,
        server_name="localhost",
        ca_file=str(certificates.ca_file),
    )

    assert evidence.ok


def test_tls_expired_certificate(tls_server, certificates, clock):
    not_after = NOW - timedelta(days=5)
    port = tls_server("expired", LOOPBACK_NAMES, NOW - timedelta(days=30), not_after)
    evidence = tls_certificate("127.0.0.1", port, clock=clock, ca_file=str(certificates.ca_file))

    assert not evidence.ok
    assert evidence.summary == (
        f"TLS certificate of 127.0.0.1:{port} expired 5 days ago ({not_after:%Y-%m-%d})"
    )
    assert "verification: certificate has expired" in evidence.detail


def test_tls_expires_soon(tls_server, certificates, clock):
    not_after = NOW + timedelta(days=3, hours=12)
    port = tls_server("expiring", LOOPBACK_NAMES, NOW - timedelta(days=80), not_after)
    evidence = tls_certificate("127.0.0.1", port, clock=clock, ca_file=str(certificates.ca_file))

    assert not evidence.ok
    assert evidence.summary == (
        f"TLS certificate of 127.0.0.1:{port} expires in 3 days ({not_after:%Y-%m-%d}), "
        "under the 14-day minimum"
    )

    lenient = tls_certificate(
        "127.0.0.1", port, minimum_days=3, clock=clock, ca_file=str(certificates.ca_file)
    )

    assert lenient.ok


def test_tls_not_yet_valid(tls_server, certificates, clock):
    not_before = NOW + timedelta(days=2)
    port = tls_server("future", LOOPBACK_NAMES, not_before, NOW + timedelta(days=90))
    evidence = tls_certificate("127.0.0.1", port, clock=clock, ca_file=str(certificates.ca_file))

    assert not evidence.ok
    assert evidence.summary == (
        f"TLS certificate of 127.0.0.1:{port} is not valid yet, "
        f"only from {not_before:%Y-%m-%d %H:%M} UTC"
    )


def test_tls_other_host_name(tls_server, certificates, clock):
    port = tls_server("other", ["other.example"], NOW - timedelta(days=1), NOW + timedelta(days=90))
    by_address = tls_certificate("127.0.0.1", port, clock=clock, ca_file=str(certificates.ca_file))
    by_name = tls_certificate(
        "127.0.0.1",
        port,
        clock=clock,
        server_name="localhost",
        ca_file=str(certificates.ca_file),
    )

    assert not by_address.ok
    assert by_address.summary == (
        f"TLS certificate of 127.0.0.1:{port} is not valid for the name 127.0.0.1"
    )
    assert "names: other.example" in by_address.detail
    assert not by_name.ok
    assert by_name.summary == (
        f"TLS certificate of 127.0.0.1:{port} is not valid for the name localhost"
    )


def test_tls_untrusted_without_ca_file(valid_port, clock):
    evidence = tls_certificate("127.0.0.1", valid_port, clock=clock)

    assert not evidence.ok
    assert evidence.summary.startswith(
        f"TLS certificate of 127.0.0.1:{valid_port} is not trusted: "
    )


def test_tls_connection_refused(clock):
    port = _closed_port()
    evidence = tls_certificate("127.0.0.1", port, clock=clock, timeout=5)

    assert not evidence.ok
    assert evidence.summary == f"TLS check of 127.0.0.1:{port} failed: connection refused"


def test_tls_timeout(clock):
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        started = time.monotonic()
        evidence = tls_certificate("127.0.0.1", port, clock=clock, timeout=0.5)
        elapsed = time.monotonic() - started

    assert not evidence.ok
    assert evidence.summary == f"TLS check of 127.0.0.1:{port} failed: timed out after 0.5 s"
    assert elapsed < 1.5


def test_tls_server_not_speaking_tls(clock):
    with LoopbackServer(_PlainText) as server:
        evidence = tls_certificate("127.0.0.1", server.port, clock=clock, timeout=5)

    assert not evidence.ok
    assert evidence.summary.startswith(
        f"TLS check of 127.0.0.1:{server.port} failed: TLS handshake failed ("
    )


def test_tls_missing_ca_file(valid_port, tmp_path, clock):
    missing = tmp_path / "missing.pem"
    evidence = tls_certificate("127.0.0.1", valid_port, clock=clock, ca_file=str(missing))

    assert not evidence.ok
    assert evidence.summary == (
        f"TLS check of 127.0.0.1:{valid_port} failed: CA file {missing} could not be loaded"
    )


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
