"""Real file-transfer servers on loopback for firmware and diagnostics tests: a pyftpdlib FTP
server and a stdlib HTTP server (GET serves files, PUT stores them), each in its own thread."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer

FTP_USER = "fwuser"
FTP_PASSWORD = "ftp-secret"


@contextlib.contextmanager
def ftp_server(root: Path) -> Iterator[str]:
    """Yields the base URL ftp://user:password@127.0.0.1:port/ of a server rooted at `root`."""
    root.mkdir(parents=True, exist_ok=True)
    authorizer = DummyAuthorizer()
    authorizer.add_user(FTP_USER, FTP_PASSWORD, str(root), perm="elradfmwMT")
    handler = type("Handler", (FTPHandler,), {"authorizer": authorizer, "banner": "test"})
    server = FTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        # Non-blocking rounds so the loop can be stopped from its own thread (the ioloop is
        # not thread-safe).
        while not stop.is_set():
            server.serve_forever(timeout=0.05, blocking=False, handle_exit=False)
        server.close_all()

    thread = threading.Thread(target=serve, name="ftp-server", daemon=True)
    thread.start()
    try:
        yield f"ftp://{FTP_USER}:{FTP_PASSWORD}@127.0.0.1:{port}/"
    finally:
        stop.set()
        thread.join(10)


class HttpStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.gets: list[str] = []
        self.puts: list[str] = []
        self.fail_puts = False


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[tuple[str, HttpStore]]:
    """Yields (base URL http://127.0.0.1:port/, store); GET /x serves root/x, PUT /x writes it."""
    root.mkdir(parents=True, exist_ok=True)
    store = HttpStore(root)

    class Handler(BaseHTTPRequestHandler):
        def _path(self) -> Path | None:
            rel = unquote(urlsplit(self.path).path).lstrip("/")
            p = (root / rel).resolve()
            return p if p.is_relative_to(root.resolve()) and rel else None

        def do_GET(self) -> None:
            store.gets.append(self.path)
            p = self._path()
            if p is None or not p.is_file():
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            data = p.read_bytes()
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            store.puts.append(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            p = self._path()
            if store.fail_puts or p is None:
                self.send_error(HTTPStatus.FORBIDDEN)
                return
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(body)
            self.send_response(HTTPStatus.CREATED)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="http-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", store
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def refused_url(scheme: str = "http") -> str:
    """A loopback URL on a port where nothing listens (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/firmware.bin"
