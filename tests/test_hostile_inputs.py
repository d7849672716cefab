"""Hostile URL and path inputs: SSRF, DNS rebinding, redirects, slow and huge bodies, escapes.

Every network test talks only to a ThreadingHTTPServer on 127.0.0.1 started here; addresses
that must never be contacted are refused before any socket is opened (socket.create_connection
and socket.getaddrinfo are watched to prove it). A summary of the cases tried is printed at
the end of the run.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from longtalk import netguard
from longtalk.errors import DownloadFailed, FieldError, InputError
from longtalk.inputs.sources import MediaSource, open_source
from longtalk.netguard import fetch
from longtalk.stack import free_port
from tests.helpers import summary_line

BODY = b"RIFF\x24\x00\x00\x00WAVE" + bytes(range(256)) * 64  # what /files/data serves
BIG_BYTES = 40 * 1024 * 1024
SECRET = "SECRET-TOKEN-42"

CASES: list[tuple[str, bool]] = []  # (case, refused or handled as expected)


@pytest.fixture(scope="module", autouse=True)
def summary(request):
    """Print "N hostile inputs tried, N handled as expected" in the terminal summary."""
    summary_line(request, "hostile-inputs-summary", lambda: (
        f"test_hostile_inputs: {len(CASES)} hostile inputs tried, {sum(1 for _, good in CASES if good)} "
        f"refused or contained as expected"))


@contextmanager
def case(name: str):
    """Count one hostile input: tried, and refused (or contained) as the block asserts."""
    try:
        yield
    except BaseException:
        CASES.append((name, False))
        raise
    CASES.append((name, True))


# ---- a local server --------------------------------------------------------------------

class Server:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.sent: dict[str, int] = {}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        with self.lock:
            return [p for p, _ in self.requests]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                parts = urlsplit(self.path)
                with server.lock:
                    server.requests.append((parts.path, self.headers.get("Host", "")))
                try:
                    self._serve(parts.path, parse_qs(parts.query))
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, code, body=b"", headers=()):
                self.send_response(code)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            def _serve(self, path, query):
                if path == "/files/data":
                    self._send(200, BODY)
                elif path == "/redirect":  # 302 to ?to=...
                    self._send(302, headers=[("Location", query["to"][0])])
                elif path.startswith("/loop/"):  # an endless chain of redirects
                    n = int(path.rsplit("/", 1)[1])
                    self._send(302, headers=[("Location", f"/loop/{n + 1}?{SECRET}")])
                elif path.startswith("/chain/"):  # /chain/N redirects N times, then serves
                    n = int(path.rsplit("/", 1)[1])
                    if n == 0:
                        self._send(200, BODY)
                    else:
                        self._send(307, headers=[("Location", f"/chain/{n - 1}")])
                elif path in ("/big", "/big-unannounced"):
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 128 * 1024)
                    self.send_response(200)
                    if path == "/big":
                        self.send_header("Content-Length", str(BIG_BYTES))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    block = b"\x00" * 65536
                    for _ in range(BIG_BYTES // len(block)):
                        self.wfile.write(block)
                        with server.lock:
                            server.sent[path] = server.sent.get(path, 0) + len(block)
                elif path == "/short":  # announces more than it sends, then hangs up
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(BODY) * 2))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.wfile.write(BODY)
                elif path == "/unavailable":
                    self._send(503, b"try later")
                elif path == "/trickle":  # a byte every 0.1 s: no single read ever times out
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for _ in range(100000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
                else:
                    self._send(404, b"not here")

        return Handler


@pytest.fixture(scope="module")
def server():
    srv = Server()
    yield srv
    srv.close()


@pytest.fixture
def strict(settings):
    """The default policy: nothing but public addresses."""
    return replace(settings, url_allow_hosts="", max_redirects=5)


@pytest.fixture
def local(settings):
    """Loopback allowed, so the local server can stand in for a public one."""
    return replace(settings, url_allow_hosts="127.0.0.1", max_redirects=5)


def download(url: str, settings, key: str = "wav_url") -> bytes:
    return b"".join(fetch(key, url, settings))


def refusal(url: str, settings, key: str = "wav_url") -> FieldError:
    """The guard's refusal (an InputError) or a download that broke off (DownloadFailed): both
    name the field, and a client refuses the job with either."""
    with pytest.raises(FieldError) as info:
        download(url, settings, key)
    err = info.value
    assert err.field == key
    return err


class NetWatch:
    """Counts name lookups and connections (and can answer lookups with chosen addresses)."""

    def __init__(self, monkeypatch, answers: dict[str, list] | None = None,
                 reroute: tuple[str, int] | None = None) -> None:
        self.lookups: list[str] = []
        self.connects: list[tuple[str, int]] = []
        self.answers = answers or {}
        real_getaddrinfo = socket.getaddrinfo
        real_connect = socket.create_connection

        def getaddrinfo(host, port, *args, **kwargs):
            if not _numeric(host):  # create_connection "resolves" the IP it is given: no DNS
                self.lookups.append(host)
            if host in self.answers:
                queue = self.answers[host]
                if not queue:  # a name with no address
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
                ip = queue.pop(0) if len(queue) > 1 else queue[0]
                ips = ip if isinstance(ip, list) else [ip]
                out = []
                for one in ips:
                    if ":" in one:
                        out.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (one, port, 0, 0)))
                    else:
                        out.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (one, port)))
                return out
            return real_getaddrinfo(host, port, *args, **kwargs)

        def create_connection(address, *args, **kwargs):
            self.connects.append((address[0], address[1]))
            if reroute is not None:  # stand-in for the internet: every connection lands here
                address = reroute
            return real_connect(address, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
        monkeypatch.setattr(socket, "create_connection", create_connection)


def _numeric(host) -> bool:
    try:
        ipaddress.ip_address(str(host).split("%")[0])
        return True
    except ValueError:
        return False


# ---- loopback and the allow-list ---------------------------------------------------------

def test_loopback_is_refused_by_default(strict, server, monkeypatch):
    watch = NetWatch(monkeypatch)
    before = len(server.paths())
    with case("loopback 127.0.0.1 by default"):
        err = refusal(server.url("/files/data"), strict)
        assert "loopback address" in err.reason and "LONGTALK_URL_ALLOW_HOSTS" in err.reason
        assert watch.connects == [] and len(server.paths()) == before


@pytest.mark.parametrize("allow", ["127.0.0.1", "127.0.0.0/8", "10.0.0.0/8, 127.0.0.1"])
def test_loopback_is_allowed_by_the_allow_list(settings, server, allow):
    data = download(server.url("/files/data"), replace(settings, url_allow_hosts=allow))
    assert data == BODY


def test_allow_list_by_host_name(settings, server, monkeypatch):
    watch = NetWatch(monkeypatch, {"media.internal": ["127.0.0.1"]})
    allowed = replace(settings, url_allow_hosts="media.internal")
    assert download(server.url("/files/data", "media.internal"), allowed) == BODY
    assert watch.connects == [("127.0.0.1", server.port)]
    # the name is allowed, not the address: the same server by IP stays refused
    err = refusal(server.url("/files/data"), allowed)
    assert "loopback" in err.reason


# ---- redirects ---------------------------------------------------------------------------

@pytest.mark.parametrize("target, problem", [
    ("http://127.0.0.1:{port}/files/data", "loopback address"),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "cloud metadata address"),
    ("http://10.1.2.3/internal", "private address"),
    ("http://[::1]:{port}/files/data", "loopback address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host"),
])
def test_redirect_from_an_allowed_host_to_a_refused_address(settings, server, monkeypatch,
                                                           target, problem):
    watch = NetWatch(monkeypatch, {"allowed.example": ["127.0.0.1"]})
    allowed = replace(settings, url_allow_hosts="allowed.example")
    location = target.format(port=server.port)
    url = server.url("/redirect", "allowed.example") + "?to=" + location
    with case(f"redirect to {location}"):
        err = refusal(url, allowed)
        assert "after redirect" in err.reason and problem in err.reason
        assert watch.connects == [("127.0.0.1", server.port)]  # only the first hop was contacted


def test_redirect_to_a_non_http_scheme(local, server):
    for location in ("file:///etc/passwd", "ftp://127.0.0.1/x.wav", "gopher://127.0.0.1:70/1"):
        with case(f"redirect to {location.split(':')[0]}:"):
            err = refusal(server.url("/redirect") + "?to=" + location, local)
            assert "after redirect" in err.reason and "only http and https" in err.reason


def test_redirects_are_followed_up_to_the_limit(local, server):
    assert download(server.url("/chain/5"), local) == BODY  # five redirects: the limit
    with case("six redirects with a limit of five"):
        err = refusal(server.url("/chain/6"), local)
        assert "too many redirects (more than 5)" in err.reason
    with case("endless redirect loop"):
        err = refusal(server.url("/loop/0"), replace(local, max_redirects=2))
        assert "too many redirects (more than 2)" in err.reason
        assert SECRET not in str(err)


# ---- schemes -------------------------------------------------------------------------------

@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/voice.wav",
                                 "gopher://127.0.0.1:70/_GET", "dict://127.0.0.1:11211/stat",
                                 "javascript:alert(1)", "data:audio/wav;base64,UklGRg=="])
def test_non_http_schemes_are_refused(strict, url, monkeypatch):
    watch = NetWatch(monkeypatch)
    with case(f"scheme {url.split(':')[0]}:"):
        err = refusal(url, strict)
        assert "only http and https" in err.reason
        # the same through the inputs' open_source (what a job's *_url goes through)
        with pytest.raises(InputError) as info:
            b"".join(open_source(MediaSource("audio", "wav_url", "url", url), strict))
        assert "only http and https" in info.value.reason
        assert watch.connects == [] and watch.lookups == []


# ---- addresses refused without any traffic -----------------------------------------------

@pytest.mark.parametrize("url, problem", [
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "cloud metadata address"),
    ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata host"),
    ("http://10.0.0.1/a.wav", "private address"),
    ("http://192.168.1.1/a.wav", "private address"),
    ("http://172.16.5.4/a.wav", "private address"),
    ("http://127.0.0.1/a.wav", "loopback address"),
    ("http://[::1]/a.wav", "loopback address"),
    ("http://[fe80::1]/a.wav", "link-local address"),
    ("http://169.254.10.10/a.wav", "link-local address"),
    ("http://100.64.0.1/a.wav", "carrier-grade NAT"),
    ("http://[::ffff:127.0.0.1]/a.wav", "embedding a loopback address"),
    ("http://[::ffff:169.254.169.254]/a.wav", "embedding a cloud metadata address"),
    ("http://[2002:7f00:1::1]/a.wav", "embedding a loopback address"),
    ("http://[fc00::1]/a.wav", "private address"),
    ("http://0.0.0.0/a.wav", "unspecified address"),
    ("http://[::]/a.wav", "unspecified address"),
    ("http://224.0.0.1/a.wav", "multicast address"),
    ("http://192.0.2.10/a.wav", "reserved documentation (TEST-NET) address"),
    ("http://198.51.100.7/a.wav", "reserved documentation (TEST-NET) address"),
    ("http://203.0.113.9/a.wav", "reserved documentation (TEST-NET) address"),
    ("http://[2001:db8::1]/a.wav", "reserved documentation (TEST-NET) address"),
    ("http://[::ffff:203.0.113.9]/a.wav", "embedding a reserved documentation (TEST-NET) address"),
    ("http://198.18.0.1/a.wav", "reserved benchmarking address"),
    ("http://240.0.0.1/a.wav", "reserved address"),
])
def test_internal_addresses_are_refused_without_connecting(strict, monkeypatch, url, problem):
    watch = NetWatch(monkeypatch)
    started = time.monotonic()
    with case(f"literal {urlsplit(url).hostname}"):
        err = refusal(url, strict)
        assert problem in err.reason
        # each named for what it is: Python's is_private is True for TEST-NET and more
        assert ("private" in err.reason) == ("private" in problem), err.reason
        assert watch.connects == [] and watch.lookups == []  # no DNS, no connection
        assert time.monotonic() - started < 1


@pytest.mark.parametrize("host", ["2130706433", "0x7f.0.0.1", "127.1", "localhost"])
def test_numeric_tricks_and_localhost_are_resolved_then_refused(strict, monkeypatch, host):
    watch = NetWatch(monkeypatch)
    with case(f"host {host}"):
        err = refusal(f"http://{host}/a.wav", strict)
        # resolved once by the system, found to be loopback, never connected
        assert "loopback address" in err.reason
        assert watch.connects == [] and len(watch.lookups) <= 1


def test_a_name_that_resolves_to_loopback(strict, monkeypatch):
    watch = NetWatch(monkeypatch, {"evil.example": ["127.0.0.1"]})
    with case("evil.example -> 127.0.0.1"):
        err = refusal(f"http://evil.example/voice.wav?sig={SECRET}", strict)
        assert "resolves to a loopback address" in err.reason and SECRET not in str(err)
        assert watch.connects == [] and watch.lookups == ["evil.example"]


def test_a_name_with_one_bad_address_among_good_ones(strict, monkeypatch):
    watch = NetWatch(monkeypatch, {"mixed.example": [["93.184.216.34", "10.0.0.7"]]})
    with case("mixed.example -> public + private"):
        err = refusal("http://mixed.example/voice.wav", strict)
        assert "private address" in err.reason and watch.connects == []


def test_a_host_that_is_not_found(strict, monkeypatch):
    """A name without an address is said to be that (a DownloadFailed: ingest retries it),
    for a URL input and a webhook alike; the webhook's is not called a download."""
    from api.webhooks import check_url

    watch = NetWatch(monkeypatch, {"nohost.example": []})
    with case("host not found"):
        err = refusal(f"http://nohost.example/voice.wav?sig={SECRET}", strict)
        assert isinstance(err, DownloadFailed) and err.reason.startswith("host not found: ")
        assert SECRET not in str(err) and watch.connects == []
    with case("webhook host not found"), pytest.raises(DownloadFailed) as info:
        check_url("http://nohost.example/hook", replace(strict, api_webhook_secret="s"))
    assert info.value.field == "webhook" and info.value.reason.startswith("host not found: ")
    assert "download" not in str(info.value)


def test_a_webhook_to_a_documentation_address_is_named_so(strict, monkeypatch):
    from api.webhooks import check_url

    watch = NetWatch(monkeypatch, {"docs.example": ["198.51.100.20"]})
    for url in ("http://192.0.2.1/hook", "http://docs.example/hook"):
        with case(f"webhook {url}"), pytest.raises(InputError) as info:
            check_url(url, replace(strict, api_webhook_secret="s"))
        assert info.value.field == "webhook", info.value
        assert "reserved documentation (TEST-NET) address" in info.value.reason, info.value
        assert "private" not in info.value.reason and "URL inputs" not in info.value.reason, info.value
    assert watch.connects == []


# ---- DNS rebinding: one lookup per hop, the connection goes to the checked address ----------

def test_dns_rebinding_connects_only_to_the_vetted_address(strict, server, monkeypatch):
    """The name first resolves to a public address, afterwards to loopback: the download
    uses the first (checked) answer and never asks again. Connections are rerouted to the
    local server, standing in for the public host."""
    watch = NetWatch(monkeypatch, {"rebind.example": ["93.184.216.34", "127.0.0.1"]},
                     reroute=("127.0.0.1", server.port))
    before = len(server.paths())
    with case("DNS rebinding public -> loopback"):
        data = download(f"http://rebind.example:{server.port}/files/data", strict)
        assert data == BODY
        assert watch.lookups == ["rebind.example"]  # one lookup: the second answer is never seen
        assert watch.connects == [("93.184.216.34", server.port)]  # the vetted address
        assert server.requests[before:] == [("/files/data", f"rebind.example:{server.port}")]


def test_dns_rebinding_with_the_allow_list(settings, server, monkeypatch):
    """Allowed loopback answer first, the metadata address afterwards: the real connection
    goes to 127.0.0.1 (the vetted answer) after exactly one lookup."""
    watch = NetWatch(monkeypatch, {"rebind.example": ["127.0.0.1", "169.254.169.254"]})
    allowed = replace(settings, url_allow_hosts="127.0.0.1")
    before = len(server.paths())
    with case("DNS rebinding loopback(allowed) -> metadata"):
        data = download(f"http://rebind.example:{server.port}/files/data", allowed)
        assert data == BODY
        assert watch.lookups == ["rebind.example"]
        assert watch.connects == [("127.0.0.1", server.port)]
        assert server.requests[before:] == [("/files/data", f"rebind.example:{server.port}")]


def test_dns_rebinding_across_redirects_is_caught_at_the_hop(settings, server, monkeypatch):
    """Every hop is looked up once and checked again: when the name turns to the metadata
    address on the third hop, that hop is refused and never contacted."""
    watch = NetWatch(monkeypatch, {"rebind.example": ["127.0.0.1", "127.0.0.1",
                                                      "169.254.169.254"]})
    allowed = replace(settings, url_allow_hosts="127.0.0.1")
    with case("DNS rebinding on a redirect hop"):
        err = refusal(f"http://rebind.example:{server.port}/chain/2", allowed)
        assert "after redirect" in err.reason and "cloud metadata address" in err.reason
        assert watch.lookups == ["rebind.example"] * 3
        assert watch.connects == [("127.0.0.1", server.port)] * 2


# ---- HTTPS: the connection is pinned, the certificate is still checked against the name -----

def _make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}"],
                   check=True, capture_output=True, timeout=60)
    return key, cert


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")
def test_https_is_pinned_but_verifies_the_host_name(settings, tmp_path, monkeypatch):
    key, cert = _make_cert(tmp_path, "secure.example")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _tls_handler())
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        client = ssl.create_default_context(cafile=str(cert))
        NetWatch(monkeypatch, {"secure.example": ["127.0.0.1"], "wrong.example": ["127.0.0.1"]})
        allowed = replace(settings, url_allow_hosts="127.0.0.1")
        data = b"".join(fetch("image_url", f"https://secure.example:{port}/x", allowed, client))
        assert data == b"over tls"
        with case("TLS to a pinned address with a certificate for another name"):
            with pytest.raises(FieldError) as info:  # same address, a name the cert lacks
                b"".join(fetch("image_url", f"https://wrong.example:{port}/x", allowed, client))
            assert "TLS certificate not valid" in info.value.reason
    finally:
        httpd.shutdown()
        httpd.server_close()


def _tls_handler():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            body = b"over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


# ---- size and time limits ------------------------------------------------------------------

def test_announced_size_over_the_limit_is_refused_before_the_body(local, server):
    small = replace(local, max_input_bytes=1024 * 1024)
    with case("Content-Length over the limit"):
        err = refusal(server.url("/big"), small)
        assert "larger than the limit of 1048576 bytes" in err.reason and "announced" in err.reason


def test_size_limit_while_streaming(local, server):
    small = replace(local, max_input_bytes=1024 * 1024)
    received = 0
    with case("unannounced body over the limit"):
        with pytest.raises(InputError) as info:
            for chunk in fetch("video_url", server.url("/big-unannounced"), small):
                received += len(chunk)
        assert "larger than the limit of 1048576 bytes" in info.value.reason
        assert received <= small.max_input_bytes
        time.sleep(0.5)
        assert server.sent.get("/big-unannounced", 0) < BIG_BYTES // 4  # reading stopped early


def test_total_time_limit_stops_a_trickling_server(local, server):
    slow = replace(local, download_timeout_s=5, download_total_s=1.0)
    started = time.monotonic()
    with case("trickling server (a byte every 0.1 s) with a 1 s total limit"):
        err = refusal(server.url("/trickle"), slow)
        assert "total limit of 1 s" in err.reason
        assert time.monotonic() - started < 3


def test_connect_and_read_timeouts(local):
    # a listening socket that never answers: the per-read timeout ends the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        quick = replace(local, download_timeout_s=0.5)
        started = time.monotonic()
        with case("server that never answers"):
            err = refusal(f"http://127.0.0.1:{port}/a.wav", quick)
            assert "timed out after 0.5 s" in err.reason
            assert time.monotonic() - started < 2.5


def test_a_body_shorter_than_announced_is_not_a_download(local, server):
    """http.client ends quietly when the connection closes early: the guard counts."""
    with case("body shorter than its Content-Length"):
        err = refusal(server.url("/short"), local)
        assert isinstance(err, DownloadFailed)
        assert f"closed before the end of the body ({len(BODY)} of {2 * len(BODY)} bytes)" in err.reason


def test_refusals_and_broken_downloads_are_told_apart(strict, local, server):
    """A download that broke off (DownloadFailed) is retried by ingest; a refusal is not."""
    broken = [server.url("/unavailable"), f"http://127.0.0.1:{free_port()}/a.wav"]
    refused = [(server.url("/nothing-here"), local), (server.url("/files/data"), strict),
               ("ftp://127.0.0.1/a.wav", local), (server.url("/big"), replace(local, max_input_bytes=1000))]
    for url in broken:
        assert isinstance(refusal(url, local), DownloadFailed), url
    for url, policy in refused:
        assert not isinstance(refusal(url, policy), DownloadFailed), url


# ---- what errors show --------------------------------------------------------------------------

def test_errors_show_neither_query_nor_credentials(strict, local, server, monkeypatch):
    creds = f"user:{SECRET}pw@"
    cases = [
        (f"http://{creds}127.0.0.1:{server.port}/files/data?token={SECRET}", strict),
        (f"http://{creds}127.0.0.1:{server.port}/missing?token={SECRET}#{SECRET}", local),
        (f"http://{creds}127.0.0.1:{free_port()}/a.wav?X-Amz-Signature={SECRET}", local),
        (server.url("/redirect") + f"?to=http://{creds}10.0.0.1/x%3Ftoken%3D{SECRET}", local),
        (server.url("/loop/0") + f"?sig={SECRET}", local),
        (f"ftp://{creds}example.com/a.wav?{SECRET}", strict),
        (f"http://{creds}169.254.169.254/?{SECRET}", strict),
    ]
    for n, (url, policy) in enumerate(cases):
        with case(f"no secrets in error {n}"):
            err = refusal(url, policy)
            assert SECRET not in str(err) and "user:" not in str(err) and "token=" not in str(err)


# ---- paths -------------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path, settings):
    root = tmp_path / "allowed"
    outside = tmp_path / "elsewhere"
    root.mkdir()
    outside.mkdir()
    (root / "inside.wav").write_bytes(BODY)
    (outside / "secret.wav").write_bytes(b"secret")
    limited = replace(settings, input_roots=str(root))
    return root, outside, limited


def read_path(path, settings) -> bytes:
    return b"".join(open_source(MediaSource("audio", "wav_path", "path", str(path)), settings))


def path_refusal(path, settings) -> InputError:
    with pytest.raises(InputError) as info:
        read_path(path, settings)
    assert info.value.field == "wav_path"
    return info.value


def test_dotdot_escape_is_refused(roots):
    root, _outside, limited = roots
    for path in (root / ".." / "elsewhere" / "secret.wav",
                 f"{root}/../../../../../../etc/hostname",
                 root / "sub" / ".." / ".." / "elsewhere" / "secret.wav"):
        with case(f"path {str(path).replace(str(root), '<root>')}"):
            err = path_refusal(path, limited)
            assert "outside the allowed input folders (LONGTALK_INPUT_ROOTS)" in err.reason


def test_symlink_out_of_the_root_is_refused(roots):
    root, outside, limited = roots
    (root / "link.wav").symlink_to(outside / "secret.wav")
    (root / "door").symlink_to(outside, target_is_directory=True)
    (root / "to-etc").symlink_to("/etc")
    for path in (root / "link.wav", root / "door" / "secret.wav", root / "to-etc" / "hostname"):
        with case(f"symlink {path.relative_to(root)} out of the root"):
            err = path_refusal(path, limited)
            assert "outside the allowed input folders" in err.reason


def test_symlink_inside_the_root_is_fine(roots):
    root, _outside, limited = roots
    (root / "sub").mkdir()
    (root / "sub" / "alias.wav").symlink_to(root / "inside.wav")
    (root / "relative.wav").symlink_to("sub/alias.wav")
    assert read_path(root / "sub" / "alias.wav", limited) == BODY
    assert read_path(root / "relative.wav", limited) == BODY
    assert read_path(root / "sub" / ".." / "inside.wav", limited) == BODY


def test_a_refused_path_does_not_reveal_whether_it_exists(roots):
    root, outside, limited = roots
    exists = path_refusal(outside / "secret.wav", limited)
    missing = path_refusal(outside / "no-such-file.wav", limited)
    missing_dir = path_refusal(outside / "no-dir" / "x.wav", limited)
    (root / "dangling.wav").symlink_to(outside / "nothing-here.wav")
    dangling = path_refusal(root / "dangling.wav", limited)
    with case("outside path: existing and missing answer alike"):
        same = {e.reason.split(" is ", 1)[1] for e in (exists, missing, missing_dir, dangling)}
        assert same == {"outside the allowed input folders (LONGTALK_INPUT_ROOTS)"}
    # inside the root a missing file is simply "not found"
    assert "not found" in path_refusal(root / "absent.wav", limited).reason


def test_only_the_operators_own_paths_leave_the_roots(roots):
    """A path the operator gave on the command line (trusted) is read wherever it is; the same
    path in a job document stays confined."""
    _root, outside, limited = roots
    path = str(outside / "secret.wav")
    with case("a job's path outside the roots, trusted only on the command line"):
        err = path_refusal(path, limited)
        assert "outside the allowed input folders" in err.reason
    trusted = MediaSource("audio", "wav_path", "path", path, trusted=True)
    assert b"".join(open_source(trusted, limited)) == b"secret"


def test_star_means_anywhere(roots, tmp_path):
    _root, outside, limited = roots
    anywhere = replace(limited, input_roots="*")
    assert read_path(outside / "secret.wav", anywhere) == b"secret"


def test_default_root_is_the_current_directory(roots, settings, monkeypatch):
    root, outside, _limited = roots
    default = replace(settings, input_roots=".")
    monkeypatch.chdir(root)
    assert read_path("inside.wav", default) == BODY
    with case("outside the current directory with the default roots"):
        err = path_refusal(outside / "secret.wav", default)
        assert "outside the allowed input folders" in err.reason
    assert os.getcwd() == str(root)


def test_netguard_vets_every_address_family(strict):
    """Direct checks of the policy function on the documented ranges."""
    refused = ["127.0.0.1", "10.0.0.1", "172.31.255.255", "192.168.0.1", "169.254.169.254",
               "100.64.0.1", "100.127.255.254", "0.0.0.0", "224.0.0.251", "255.255.255.255",
               "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "fd00:ec2::254",
               "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:c0a8:101::1"]
    public = ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8",
              "64:ff9b::808:808"]
    for ip in refused:
        assert netguard.address_problem(ipaddress.ip_address(ip)) is not None, ip
    for ip in public:
        assert netguard.address_problem(ipaddress.ip_address(ip)) is None, ip
