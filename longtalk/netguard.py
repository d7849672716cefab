"""Fetch a user's http(s) URL without letting it reach what it must not.

`fetch(key, url, settings)` yields the body in chunks. Every hop (the URL and each redirect):

1. the scheme must be http or https;
2. the host is resolved ONCE (getaddrinfo; an IP literal is not looked up at all) and every
   address it gives must be public: loopback, private (RFC 1918, fc00::/7), link-local
   (169.254/16, fe80::/10), unspecified, multicast, documentation (TEST-NET), benchmarking,
   reserved, shared/CGNAT (100.64/10), the IPv4 inside an IPv4-mapped, 6to4 or NAT64 IPv6
   address of any of those, and the cloud metadata endpoints (169.254.169.254, fd00:ec2::254,
   metadata.google.internal, ...) are refused, unless the host name or the address is in
   `settings.url_allow_hosts` (comma-separated host names, IP addresses or CIDR networks);
3. the connection goes to the address that was checked (no second lookup, so DNS rebinding
   cannot swap it), while the Host header and the TLS server name / certificate check use
   the host name;
4. redirects are followed by hand, at most `settings.max_redirects`, each one checked again.

Limits: `download_timeout_s` for the connection and every read, `download_total_s` for the
whole download (redirects included; a watchdog closes the socket when it passes, so a server
that trickles bytes cannot hold on), `max_input_bytes` (a larger Content-Length is refused
before the body is read; reading stops as soon as the running size passes it). Proxy
variables of the environment are not used. Errors are InputError(key, reason) and never show
a URL's user info, query or fragment (`text.redact_url`). A refusal (scheme, address, a limit,
an HTTP error status) is an InputError; a download that broke off (connection refused, reset or
timed out, the body shorter than its Content-Length, HTTP 5xx or 429, host not found) is its
subclass DownloadFailed, which the ingest activity retries.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

from .errors import DownloadFailed, InputError
from .settings import Settings
from .text import redact_url

CHUNK_BYTES = 1024 * 1024
USER_AGENT = "longtalk-staging/0.1"
REDIRECT_CODES = (301, 302, 303, 307, 308)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    "169.254.170.2",  # AWS ECS task metadata
    "fd00:ec2::254",  # AWS over IPv6
    "100.100.100.200",  # Alibaba Cloud
))
METADATA_NAMES = frozenset({
    "metadata.google.internal", "metadata.goog", "metadata", "instance-data",
    "instance-data.ec2.internal",
})
SHARED_NETWORK = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
# named by what they are (Python's is_private is True for all of these and more)
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7"))  # RFC 1918, RFC 4193
DOCUMENTATION_NETWORKS = tuple(ipaddress.ip_network(n) for n in (  # RFC 5737, RFC 3849
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32"))
BENCHMARK_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("198.18.0.0/15", "2001:2::/48"))  # RFC 2544, 5180
NAT64_NETWORK = ipaddress.ip_network("64:ff9b::/96")


# ---- the address policy ---------------------------------------------------------------

@dataclass(frozen=True)
class AllowList:
    """`settings.url_allow_hosts` parsed: host names and networks URL inputs may reach even
    when they are not public."""

    names: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    @classmethod
    def parse(cls, text: str) -> AllowList:
        names, networks = set(), []
        for entry in (e.strip() for e in (text or "").split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(_normal_host(entry))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return _normal_host(host) in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        candidates = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            candidates.append(ip.ipv4_mapped)
        return any(c.version == net.version and c in net for c in candidates for net in self.networks)


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def address_problem(ip: IPAddress) -> str | None:
    """Why the guard does not connect to this address ("a loopback address", ...), or None."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in NAT64_NETWORK:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = address_problem(embedded)
            return f"an IPv6 address embedding {inner}" if inner else None
        if ip.scope_id:
            return "a scoped (link-local) address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.version == 4 and ip in SHARED_NETWORK:
        return "a shared (carrier-grade NAT) address"
    if any(ip in net for net in PRIVATE_NETWORKS):
        return "a private address"
    if any(ip in net for net in DOCUMENTATION_NETWORKS):
        return "a reserved documentation (TEST-NET) address"
    if any(ip in net for net in BENCHMARK_NETWORKS):
        return "a reserved benchmarking address"
    if ip.version == 6 and ip.is_site_local:
        return "a site-local address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global:
        return "a non-public address"
    return None


@dataclass(frozen=True)
class Target:
    """One vetted hop: where to connect and what to say."""

    scheme: str
    host: str  # for the Host header and TLS (IPv6 without brackets)
    port: int
    path: str  # path and query, as sent in the request line
    addresses: tuple[str, ...]  # checked addresses, in the order to try


def vet_url(key: str, url: str, settings: Settings, allow: AllowList | None = None,
            hop: str = "") -> Target:
    """Check one URL (scheme, host, addresses) and return where to connect. `hop` is put in
    front of refusals ("after redirect: ")."""
    allow = allow or AllowList.parse(settings.url_allow_hosts)
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise InputError(key, f"{hop}not a valid URL: {shown}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        what = f"'{scheme}'" if scheme else "none"
        raise InputError(key, f"{hop}only http and https URLs are accepted, got scheme {what}")
    if not host:
        raise InputError(key, f"{hop}not a valid URL: no host")
    if port is None:
        port = 443 if scheme == "https" else 80
    if port == 0:
        raise InputError(key, f"{hop}not a valid URL: port 0")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    path = "".join(c if 0x20 < ord(c) < 0x7F else quote(c) for c in path)
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise InputError(key, f"{hop}not a valid URL: control characters in the path")
    name_allowed = allow.allows_name(host)
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
        where = f"{shown} refused: {literal} is"
    else:
        if not name_allowed and _normal_host(host) in METADATA_NAMES:
            raise InputError(key, f"{hop}{shown} refused: {host} is a cloud metadata host")
        addresses = _resolve(key, host, port, shown, hop)
        where = f"{shown} refused: the host resolves to"
    if not name_allowed:
        for ip in addresses:
            problem = address_problem(ip)
            if problem is not None and not allow.allows_address(ip):
                raise InputError(key, f"{hop}{where} {problem}, which this service does not connect to "
                                      f"(see LONGTALK_URL_ALLOW_HOSTS)")
    return Target(scheme=scheme, host=host, port=port, path=path,
                  addresses=tuple(dict.fromkeys(str(ip) for ip in addresses)))


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _resolve(key: str, host: str, port: int, shown: str, hop: str) -> list[IPAddress]:
    """One lookup; every address it gives (v4 and v6)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise DownloadFailed(key, f"{hop}host not found: {shown}") from None
    found: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        text = sockaddr[0]
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if family == socket.AF_INET6 and len(sockaddr) >= 4 and sockaddr[3]:
            ip = ipaddress.ip_address(f"{text.split('%')[0]}%{sockaddr[3]}")
        found.append(ip)
    if not found:
        raise DownloadFailed(key, f"{hop}host not found: {shown}")
    return found


# ---- connections pinned to the vetted address ------------------------------------------

def _connect_any(addresses: tuple[str, ...], port: int, timeout: float) -> socket.socket:
    """A TCP connection to the first of the vetted addresses that answers (no name lookup)."""
    last: OSError | None = None
    for address in addresses:
        try:
            return socket.create_connection((address, port), timeout=timeout)
        except OSError as exc:
            last = exc
    raise last if last is not None else OSError("no address to connect to")


class PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to a vetted address; the Host header still names the host."""

    def __init__(self, target: Target, timeout: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout)
        self.addresses = target.addresses
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        self.sock = _connect_any(self.addresses, self.port, self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw_sock = self.sock


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to a vetted address; SNI and the certificate check use the host name."""

    def __init__(self, target: Target, timeout: float, context: ssl.SSLContext | None = None) -> None:
        super().__init__(target.host, target.port, timeout=timeout,
                         context=context or ssl.create_default_context())
        self.addresses = target.addresses
        self.raw_sock: socket.socket | None = None

    def connect(self) -> None:
        sys.audit("http.client.connect", self, self.host, self.port)
        sock = _connect_any(self.addresses, self.port, self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw_sock = sock  # shut down by the watchdog, even mid-handshake
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.raw_sock = self.sock


class _Watchdog:
    """Shuts a connection's socket down when the total time is up (a blocking read ends)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self.conn = None
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def watch(self, conn) -> None:
        self.cancel()
        with self._lock:
            self.conn = conn
            self._timer = threading.Timer(max(0.0, self.deadline - time.monotonic()), self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sock = getattr(self.conn, "raw_sock", None)
        if sock is not None:
            try:  # the plain socket's shutdown, also under TLS: the SSL object stays untouched
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
            except OSError:
                pass

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def expired(self) -> bool:
        """Whether the total time is up (the socket timeout, set to the time left, may end a
        read a moment before the timer fires)."""
        return self.fired or self.left() <= 0.01


# ---- the download ---------------------------------------------------------------------

def fetch(key: str, url: str, settings: Settings,
          ssl_context: ssl.SSLContext | None = None) -> Iterator[bytes]:
    """The body of `url` in chunks, every hop vetted (see the module text). InputErrors name
    `key`. Close the generator to stop early: that closes the connection."""
    allow = AllowList.parse(settings.url_allow_hosts)
    per_read = settings.download_timeout_s
    total = settings.download_total_s
    limit = settings.max_input_bytes
    watchdog = _Watchdog(time.monotonic() + total)
    current = url.strip()
    redirects = 0
    conn = response = None
    try:
        while True:
            hop = "after redirect: " if redirects else ""
            shown = redact_url(current)
            target = vet_url(key, current, settings, allow, hop)
            if watchdog.left() <= 0:
                raise _over_total(key, shown, total)
            timeout = min(per_read, watchdog.left())
            if target.scheme == "https":
                conn = PinnedHTTPSConnection(target, timeout, ssl_context)
            else:
                conn = PinnedHTTPConnection(target, timeout)
            watchdog.watch(conn)
            try:
                conn.putrequest("GET", target.path, skip_accept_encoding=True)
                conn.putheader("User-Agent", USER_AGENT)
                conn.putheader("Accept-Encoding", "identity")
                conn.putheader("Connection", "close")
                conn.endheaders()
                response = conn.getresponse()
            except (OSError, http.client.HTTPException, ValueError) as exc:
                if watchdog.expired():
                    raise _over_total(key, shown, total) from None
                raise DownloadFailed(key, f"{hop}download of {shown} failed: "
                                          f"{_net_reason(exc, per_read)}") from None
            status = response.status
            if status in REDIRECT_CODES:
                location = response.getheader("Location")
                response.close()
                conn.close()
                response = conn = None
                if not location:
                    raise InputError(key, f"{hop}download of {shown} failed: HTTP {status} "
                                          f"without a Location")
                redirects += 1
                if redirects > settings.max_redirects:
                    raise InputError(key, f"download of {redact_url(url)} failed: too many "
                                          f"redirects (more than {settings.max_redirects})")
                current = urljoin(current, location.strip())
                continue
            if not 200 <= status < 300:
                failure = DownloadFailed if status >= 500 or status == 429 else InputError
                raise failure(key, f"{hop}download of {shown} failed: HTTP {status}")
            length = (response.getheader("Content-Length") or "").strip()
            announced = int(length) if length.isdigit() else None
            if announced is not None and announced > limit:
                raise InputError(key, f"larger than the limit of {limit} bytes "
                                      f"(the server announced {int(length)} bytes)")
            size = 0
            while True:
                left = watchdog.left()
                if left <= 0:
                    raise _over_total(key, shown, total)
                sock = getattr(conn, "raw_sock", None)
                if sock is not None:
                    try:
                        sock.settimeout(min(per_read, left))
                    except OSError:
                        pass
                try:
                    chunk = response.read1(CHUNK_BYTES)
                except (OSError, http.client.HTTPException, ValueError) as exc:
                    if watchdog.expired():
                        raise _over_total(key, shown, total) from None
                    raise DownloadFailed(key, f"{hop}download of {shown} failed: "
                                              f"{_net_reason(exc, per_read)}") from None
                if not chunk:
                    if watchdog.expired():
                        raise _over_total(key, shown, total)
                    if announced is not None and size < announced:  # (http.client's read1
                        # ends quietly when the connection closes early)
                        raise DownloadFailed(key, f"{hop}download of {shown} failed: connection "
                                                  f"closed before the end of the body ({size} of "
                                                  f"{announced} bytes)")
                    return
                size += len(chunk)
                if size > limit:
                    raise InputError(key, f"larger than the limit of {limit} bytes")
                yield chunk
    finally:
        watchdog.cancel()
        if response is not None:
            response.close()
        if conn is not None:
            conn.close()


def _over_total(key: str, shown: str, total: float) -> InputError:
    return InputError(key, f"download of {shown} failed: timed out after the total limit of "
                           f"{total:g} s (LONGTALK_DOWNLOAD_TOTAL_S)")


def _net_reason(reason, timeout: float) -> str:
    """A short, safe wording of a network failure (never the URL)."""
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"timed out after {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return "connection reset"
    if isinstance(reason, socket.gaierror):
        return "host not found"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return "TLS certificate not valid for the host"
    if isinstance(reason, ssl.SSLError):
        return "TLS error"
    if isinstance(reason, http.client.IncompleteRead):
        return "connection closed before the end of the body"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed without a response"
    if isinstance(reason, OSError) and reason.errno is not None:
        return f"connection failed ({reason.strerror or reason.errno})"
    return f"connection failed ({type(reason).__name__})"
