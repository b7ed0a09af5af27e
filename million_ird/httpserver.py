"""A small threaded HTTP server on 127.0.0.1 that serves fixed responses (for the demo and the tests).

It can also stand in as the HTTP proxy of a client (`http_proxy=server.base_url`): absolute-URI requests
for one of `proxy_hosts` are answered from the same routes, so URLs on a reserved host name (which never
resolves) stay the same whatever port the server got. It never forwards anything: any other host is
refused with 403, and CONNECT (https through a proxy) is not implemented (501).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Response:
    """What one path answers: status, body, headers, a delay before the body, a lie about its length."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    declared_length: int | None = None


@dataclass
class LocalServer:
    """Serve `routes` on 127.0.0.1 in a background thread; counts hits per path.

    `proxy_hosts`: host names whose absolute-URI (proxy) requests are answered from `routes` too.
    """

    routes: dict[str, Response]
    proxy_hosts: tuple[str, ...] = ()
    hits: Counter = field(default_factory=Counter)
    _server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of a served path."""
        return self.base_url + path

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = self.path.split("?")[0]
                if not path.startswith("/"):  # absolute URI: we are asked as a proxy
                    target = urlsplit(self.path)
                    if target.scheme != "http" or target.hostname not in server.proxy_hosts:
                        refusal = f"this proxy only answers for {', '.join(server.proxy_hosts) or 'no host'}"
                        self._answer(Response(refusal.encode(), 403, "text/plain"))
                        return
                    path = target.path or "/"
                server.hits[path] += 1
                self._answer(server.routes.get(path, Response(b"not found", 404, "text/plain")))

            def _answer(self, resp: Response) -> None:
                if resp.delay:
                    time.sleep(resp.delay)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.content_type)
                length = resp.declared_length if resp.declared_length is not None else len(resp.body)
                self.send_header("Content-Length", str(length))
                for key, value in resp.headers:
                    self.send_header(key, value)
                self.end_headers()
                try:
                    self.wfile.write(resp.body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                if resp.declared_length is not None:
                    self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def __enter__(self) -> LocalServer:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()
