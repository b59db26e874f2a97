"""A local photo host that misbehaves on purpose, for the downloader's tests and benchmark.

A threaded `http.server` speaking HTTP/1.1 with keep-alive. Each path is a `Route`: its bytes
plus how to serve them (slowly, failing the first N times, with `Retry-After`, cutting the
connection halfway, as HTML...). Every request is counted, with its arrival time, so a test can
tell that a retry happened, or that a re-run did not fetch a file again.

    host = PhotoHost(latency=0.05)
    host.add("/a.jpg", Route(body=jpeg_bytes, fail_first=1))
    with host:
        httpx.get(host.url("/a.jpg"))
    host.hits["/a.jpg"]  # 2

Run it alone (the benchmark does, so its threads do not share a GIL with the client):

    python tests/photohost.py --root DIR --latency 0.05   # prints the port, serves /<file>
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0  # extra seconds before answering
    fail_first: int = 0  # the first N requests get `fail_status`
    fail_status: int = 500
    retry_after: str | None = None  # sent with the failing answers
    cut_first: int = 0  # the first N requests get half the body, then the connection drops
    trickle: float = 0.0  # pause this long halfway through the body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # 32+ clients connect at once; the default 5 drops SYNs
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away mid-answer (a cancelled download) is expected here


class PhotoHost:
    def __init__(self, latency: float = 0.0, handshake: float = 0.0) -> None:
        """`latency`: added to every request; `handshake`: added once per new connection
        (the round trip a real TCP handshake costs, which keep-alive saves)."""
        self.latency = latency
        self.handshake = handshake
        self.routes: dict[str, Route] = {}
        self.hits: Counter[str] = Counter()
        self.hit_times: defaultdict[str, list[float]] = defaultdict(list)
        self.connections = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def add(self, path: str, route: Route) -> str:
        self.routes[path] = route
        return self.url(path)

    @property
    def port(self) -> int:
        assert self._server is not None, "the photo host is not started"
        return self._server.server_address[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}" if self._server else path

    def total_hits(self) -> int:
        with self._lock:
            return sum(self.hits.values())

    def start(self, port: int = 0) -> PhotoHost:
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> PhotoHost:
        return self.start() if self._server is None else self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _record(self, path: str) -> int:
        with self._lock:
            self.hits[path] += 1
            self.hit_times[path].append(time.monotonic())
            return self.hits[path]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, a keep-alive client's
            # delayed ACK would add ~40 ms to every request, which no real photo host does.
            disable_nagle_algorithm = True

            def handle(self) -> None:
                with host._lock:
                    host.connections += 1
                if host.handshake:
                    time.sleep(host.handshake)
                super().handle()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/_hits":
                    with host._lock:
                        data = json.dumps(
                            {"hits": dict(host.hits), "connections": host.connections}
                        )
                    self._send(200, data.encode(), {"Content-Type": "application/json"})
                    return
                count = host._record(path)
                route = host.routes.get(path)
                if host.latency:
                    time.sleep(host.latency)
                if route is None:
                    self._send(404, b"not here", {"Content-Type": "text/plain"})
                    return
                if route.delay:
                    time.sleep(route.delay)
                if count <= route.fail_first:
                    headers = {"Content-Type": "text/plain"}
                    if route.retry_after is not None:
                        headers["Retry-After"] = route.retry_after
                    self._send(route.fail_status, b"try again later", headers)
                    return
                if route.status != 200:
                    self._send(route.status, b"no", {"Content-Type": "text/plain"})
                    return
                body = route.body
                self.send_response(200)
                self.send_header("Content-Type", route.content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                half = len(body) // 2
                if count <= route.cut_first:
                    self.wfile.write(body[:half])
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if route.trickle:
                    self.wfile.write(body[:half])
                    time.sleep(route.trickle)
                    self.wfile.write(body[half:])
                else:
                    self.wfile.write(body)

        return Handler


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a folder's files as a photo host.")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--handshake", type=float, default=0.0)
    args = parser.parse_args()
    host = PhotoHost(latency=args.latency, handshake=args.handshake)
    for file in sorted(args.root.iterdir()):
        if file.is_file():
            host.add(f"/{file.name}", Route(body=file.read_bytes()))
    host.start()
    print(host.port, flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin
    finally:
        host.stop()


if __name__ == "__main__":
    main()
