"""The daemon's HTTP endpoints on one port: ``/metrics``, ``/livez``, ``/readyz``.

A stdlib `ThreadingHTTPServer` in a daemon thread. It knows nothing of the daemon:
it is handed three callables, so it stays a thin adapter.

- ``/metrics``: Prometheus text exposition of the process' registry.
- ``/livez``: 200 while the scheduler thread is alive; touches no database.
- ``/readyz``: 200 when the policy is loaded, the scheduler started and every store
  answers (the daemon caches that check for a few seconds); 503 otherwise. Both
  answer a small JSON document saying which check failed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["Endpoints", "HealthServer", "serve"]

Check = Callable[[], tuple[bool, Mapping[str, Any]]]


@dataclass(frozen=True)
class Endpoints:
    """What the server answers with."""

    metrics: Callable[[], bytes]
    live: Check
    ready: Check


class HealthServer:
    """A running HTTP server; `port` is the bound port (useful with port 0)."""

    def __init__(self, server: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(endpoints: Endpoints, log: Callable[[str, int], None]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "retention"
        sys_version = ""

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _check(self, check: Check) -> None:
            try:
                ok, detail = check()
            except Exception as exc:  # a probe must answer, not hang up
                ok, detail = False, {"error": f"{type(exc).__name__}: {exc}"}
            body = json.dumps({"ok": ok, **detail}, default=str).encode() + b"\n"
            self._send(200 if ok else 503, body, "application/json")

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, endpoints.metrics(), CONTENT_TYPE_LATEST)
            elif path == "/livez":
                self._check(endpoints.live)
            elif path == "/readyz":
                self._check(endpoints.ready)
            else:
                self._send(404, b"not found: try /metrics, /livez or /readyz\n", "text/plain")

        do_HEAD = do_GET

        def log_message(self, format: str, *args: Any) -> None:
            return

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            log(self.path, int(code) if str(code).isdigit() else 0)

    return Handler


def serve(
    endpoints: Endpoints,
    host: str,
    port: int,
    *,
    log: Callable[[str, int], None] = lambda _path, _status: None,
) -> HealthServer:
    """Start serving `endpoints` on host:port in a daemon thread (port 0: any free port)."""
    server = ThreadingHTTPServer((host, port), _handler(endpoints, log))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    return HealthServer(server, thread)
