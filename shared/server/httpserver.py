"""The server's HTTP/1.1 front: keep-alive connections, a thread each, in front of the WSGI app.

Why not werkzeug's server: it closes every connection after one response and parses headers through
`email`, about 1.5 ms of CPU a request on a small machine, more than a batch-1 model run. This one
reads a request line and headers with the C-level `readline` of a buffered socket file, builds the
environ once and writes the response in one `sendall`: tens of microseconds.

Deliberately strict, since it faces clients directly:
  - Content-Length or `Transfer-Encoding: chunked`, never both, nothing else (request smuggling);
    a header name with whitespace, obsolete line folding: 400; a name with `_` is dropped, since in the
    environ it would pass for its `-` twin (`X_Api_Key` for `X-Api-Key`), as gunicorn and nginx do;
  - request line <= 8 KiB (414), headers <= 100 lines and 64 KiB (431), all within `keepalive_s`;
  - a body the app did not read to its end closes the connection instead of being parsed as a request;
  - at most `threads` connections at once: the accept loop stops taking more, they wait in the backlog
    (or go to another worker, which is how workers share the load).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import sys
import threading
import time
from email.utils import formatdate
from typing import Callable
from urllib.parse import unquote_to_bytes

log = logging.getLogger("slimserve")

MAX_LINE = 8192
MAX_HEADERS = 100
MAX_HEADER_BYTES = 65536
_REASONS = {400: "Bad Request", 411: "Length Required", 413: "Content Too Large", 414: "URI Too Long",
            431: "Request Header Fields Too Large", 501: "Not Implemented", 505: "HTTP Version Not Supported"}  # fmt: skip


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Body(io.RawIOBase):
    """`wsgi.input`: at most Content-Length bytes of the connection; says `100 Continue` on first read."""

    def __init__(self, rfile, length: int, conn=None):
        self._rfile, self.remaining, self._continue = rfile, length, conn

    def readable(self) -> bool:
        return True

    def _go_ahead(self) -> None:
        if self._continue is not None:
            self._continue.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            self._continue = None

    def read(self, size: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        self._go_ahead()
        size = self.remaining if size is None or size < 0 else min(size, self.remaining)
        data = self._rfile.read(size)
        self.remaining -= len(data)
        if len(data) < size:
            self.remaining = -1  # the client went away mid-body: the connection cannot be reused
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class HttpServer:
    def __init__(self, sock: socket.socket, app: Callable, threads: int = 32, keepalive_s: float = 5.0,
                 max_body_bytes: int = 6 * 1024 * 1024, multiprocess: bool = False, balance=None):  # fmt: skip
        self.sock, self.app = sock, app
        self.keepalive_s = keepalive_s
        self.max_body_bytes = max_body_bytes
        self.multiprocess = multiprocess
        self.balance = balance
        self._slots = threading.BoundedSemaphore(max(1, threads))
        self._stop = threading.Event()
        self._idle: dict[socket.socket, bool] = {}  # open connections -> waiting for a request?
        self._lock = threading.Lock()
        host, port = sock.getsockname()[:2]
        self._server = (str(host), str(port))

    # --- accepting -------------------------------------------------------------------------------

    def serve_forever(self) -> None:
        self.sock.settimeout(0.5)  # wakes to notice shutdown()
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.5):
                continue
            if self.balance is not None and not self.balance.may_accept():
                self._slots.release()
                time.sleep(0.01)  # let a less busy worker take the next connection
                continue
            try:
                conn, addr = self.sock.accept()
            except (socket.timeout, BlockingIOError, InterruptedError):
                self._slots.release()
                continue
            except OSError as exc:  # EMFILE and friends: back off instead of spinning
                self._slots.release()
                if self._stop.is_set():
                    break
                log.warning("accept failed: %s", exc)
                time.sleep(0.05)
                continue
            if self.balance is not None:
                self.balance.opened()
            threading.Thread(target=self._connection, args=(conn, addr), name="slimserve-conn", daemon=True).start()
        self._drain()

    def shutdown(self) -> None:
        """Stop accepting; requests in progress finish, idle keep-alive connections close."""
        self._stop.set()

    def _drain(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._idle:
                    return
                for conn, idle in list(self._idle.items()):
                    if idle:
                        try:
                            conn.shutdown(socket.SHUT_RDWR)  # its readline returns: the thread ends
                        except OSError:
                            pass
            time.sleep(0.02)

    # --- one connection --------------------------------------------------------------------------

    def _connection(self, conn: socket.socket, addr) -> None:
        rfile = None
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(self.keepalive_s)
            rfile = conn.makefile("rb", buffering=65536)
            with self._lock:
                self._idle[conn] = True
            while not self._stop.is_set() and self._request(conn, rfile, addr):
                pass
        except (OSError, ValueError):  # timeouts, resets, a socket shut down by _drain
            pass
        finally:
            with self._lock:
                self._idle.pop(conn, None)
            for closable in (rfile, conn):
                try:
                    closable and closable.close()
                except OSError:
                    pass
            self._slots.release()
            if self.balance is not None:
                self.balance.closed()

    def _request(self, conn: socket.socket, rfile, addr) -> bool:
        """Serve one request; True when the connection may carry another."""
        line = rfile.readline(MAX_LINE + 1)
        if line in (b"\r\n", b"\n"):  # a stray CRLF between requests is allowed (RFC 9112 2.2)
            line = rfile.readline(MAX_LINE + 1)
        if not line:
            return False
        with self._lock:
            self._idle[conn] = False
        try:
            environ, body = self._environ(line, rfile, conn, addr)
        except _Refused as exc:
            self._send_error(conn, exc.status, exc.message)
            return False
        keep = self._respond(conn, environ, body)
        with self._lock:
            self._idle[conn] = True
        return keep

    def _environ(self, line: bytes, rfile, conn, addr) -> tuple[dict, _Body]:
        started = time.monotonic()
        if len(line) > MAX_LINE:
            raise _Refused(414, "request line is over 8 KiB")
        parts = line.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or not parts[0].isalpha() or not parts[0].isupper():
            raise _Refused(400, "malformed request line")
        method, target, version = parts
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            raise _Refused(505, "only HTTP/1.1 and HTTP/1.0 are served")
        if target.startswith(("http://", "https://")):  # absolute form: keep the path
            target = "/" + target.split("/", 3)[3] if target.count("/") >= 3 else "/"
        if not target.startswith("/"):
            raise _Refused(400, "request target must be a path")
        path, _, query = target.partition("?")
        environ = {
            "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
            "QUERY_STRING": query, "SERVER_NAME": self._server[0], "SERVER_PORT": self._server[1],
            "SERVER_PROTOCOL": version, "REMOTE_ADDR": str(addr[0]) if addr else "", "REMOTE_PORT": str(addr[1]) if addr else "",
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
            "wsgi.multithread": True, "wsgi.multiprocess": self.multiprocess, "wsgi.run_once": False,
        }  # fmt: skip
        total = 0
        for _ in range(MAX_HEADERS + 1):
            raw = rfile.readline(MAX_LINE + 1)
            total += len(raw)
            if raw in (b"\r\n", b"\n"):
                break
            if not raw or len(raw) > MAX_LINE or total > MAX_HEADER_BYTES or time.monotonic() - started > self.keepalive_s:
                raise _Refused(431, "request headers are too large or too slow")
            if raw[:1] in (b" ", b"\t"):
                raise _Refused(400, "obsolete header line folding is not accepted")
            name, colon, value = raw.decode("latin-1").partition(":")
            if not colon or not name or name != name.strip() or " " in name or "\t" in name:
                raise _Refused(400, "malformed header line")
            if "_" in name:
                continue
            key = name.upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
            value = value.strip()
            if key in environ:
                if key == "CONTENT_LENGTH" and environ[key] != value:
                    raise _Refused(400, "conflicting Content-Length headers")
                environ[key] = environ[key] + "," + value
            else:
                environ[key] = value
        else:
            raise _Refused(431, f"more than {MAX_HEADERS} header lines")
        return environ, self._body(environ, rfile, conn)

    def _body(self, environ: dict, rfile, conn) -> _Body:
        expect = environ.pop("HTTP_EXPECT", "").lower()
        wants_continue = conn if expect == "100-continue" and environ["SERVER_PROTOCOL"] == "HTTP/1.1" else None
        coding = environ.pop("HTTP_TRANSFER_ENCODING", "").lower()
        if coding:
            if "CONTENT_LENGTH" in environ:
                raise _Refused(400, "Content-Length and Transfer-Encoding together are refused")
            if coding != "chunked":
                raise _Refused(501, f"Transfer-Encoding {coding[:40]!r} is not supported; send chunked or a Content-Length")
            data = _dechunk(rfile, self.max_body_bytes, wants_continue)
            environ["CONTENT_LENGTH"] = str(len(data))
            body = _Body(io.BytesIO(data), len(data))
        else:
            raw = environ.get("CONTENT_LENGTH", "")
            if raw and not raw.isdigit():
                raise _Refused(400, "Content-Length must be a non-negative integer")
            body = _Body(rfile, int(raw) if raw else 0, wants_continue if raw and int(raw) > 0 else None)
        environ["wsgi.input"] = body
        return body

    # --- the response ----------------------------------------------------------------------------

    def _respond(self, conn: socket.socket, environ: dict, body: _Body) -> bool:
        captured: list = []

        def start_response(status, headers, exc_info=None):
            if exc_info and captured:
                raise exc_info[1].with_traceback(exc_info[2])
            captured[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; the app never uses it

        try:
            iterable = self.app(environ, start_response)
            try:
                chunks = [chunk for chunk in iterable if chunk]
            finally:
                if hasattr(iterable, "close"):
                    iterable.close()
            status, headers = captured
        except Exception:  # the app answers its own errors; this is a bug of ours, kept from the client
            log.exception("unhandled error serving %s %s", environ["REQUEST_METHOD"], environ["PATH_INFO"][:200])
            self._send_error(conn, 500, "internal server error")
            return False
        connection = environ.get("HTTP_CONNECTION", "").lower()
        keep = body.remaining == 0 and not self._stop.is_set() and (
            "close" not in connection if environ["SERVER_PROTOCOL"] == "HTTP/1.1" else "keep-alive" in connection
        )
        length = sum(map(len, chunks))
        lines = [f"HTTP/1.1 {status}", f"Date: {_date()}", "Server: slimserve"]
        lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection")]
        lines.append(f"Content-Length: {length}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if environ["REQUEST_METHOD"] == "HEAD":
            chunks = []
        if length <= 65536:
            conn.sendall(head + b"".join(chunks))
        else:  # no copy of a large body just to prepend the head
            conn.sendall(head)
            for chunk in chunks:
                conn.sendall(chunk)
        return keep

    def _send_error(self, conn: socket.socket, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nDate: {_date()}\r\nServer: slimserve\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nx-request-id: {os.urandom(8).hex()}\r\nConnection: close\r\n\r\n")
        try:
            conn.sendall(head.encode("latin-1") + body)
        except OSError:
            pass


def _dechunk(rfile, limit: int, wants_continue) -> bytes:
    if wants_continue is not None:
        wants_continue.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    parts, total = [], 0
    while True:
        size_line = rfile.readline(MAX_LINE + 1)
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _Refused(400, "malformed chunk size") from None
        if size < 0:
            raise _Refused(400, "malformed chunk size")
        if size == 0:
            break
        total += size
        if total > limit:
            raise _Refused(413, f"request body is over the limit of {limit} bytes (SLIMSERVE_MAX_BODY_BYTES)")
        data = rfile.read(size)
        if len(data) != size or rfile.readline(3) not in (b"\r\n", b"\n"):
            raise _Refused(400, "chunk shorter than its size")
        parts.append(data)
    for _ in range(MAX_HEADERS):  # trailers: read and dropped
        if rfile.readline(MAX_LINE + 1) in (b"\r\n", b"\n", b""):
            break
    return b"".join(parts)


_date_cache = [0, ""]


def _date() -> str:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, formatdate(now, usegmt=True)]
    return _date_cache[1]
