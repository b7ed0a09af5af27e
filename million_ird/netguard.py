"""What a download may connect to and how much it may read: non-public addresses and over-large bodies are refused.

The check sits where urllib's HTTP(S) connections open their socket: the host is resolved once,
every resolved address is checked, and the socket connects to exactly the address that passed, so a
DNS answer that changes between check and connect (rebinding) cannot slip through. Each redirect hop
opens a new connection, so every hop is checked the same way. Through a proxy the connection goes
to the proxy, so the proxy's address is what is checked (and the proxy decides about the rest).

`install(guard)` puts the guarded opener in place for `urllib.request.urlopen` in the calling
process (what img2dataset fetches with). img2dataset runs its downloader in worker processes
(spawned, or Ray/Spark workers) that do not inherit that, so the engine wraps the downloader in
`GuardedCall`, which installs the guard in whatever process unpickles and calls it.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import socket
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_BYTES = 200_000_000
_CHUNK = 1 << 20
_installed: NetGuard | None = None


class RefusedAddress(OSError):
    """The host resolves only to addresses the guard refuses."""


class FileTooLarge(OSError):
    """The body is larger than the guard's `max_bytes`."""


@dataclass(frozen=True)
class NetGuard:
    """Refuse non-public addresses unless `allow_private`; refuse bodies over `max_bytes` (0: no limit).

    `allow_networks`: CIDR networks allowed even when non-public (for tests, or a known internal mirror).
    """

    allow_private: bool = False
    max_bytes: int = DEFAULT_MAX_BYTES
    allow_networks: tuple[str, ...] = ()

    def refusal(self, host: str, address: str) -> str | None:
        """Why connecting to `address` (resolved from `host`) is refused, or None when it is allowed."""
        if self.allow_private:
            return None
        ip = _ip(address)
        if any(ip in ipaddress.ip_network(net) for net in self.allow_networks):
            return None
        kind = address_kind(address)
        if kind is None:
            return None
        where = f"{host} is" if _ip_or_none(host) == ip else f"{host} resolves to {address},"
        return f"refused: {where} a {kind} address (pass --allow-private to allow)"


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id (fe80::1%eth0)


def _ip_or_none(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return _ip(text.strip("[]"))
    except ValueError:
        return None


def address_kind(address: str) -> str | None:
    """None for a public address, else what it is: loopback, private, link-local, unspecified, multicast, ..."""
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv6Address):  # an IPv4 address wrapped in IPv6 is judged as itself
        ip = ip.ipv4_mapped or ip.sixtofour or ip
    for kind, hit in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                      ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                      ("reserved", ip.is_reserved), ("private", ip.is_private)):
        if hit:
            return kind
    return None if ip.is_global else "non-public"


def refuse_nonpublic(address: str, host: str | None = None, guard: NetGuard | None = None) -> None:
    """Raise RefusedAddress when `guard` (default: refuse every non-public address) refuses `address`."""
    reason = (guard or NetGuard()).refusal(host or address, address)
    if reason:
        raise RefusedAddress(reason)


def too_large(size: int, limit: int, exact: bool = True) -> str:
    """The error for a file over `--max-bytes` (`exact=False`: the size is only known to exceed `size`)."""
    if not exact:
        return f"file is over max-bytes {limit / 1e6:.3g} MB (stopped reading after {size} bytes; raise --max-bytes to allow)"
    return f"file is {size / 1e6:.3g} MB > max-bytes {limit / 1e6:.3g} MB (raise --max-bytes to allow)"


def guarded_connection(guard: NetGuard) -> Callable[..., socket.socket]:
    """A drop-in for `socket.create_connection` that connects only to addresses `guard` allows."""

    def create_connection(address: tuple[str, int], timeout: Any = socket._GLOBAL_DEFAULT_TIMEOUT,  # noqa: B008
                          source_address: tuple[str, int] | None = None, **_: Any) -> socket.socket:
        host, port = address
        refusal: str | None = None
        error: OSError | None = None
        for family, kind, proto, _name, sockaddr in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
            reason = guard.refusal(host, sockaddr[0])
            if reason:
                refusal = refusal or reason
                continue
            sock = socket.socket(family, kind, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(sockaddr)  # the very address that was checked: no second lookup
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if error is not None:
            raise error
        raise RefusedAddress(refusal or f"{host}: no address to connect to")

    return create_connection


class _CappedResponse(http.client.HTTPResponse):
    """An HTTP response that refuses a declared length over `max_bytes` and stops reading past it."""

    def __init__(self, sock: socket.socket, *args: Any, max_bytes: int = 0, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        self.max_bytes = max_bytes

    def begin(self) -> None:
        """Read the status and headers; refuse a 2xx whose Content-Length is over the cap."""
        super().begin()
        if self.max_bytes and 200 <= self.status < 300 and self.length is not None and self.length > self.max_bytes:
            raise FileTooLarge(too_large(self.length, self.max_bytes))

    def read(self, amt: int | None = None) -> bytes:
        """Like HTTPResponse.read, but a whole-body read never holds more than the cap."""
        if amt is not None or not self.max_bytes or (self.length is not None and self.length <= self.max_bytes):
            return super().read(amt)
        chunks, total = [], 0
        while chunk := super().read(min(_CHUNK, self.max_bytes + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > self.max_bytes:
                self.close()
                raise FileTooLarge(too_large(total, self.max_bytes, exact=False))
        return b"".join(chunks)


def _connection_factory(base: type[http.client.HTTPConnection], guard: NetGuard) -> Callable[..., Any]:
    """What urllib's do_open calls instead of the connection class: the same class, guarded."""
    connect = guarded_connection(guard)
    response = functools.partial(_CappedResponse, max_bytes=guard.max_bytes)

    def make(host: str, **kwargs: Any) -> http.client.HTTPConnection:
        conn = base(host, **kwargs)
        conn._create_connection = connect  # type: ignore[attr-defined]  # what connect() opens its socket with
        conn.response_class = response  # type: ignore[assignment]
        return conn

    return make


def _refuse(req: urllib.request.Request) -> None:
    raise urllib.error.URLError(f"refused: {req.full_url}: only http(s) URLs are fetched")


class _NoFtp(urllib.request.FTPHandler):
    """Replaces urllib's FTP handler: a redirect may point at ftp://, which is never fetched."""

    def ftp_open(self, req: urllib.request.Request) -> None:
        """Refuse."""
        _refuse(req)


class _NoFile(urllib.request.FileHandler):
    """Replaces urllib's file:// handler: local files are never a download."""

    def file_open(self, req: urllib.request.Request) -> None:
        """Refuse."""
        _refuse(req)


class _Guarded:
    """Mixin for urllib's HTTP(S) handlers: every connection they open is made by `_connection_factory`."""

    guard: NetGuard = NetGuard()

    def do_open(self, http_class: type[http.client.HTTPConnection], req: urllib.request.Request,
                **kwargs: Any) -> http.client.HTTPResponse:
        """urllib's do_open with the connection class guarded (the stdlib's own arguments kept)."""
        return super().do_open(_connection_factory(http_class, self.guard), req, **kwargs)  # type: ignore[misc]


class _GuardedHTTP(_Guarded, urllib.request.HTTPHandler):
    pass


class _GuardedHTTPS(_Guarded, urllib.request.HTTPSHandler):
    pass


def build_opener(guard: NetGuard) -> urllib.request.OpenerDirector:
    """A urllib opener (proxies from the environment, redirects) whose every connection goes through `guard`."""
    handlers: list[urllib.request.BaseHandler] = [_GuardedHTTP(), _GuardedHTTPS(), _NoFtp(), _NoFile()]
    for handler in handlers[:2]:
        handler.guard = guard  # type: ignore[attr-defined]
    return urllib.request.build_opener(*handlers)


def install(guard: NetGuard) -> None:
    """Make `urllib.request.urlopen` in this process use `build_opener(guard)` (a no-op when already so)."""
    global _installed
    if _installed != guard:
        urllib.request.install_opener(build_opener(guard))
        _installed = guard


@dataclass(frozen=True)
class GuardedCall:
    """A picklable callable that installs `guard` in the process that calls it, then calls `fn`."""

    fn: Callable[..., Any]
    guard: NetGuard

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Install the guard here (worker processes start without it), then call `fn`."""
        install(self.guard)
        return self.fn(*args, **kwargs)
