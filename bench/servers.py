#!/usr/bin/env python3
"""Compare WSGI servers on one trivial WSGI app: the measurement behind `slimserve serve`'s server
(README, "Server"). Not part of `make test` or `make bench`.

    python bench/servers.py [--only NAME[,NAME...]] [--json out.json]

The candidates are not the project's dependencies: put them in a venv of their own at bench/.servers-venv
(`python -m venv bench/.servers-venv && bench/.servers-venv/bin/pip install waitress gunicorn granian
hypercorn uvicorn a2wsgi` plus `-e .` for the gunicorn-waitress leg, which runs slimserve's own worker
class); without it the current interpreter is used and servers it lacks fail their leg. This file is also
the app module (servers:app, servers:asgi_app) and the throughput client (--client). Logs: bench/logs/.

gunicorn runs with --no-control-socket: gunicorn >= 25.1 otherwise creates
$XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl, shared by every
gunicorn started by the same user.

Per server: (a) 96 slow-header conns + 5 normal requests, (b) 96 slow-body
conns + 5 normal requests, (c) keep-alive POST throughput from a separate
client process (8 threads, 5 s), (d) strict-framing probes.
"""

import argparse
import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
VENV_PY = os.path.join(HERE, ".servers-venv", "bin", "python")
PY = VENV_PY if os.path.exists(VENV_PY) else sys.executable
HOST = "127.0.0.1"
N_SLOW = 96
TRICKLE_EVERY = 0.5
NORMAL_TIMEOUT = 10.0
RAW_TIMEOUT = 3.0


# ----------------------------------------------------------------------------- app
def app(environ, start_response):
    """Read the whole body (CONTENT_LENGTH, or read() for chunked), answer JSON."""
    cl = environ.get("CONTENT_LENGTH") or ""
    inp = environ["wsgi.input"]
    if cl:
        body = inp.read(int(cl))
    elif "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        body = inp.read()
    else:
        body = b""
    out = json.dumps({"ok": True, "n": len(body)}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(out)))])
    return [out]


def __getattr__(name):  # servers:asgi_app, built lazily (a2wsgi only in the venv)
    if name == "asgi_app":
        from a2wsgi import WSGIMiddleware

        globals()["asgi_app"] = WSGIMiddleware(app)  # default: workers=10 threads
        return globals()["asgi_app"]
    raise AttributeError(name)


# ------------------------------------------------------------------------- servers
def bin_(name):
    return os.path.join(os.path.dirname(PY), name)


SERVERS = {
    "waitress": lambda p: [
        PY,
        "-c",
        "import servers, waitress; waitress.serve(servers.app, host='%s', port=%d, threads=8, connection_limit=1000)" % (HOST, p),
    ],
    "gunicorn-gthread": lambda p: [
        bin_("gunicorn"),
        "-b",
        "%s:%d" % (HOST, p),
        "-w",
        "2",
        "-k",
        "gthread",
        "--threads",
        "8",
        "--no-control-socket",
        "servers:app",
    ],
    "granian": lambda p: [
        bin_("granian"),
        "--interface",
        "wsgi",
        "--host",
        HOST,
        "--port",
        str(p),
        "--workers",
        "2",
        "--no-ws",
        "servers:app",
    ],
    "hypercorn": lambda p: [bin_("hypercorn"), "-b", "%s:%d" % (HOST, p), "-w", "2", "servers:app"],
    "uvicorn-a2wsgi": lambda p: [
        bin_("uvicorn"),
        "--host",
        HOST,
        "--port",
        str(p),
        "--workers",
        "2",
        "--no-access-log",
        "servers:asgi_app",
    ],
    "gunicorn-waitress": lambda p: [
        bin_("gunicorn"),
        "-b",
        "%s:%d" % (HOST, p),
        "-w",
        "2",
        "-k",
        "shared.server.worker.WaitressWorker",
        "--threads",
        "8",
        "--worker-connections",
        "1000",
        "--no-control-socket",
        "servers:app",
    ],
}
# Extra variants, run only when named in --only:
EXTRA = {
    # granian with few blocking threads: shows whether a slow body holds a thread
    "granian-bt8": lambda p: SERVERS["granian"](p)[:-1] + ["--blocking-threads", "8", "servers:app"],
    # single-process uvicorn (its own bind path sets TCP_NODELAY, --workers N doesn't)
    "uvicorn-a2wsgi-1w": lambda p: [bin_("uvicorn"), "--host", HOST, "--port", str(p), "--no-access-log", "servers:asgi_app"],
}


ALL = dict(SERVERS, **EXTRA)


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def start(name, port):
    os.makedirs(os.path.join(HERE, "logs"), exist_ok=True)
    log = open(os.path.join(HERE, "logs", name + ".log"), "wb")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([HERE, os.path.dirname(HERE)]), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        ALL[name](port), cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def stop(proc):
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # stragglers (workers) left in the group
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def normal_request(port, timeout=NORMAL_TIMEOUT):
    t0 = time.monotonic()
    c = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        c.request("POST", "/x", body=b'{"x": 1}', headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        ms = (time.monotonic() - t0) * 1000
        return "%.0fms" % ms if r.status == 200 else "%d/%.0fms" % (r.status, ms)
    except TimeoutError:
        return "timeout"
    except Exception as e:
        return type(e).__name__
    finally:
        c.close()


def wait_ready(port, proc, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if normal_request(port, timeout=1).endswith("ms"):
            return True
        time.sleep(0.2)
    return False


# -------------------------------------------------------------------- slow clients
class Trickler(threading.Thread):
    """N connections: send `head`, then one byte of `drip` every TRICKLE_EVERY s."""

    def __init__(self, port, head, drip):
        super().__init__(daemon=True)
        self.port, self.head, self.drip = port, head, drip
        self.socks, self.closed, self.replies, self.connect_fail = [], 0, {}, 0
        self.halt = threading.Event()

    def _dead(self, s, why):
        self.socks.remove(s)
        self.closed += 1
        self.replies[why] = self.replies.get(why, 0) + 1
        s.close()

    def run(self):
        for _ in range(N_SLOW):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect((HOST, self.port))
                s.sendall(self.head)
                s.setblocking(False)
                self.socks.append(s)
            except OSError:
                self.connect_fail += 1
                s.close()
        i = 0
        while not self.halt.wait(TRICKLE_EVERY):
            r, _, _ = select.select(self.socks, [], [], 0) if self.socks else ([], 0, 0)
            for s in r:  # server answered or closed
                try:
                    data = s.recv(200)
                except OSError as e:
                    data = type(e).__name__.encode()
                self._dead(s, data.split(b"\r\n")[0].decode("latin-1") or "EOF")
            b = self.drip[i % len(self.drip) : i % len(self.drip) + 1]
            i += 1
            for s in list(self.socks):
                try:
                    s.send(b)
                except OSError as e:
                    self._dead(s, type(e).__name__)

    def finish(self):
        self.halt.set()
        self.join(5)
        for s in self.socks:
            s.close()
        info = "server closed %d/%d" % (self.closed, N_SLOW - self.connect_fail)
        if self.replies:
            info += " " + json.dumps(self.replies)
        if self.connect_fail:
            info += " connect_fail=%d" % self.connect_fail
        return info


def slow_phase(port, head, drip):
    t = Trickler(port, head, drip)
    t.start()
    time.sleep(2.0)
    lat = [normal_request(port) for _ in range(5)]
    info = t.finish()
    time.sleep(1.0)  # let the server notice the closed sockets
    return lat, info


SLOW_HEADERS = (b"POST /x HTTP/1.1\r\nHost: a\r\n", b"X-Slow-Header: " + b"a" * 10000)
SLOW_BODY = (b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n", b"b" * 1000)


# ----------------------------------------------------------------------- throughput
def client_main(port, seconds, nthreads):
    """Runs in its own process: nthreads keep-alive http.client loops."""
    body = b'{"data": "' + b"x" * 186 + b'"}'  # 200 bytes
    counts, errors, first = [0] * nthreads, [0] * nthreads, []
    deadline = time.monotonic() + seconds

    def loop(k):
        c = None
        while time.monotonic() < deadline:
            try:
                if c is None:
                    c = http.client.HTTPConnection(HOST, port, timeout=10)
                c.request("POST", "/x", body=body, headers={"Content-Type": "application/json"})
                r = c.getresponse()
                r.read()
                if r.status != 200:
                    raise RuntimeError("status %d" % r.status)
                if r.getheader("Connection", "").lower() == "close":
                    c.close()
                    c = None
                counts[k] += 1
            except Exception as e:
                errors[k] += 1
                first.append(repr(e)[:80])
                if c is not None:
                    c.close()
                c = None
        if c is not None:
            c.close()

    ts = [threading.Thread(target=loop, args=(k,)) for k in range(nthreads)]
    t0 = time.monotonic()
    [t.start() for t in ts]
    [t.join() for t in ts]
    dt = time.monotonic() - t0
    print(json.dumps({"rps": sum(counts) / dt, "requests": sum(counts), "errors": sum(errors), "first_error": first[0] if first else None}))


def throughput(port, seconds=5, nthreads=8):
    try:
        out = subprocess.run(
            [PY, os.path.abspath(__file__), "--client", str(port), str(seconds), str(nthreads)],
            capture_output=True,
            timeout=seconds + 20,
            text=True,
        ).stdout
        r = json.loads(out)
    except Exception as e:
        return "client failed: %r" % e
    s = "%.0f req/s" % r["rps"]
    if r["errors"]:
        s += " errors=%d (%s)" % (r["errors"], r["first_error"])
    return s


# -------------------------------------------------------------------------- framing
H = b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n"
PROBES = [
    ("control: valid chunked a", H + b"Transfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n"),
    ("CL '\u00b2'", H + b"Content-Length: \xc2\xb2\r\n\r\nab"),
    ("CL '+5'", H + b"Content-Length: +5\r\n\r\nhello"),
    ("CL '1_0'", H + b"Content-Length: 1_0\r\n\r\n0123456789"),
    ("CL+TE chunked", H + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("chunk '+a'", H + b"Transfer-Encoding: chunked\r\n\r\n+a\r\n0123456789\r\n0\r\n\r\n"),
    ("chunk '1_0'", H + b"Transfer-Encoding: chunked\r\n\r\n1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
    ("'X-Foo : b'", H + b"X-Foo : bar\r\nContent-Length: 5\r\n\r\nhello"),
    ("obs-fold", H + b"X-Foo: a\r\n  b\r\nContent-Length: 5\r\n\r\nhello"),
]


def probe(port, raw):
    s = socket.create_connection((HOST, port), timeout=RAW_TIMEOUT)
    buf, how = b"", "EOF"
    try:
        s.sendall(raw)
        while len(buf) < 65536:
            d = s.recv(65536)
            if not d:
                break
            buf += d
    except TimeoutError:
        how = "timeout"
    except OSError as e:
        how = type(e).__name__
    finally:
        s.close()
    if not buf:
        return "no response (%s)" % how
    status = buf.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 1)[-1][:20]
    m = re.search(rb'"n": (\d+)', buf)
    res = status.split(" ")[0] + (" n=%s" % m.group(1).decode() if m else "")
    k = buf.count(b"HTTP/1.")
    return res + (" (+%d more responses)" % (k - 1) if k > 1 else "")


# ----------------------------------------------------------------------------- main
def run_one(name):
    port = free_port()
    proc = start(name, port)
    res = {"name": name, "cmd": " ".join(ALL[name](port))}
    t0 = time.monotonic()
    try:
        if not wait_ready(port, proc):
            res["error"] = "did not start (see logs/%s.log)" % name
            return res
        time.sleep(1.0)  # let the other workers come up too
        res["a"], res["a_info"] = slow_phase(port, *SLOW_HEADERS)
        res["b"], res["b_info"] = slow_phase(port, *SLOW_BODY)
        res["c"] = throughput(port)
        res["d"] = {k: probe(port, raw) for k, raw in PROBES}
        res["alive_after"] = proc.poll() is None
    finally:
        stop(proc)
        res["seconds"] = round(time.monotonic() - t0, 1)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", help="comma-separated subset of: " + ",".join(ALL))
    ap.add_argument("--json", help="also write results here")
    ap.add_argument("--client", nargs=3, metavar=("PORT", "SECONDS", "THREADS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.client:
        return client_main(int(a.client[0]), float(a.client[1]), int(a.client[2]))
    names = a.only.split(",") if a.only else list(SERVERS)
    print("python for servers/client: %s; load average %s" % (PY, os.getloadavg()))
    results = []
    for n in names:
        r = run_one(n)
        results.append(r)
        print("\n== %s  (%ss)\n   %s" % (n, r["seconds"], r["cmd"]))
        if "error" in r:
            print("   ERROR", r["error"])
            continue
        print("   (a) slow headers: %s  [%s]" % (" ".join(r["a"]), r["a_info"]))
        print("   (b) slow bodies:  %s  [%s]" % (" ".join(r["b"]), r["b_info"]))
        print("   (c) throughput:   %s" % r["c"])
        print("   (d) framing:      " + "; ".join("%s -> %s" % kv for kv in r["d"].items()))
        if not r["alive_after"]:
            print("   server process died during the run!")
        sys.stdout.flush()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
