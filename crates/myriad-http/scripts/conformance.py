#!/usr/bin/env python3
"""HTTP/1.1 conformance probe for an echo origin server.

Usage:
    conformance.py HOST:PORT [--strict] [--only SUBSTR] [--timeout SECS] [-v]

The server under test must answer every well-formed request (any method,
any path) with 200 and the request body echoed back with Content-Length,
HEAD with the head only, and reject malformed requests per RFC 9110 /
RFC 9112. This script starts nothing: it connects to HOST:PORT, sends each
case as raw bytes over a fresh TCP connection (every socket operation has a
timeout, every read loop a byte and time bound), and checks the status, the
echoed body, whether the connection was closed or kept, and responses to
follow-up requests on the same connection.

Each case has a level:
  MUST    the RFC requires the behaviour; a failure makes the exit status 1.
  SHOULD  the RFC recommends it, or allows a choice and this server takes
          the strict one; a failure is reported, and fails the run only
          with --strict.

Output: one line per case (PASS/FAIL/WARN, level, id, detail) and a
summary. Exit 0 when no MUST case failed (and, with --strict, no SHOULD
case either), 1 otherwise, 2 on a usage error or an unreachable server.

The cases are written from the RFC text (sections cited next to each);
they cover the request-parsing, framing, smuggling, malformed-input and
echo-semantics situations a third-party HTTP/1.1 conformance client
exercises against an origin server.
"""

import argparse
import socket
import sys
import time

MUST = "MUST"
SHOULD = "SHOULD"

# Bounds: no read loop runs longer or reads more than this.
MAX_READ = 1 << 20

# --------------------------------------------------------------------------
# Response reading
# --------------------------------------------------------------------------


class Response:
    __slots__ = ("version", "status", "reason", "headers", "body", "raw_head")

    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (lower-case name, value)
        self.body = body
        self.raw_head = raw_head

    def header(self, name):
        vals = [v for (n, v) in self.headers if n == name]
        return vals[0] if len(vals) == 1 else (None if not vals else vals)

    def has(self, name):
        return any(n == name for (n, _) in self.headers)

    def __repr__(self):
        return "%s %d body=%r" % (self.version, self.status, self.body[:40])


class Malformed(Exception):
    pass


def parse_one(buf, method):
    """Parses one response from the front of buf.

    Returns (Response, consumed) or None when more bytes are needed.
    Raises Malformed when the bytes are not an HTTP/1.x response.
    A close-delimited body (no Content-Length, no chunked) is reported as
    None too; the caller finishes it at EOF.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise Malformed("response head over 64 KiB")
        if buf and not b"HTTP/"[: len(buf)].startswith(buf[:5]):
            raise Malformed("not an HTTP response: %r" % buf[:40])
        return None
    head = buf[:end].decode("latin-1")
    lines = head.split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise Malformed("bad status line %r" % lines[0])
    version, status = parts[0], int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = []
    for line in lines[1:]:
        if ":" not in line:
            raise Malformed("bad header line %r" % line)
        n, v = line.split(":", 1)
        headers.append((n.strip().lower(), v.strip()))
    pos = end + 4
    resp = Response(version, status, reason, headers, b"", buf[:pos])
    if 100 <= status < 200 or status in (204, 304) or method == "HEAD":
        return resp, pos
    te = [v for (n, v) in headers if n == "transfer-encoding"]
    cl = [v for (n, v) in headers if n == "content-length"]
    if te:
        if te[-1].lower().split(",")[-1].strip() != "chunked":
            raise Malformed("response transfer-encoding %r" % te)
        body = bytearray()
        p = pos
        while True:
            le = buf.find(b"\r\n", p)
            if le < 0:
                return None
            size_s = buf[p:le].split(b";")[0].strip()
            try:
                size = int(size_s, 16)
            except ValueError:
                raise Malformed("bad chunk size %r" % size_s)
            if size == 0:
                # trailers until an empty line
                q = le + 2
                while True:
                    le2 = buf.find(b"\r\n", q)
                    if le2 < 0:
                        return None
                    if le2 == q:
                        resp.body = bytes(body)
                        return resp, le2 + 2
                    q = le2 + 2
            if len(buf) < le + 2 + size + 2:
                return None
            body += buf[le + 2 : le + 2 + size]
            if buf[le + 2 + size : le + 4 + size] != b"\r\n":
                raise Malformed("chunk without CRLF")
            p = le + 4 + size
    if cl:
        if len(cl) != 1 or not cl[0].isdigit():
            raise Malformed("response content-length %r" % cl)
        n = int(cl[0])
        if len(buf) < pos + n:
            return None
        resp.body = buf[pos : pos + n]
        return resp, pos + n
    # close-delimited
    return None


class Result:
    """What came back on one connection."""

    def __init__(self):
        self.responses = []  # final responses, in order
        self.interim = []  # 1xx responses
        self.closed = False  # EOF or reset seen
        self.reset = False
        self.timed_out = False
        self.send_error = None
        self.malformed = None
        self.leftover = b""

    @property
    def first(self):
        return self.responses[0] if self.responses else None

    def describe(self):
        parts = []
        for r in self.interim:
            parts.append("%d(interim)" % r.status)
        for r in self.responses:
            parts.append("%d" % r.status)
        s = "responses=[%s]" % ",".join(parts)
        s += " closed" if self.closed else " open"
        if self.reset:
            s += "(reset)"
        if self.malformed:
            s += " malformed=%s" % self.malformed
        if self.leftover:
            s += " leftover=%r" % self.leftover[:30]
        return s


def request_method(payload):
    sp = payload.find(b" ")
    return payload[:sp].decode("latin-1") if 0 < sp < 32 else "GET"


class Conn:
    def __init__(self, addr, timeout):
        self.timeout = timeout
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.res = Result()
        self.total = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            # The server may refuse a large request before reading it all;
            # its response can still be waiting in our receive buffer.
            self.res.send_error = type(e).__name__
        except socket.timeout:
            self.res.send_error = "send timeout"

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            self.res.timed_out = True
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            self.res.timed_out = True
            return False
        except ConnectionResetError:
            self.res.closed = True
            self.res.reset = True
            return False
        if not data:
            self.res.closed = True
            return False
        self.total += len(data)
        if self.total > MAX_READ:
            self.res.malformed = "more than %d bytes" % MAX_READ
            return False
        self.buf += data
        return True

    def read_responses(self, methods, wait):
        """Reads until len(methods) final responses arrived, the connection
        closed, or `wait` seconds passed."""
        deadline = time.monotonic() + wait
        want = len(self.res.responses) + len(methods)
        methods = list(methods)
        while len(self.res.responses) < want:
            try:
                while self.buf:
                    got = parse_one(self.buf, methods[0] if methods else "GET")
                    if got is None:
                        break
                    resp, used = got
                    self.buf = self.buf[used:]
                    if 100 <= resp.status < 200:
                        self.res.interim.append(resp)
                    else:
                        self.res.responses.append(resp)
                        if methods:
                            methods.pop(0)
                        if len(self.res.responses) >= want:
                            break
            except Malformed as e:
                self.res.malformed = str(e)
                return
            if len(self.res.responses) >= want:
                break
            if not self._recv(deadline):
                break
        self.res.leftover = self.buf

    def wait_close(self, wait):
        """Waits up to `wait` seconds for EOF; extra bytes are kept as
        leftover (an unexpected extra response)."""
        deadline = time.monotonic() + wait
        while not self.res.closed:
            if not self._recv(deadline):
                break
        self.res.leftover = self.buf


# --------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------


class Case:
    def __init__(self, cid, level, ref, steps, check, methods=None, close_wait=None):
        self.id = cid
        self.level = level
        self.ref = ref
        # steps: list of byte strings, each sent after the previous one's
        # responses were read; a step may be (bytes, n_responses).
        self.steps = steps
        self.check = check
        self.methods = methods
        self.close_wait = close_wait


def run_case(case, addr, timeout):
    conn = Conn(addr, timeout)
    try:
        for i, step in enumerate(case.steps):
            if isinstance(step, tuple):
                payload, n, methods = step
            else:
                payload, n, methods = step, 1, None
            if conn.res.closed:
                break
            if payload:
                conn.send(payload)
            if methods is None:
                methods = [request_method(payload)] * n
            conn.read_responses(methods[:n], timeout)
        cw = case.close_wait if case.close_wait is not None else min(timeout, 1.0)
        if not conn.res.closed and cw > 0:
            conn.wait_close(cw)
    finally:
        conn.close()
    return case.check(conn.res)


# ---- building blocks --------------------------------------------------------

H = None  # the Host value, set in main()


def req(s):
    """A request from a template: {H} is the Host value, \\n stays as
    written (use \\r\\n for CRLF)."""
    return s.replace("{H}", H).encode("latin-1")


def ok(detail=""):
    return ("PASS", detail)


def fail(detail):
    return ("FAIL", detail)


def common_response_checks(res, http10=False):
    """RFC 9110 §6.6.1: an origin server with a clock MUST send Date.
    RFC 9112 §6.1: no Transfer-Encoding in a response to HTTP/1.0.
    RFC 9112 §6.3: every response here is length-delimited."""
    for r in res.responses:
        if not r.has("date"):
            return "response %d without Date" % r.status
        if r.status >= 200 and r.status not in (204, 304):
            if not r.has("content-length") and not r.has("transfer-encoding"):
                return "response %d without Content-Length or chunked" % r.status
        if http10 and r.has("transfer-encoding"):
            return "Transfer-Encoding in a response to HTTP/1.0"
        if http10 and not r.version.startswith("HTTP/1."):
            return "status line version %s" % r.version
    return None


def expect_reject(statuses=(400,), silent_close_ok=False, http10=False):
    """The server answers with one of `statuses` and closes the connection,
    and nothing after the rejected request is processed (RFC 9112 §6.3:
    "respond with the 400 (Bad Request) status code and then close the
    connection"; the same for every error that leaves framing unknown)."""

    def check(res):
        if res.malformed:
            return fail(res.describe())
        r = res.first
        if r is None:
            if res.closed and silent_close_ok:
                return ok("closed without response " + res.describe())
            return fail("no response: " + res.describe())
        if r.status not in statuses:
            return fail("status %d, want %s: %s" % (r.status, statuses, res.describe()))
        if len(res.responses) > 1 or res.leftover:
            return fail("extra response after the rejection: " + res.describe())
        if not res.closed:
            return fail("connection kept open after %d" % r.status)
        bad = common_response_checks(res, http10)
        if bad:
            return fail(bad)
        return ok("%d + close" % r.status)

    return check


def expect_echo(body=b"", keep_alive=True, http10=False, head=False, interim_ok=True):
    """200 with the request body echoed (RFC 9110 §9.3; the echo semantics
    of this server), framed by Content-Length (RFC 9112 §6.3), and the
    connection kept (RFC 9112 §9.3) unless `keep_alive` is False, in which
    case it must be closed after the response."""

    def check(res):
        if res.malformed:
            return fail(res.describe())
        r = res.first
        if r is None:
            return fail("no response: " + res.describe())
        if r.status != 200:
            return fail("status %d, want 200: %s" % (r.status, res.describe()))
        if not interim_ok and res.interim:
            return fail("interim %d sent" % res.interim[0].status)
        if head:
            if r.body:
                return fail("HEAD response with a body")
            if r.header("content-length") != str(len(body)):
                return fail("HEAD Content-Length %r, want %d" % (r.header("content-length"), len(body)))
        else:
            if r.body != body:
                return fail("echoed %r, want %r" % (r.body[:60], body[:60]))
            if r.header("content-length") != str(len(body)):
                return fail("Content-Length %r, want %d" % (r.header("content-length"), len(body)))
        bad = common_response_checks(res, http10)
        if bad:
            return fail(bad)
        if http10 and r.version not in ("HTTP/1.0", "HTTP/1.1"):
            return fail("version %s" % r.version)
        if keep_alive is True:
            if len(res.responses) < 2:
                return fail("no answer to the follow-up request on the same connection: " + res.describe())
            f = res.responses[1]
            if f.status != 200 or f.body != b"":
                return fail("follow-up got %d %r (framing desync?)" % (f.status, f.body[:30]))
        elif keep_alive is False:
            if len(res.responses) > 1 or res.leftover:
                return fail("response after a closing request: " + res.describe())
            if not res.closed:
                return fail("connection not closed")
            if r.header("connection") is None or "close" not in str(r.header("connection")).lower():
                if not http10:
                    return fail("no Connection: close on the last response")
        return ok("200 echo%s" % ("" if keep_alive is None else (" + keep-alive" if keep_alive else " + close")))

    return check


def expect_no_success(res):
    """An incomplete message must not be processed (RFC 9112 §6.3, §8):
    no 2xx; waiting (timeout), closing, or 400 are all fine."""
    if res.malformed:
        return fail(res.describe())
    r = res.first
    if r is None:
        return ok("no response (" + ("closed" if res.closed else "waiting") + ")")
    if r.status in (400, 408):
        return ok("%d" % r.status)
    return fail("status %d for an incomplete message" % r.status)


def expect_not_101(res):
    """RFC 9110 §7.8: the server switches protocols only when it supports
    the requested one and the request is a valid upgrade; this echo server
    never does."""
    if res.malformed:
        return fail(res.describe())
    r = res.first
    if res.interim and any(i.status == 101 for i in res.interim):
        return fail("101 sent")
    if r is None:
        return fail("no response: " + res.describe())
    if r.status == 101:
        return fail("101 sent")
    return ok("%d" % r.status)


FOLLOW = "GET /follow-up HTTP/1.1\r\nHost: {H}\r\n\r\n"


def echo_case(cid, level, ref, payload, body=b"", **kw):
    """A request that must be answered 200 + echo, then a follow-up GET on
    the same connection (unless keep_alive is False)."""
    keep = kw.get("keep_alive", True)
    method = request_method(payload)
    steps = [(payload, 1, [method])]
    if keep is True:
        steps.append((req(FOLLOW), 1, ["GET"]))
    return Case(cid, level, ref, steps, expect_echo(body, **kw), close_wait=0 if keep else None)


def reject_case(cid, level, ref, payload, statuses=(400,), **kw):
    # A follow-up request is sent in the same write: if the server kept
    # reading after the error, it would answer it.
    return Case(cid, level, ref, [(payload + req(FOLLOW), 1, None)], expect_reject(statuses, **kw))


def smuggle_case(cid, level, ref, payload, statuses=(400,)):
    """An ambiguous-framing request: rejected and closed, with no second
    response (the embedded request must never run)."""
    return Case(cid, level, ref, [(payload, 1, None), (req(FOLLOW), 1, ["GET"])], expect_reject(statuses))


def build_cases():
    C = []
    a = C.append
    G = "GET / HTTP/1.1\r\nHost: {H}\r\n"
    P = "POST / HTTP/1.1\r\nHost: {H}\r\n"

    # ---- baseline and echo semantics --------------------------------------
    a(echo_case("BASELINE-GET", MUST, "RFC 9110 §9.3.1", req(G + "\r\n")))
    a(echo_case("ANY-PATH", MUST, "RFC 9110 §9.3.1 (echo: any path)", req("GET /a/b?c=d HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("ANY-METHOD-DELETE", MUST, "RFC 9110 §9.3.5 (echo: any method)", req("DELETE /x HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("ANY-METHOD-UNKNOWN", MUST, "RFC 9110 §9.1 (echo: any method)", req("FOOBAR / HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("OPTIONS-STAR", MUST, "RFC 9112 §3.2.4", req("OPTIONS * HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("ABSOLUTE-FORM", MUST, "RFC 9112 §3.2.2: a server MUST accept absolute-form",
                req("GET http://{H}/ HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("HTTP12-AS-11", MUST, "RFC 9112 §2.3 / RFC 9110 §2.5: 1.x minor > 1 is HTTP/1.1",
                req("GET / HTTP/1.2\r\nHost: {H}\r\n\r\n")))
    a(echo_case("POST-CL-BODY", MUST, "RFC 9112 §6.2", req(P + "Content-Length: 5\r\n\r\nhello"), b"hello"))
    a(echo_case("POST-CL-ZERO", MUST, "RFC 9112 §6.2", req(P + "Content-Length: 0\r\n\r\n")))
    a(echo_case("POST-NO-BODY", MUST, "RFC 9112 §6.3 (7): no CL, no TE: length 0", req(P + "\r\n")))
    a(echo_case("GET-CL-BODY", MUST, "RFC 9110 §9.3.1 / RFC 9112 §6.3: body framed and consumed",
                req(G + "Content-Length: 5\r\n\r\nhello"), b"hello"))
    a(echo_case("OPTIONS-CL-BODY", MUST, "RFC 9110 §9.3.7 / RFC 9112 §6.3", req("OPTIONS / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello"), b"hello"))
    a(echo_case("CHUNKED-BODY", MUST, "RFC 9112 §7.1", req(P + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), b"hello"))
    a(echo_case("CHUNKED-MULTI", MUST, "RFC 9112 §7.1", req(P + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"), b"hello world"))
    a(echo_case("CHUNKED-EMPTY", MUST, "RFC 9112 §7.1", req(P + "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")))
    a(echo_case("CHUNKED-HEX-UPPER", MUST, "RFC 9112 §7.1: chunk-size = 1*HEXDIG", req(P + "Transfer-Encoding: chunked\r\n\r\nA\r\nhelloworld\r\n0\r\n\r\n"), b"helloworld"))
    a(echo_case("CHUNKED-HEX-LOWER-LONG", MUST, "RFC 9112 §7.1", req(P + "Transfer-Encoding: chunked\r\n\r\n000b\r\nhello world\r\n0\r\n\r\n"), b"hello world"))
    a(echo_case("CHUNKED-TE-CASE", MUST, "RFC 9112 §7: coding names are case-insensitive", req(P + "Transfer-Encoding: Chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"), b"hello"))
    a(echo_case("CHUNK-EXTENSION", MUST, "RFC 9112 §7.1.1: unknown extensions MUST be ignored", req(P + "Transfer-Encoding: chunked\r\n\r\n5;ext=value\r\nhello\r\n0\r\n\r\n"), b"hello"))
    a(echo_case("CHUNK-EXT-QUOTED", MUST, "RFC 9112 §7.1.1: chunk-ext-val = token / quoted-string", req(P + "Transfer-Encoding: chunked\r\n\r\n5 ; a=\"x;y\" ; b\r\nhello\r\n0\r\n\r\n"), b"hello"))
    a(echo_case("CHUNKED-TRAILER", MUST, "RFC 9112 §7.1.2", req(P + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum: abc\r\n\r\n"), b"hello"))
    for name in ("Content-Length: 50", "Transfer-Encoding: chunked", "Host: evil.example", "Content-Type: text/evil"):
        a(echo_case("TRAILER-" + name.split(":")[0].upper(), SHOULD,
                    "RFC 9110 §6.5.1: framing fields in trailers are not used for framing",
                    req(P + "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n" + name + "\r\n\r\n"), b"hello"))
    a(echo_case("CL-OWS", MUST, "RFC 9110 §5.5: OWS around a field value is not part of it", req(P + "Content-Length:  5 \r\n\r\nhello"), b"hello"))
    a(echo_case("CONTENT-UNDERSCORE-NAME", MUST, "RFC 9110 §5.1: Content_Length is another field, not Content-Length",
                req(P + "Content-Length: 11\r\nContent_Length: 99\r\n\r\nhello world"), b"hello world"))
    a(echo_case("RANGE-ON-POST", MUST, "RFC 9110 §14.2: Range is ignored for POST", req(P + "Content-Length: 5\r\nRange: bytes=0-1\r\n\r\nhello"), b"hello"))
    a(echo_case("BINARY-BODY", MUST, "RFC 9112 §6: content is octets", req(P + "Content-Length: 6\r\n\r\n") + b"\x00\xff\r\n\x01\x80", b"\x00\xff\r\n\x01\x80"))
    a(echo_case("LONG-TARGET-OK", SHOULD, "RFC 9112 §3: SHOULD accept request-lines of 8000 octets",
                req("GET /" + "a" * 7900 + " HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(echo_case("HEAD", MUST, "RFC 9110 §9.3.2: HEAD gets the head only", req("HEAD / HTTP/1.1\r\nHost: {H}\r\n\r\n"), head=True))
    a(echo_case("HEAD-CL-BODY", MUST, "RFC 9110 §9.3.2 / RFC 9112 §6.3: the request body is still consumed",
                req("HEAD / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 5\r\n\r\nhello"), b"hello", head=True))
    a(echo_case("CONNECTION-CLOSE", MUST, "RFC 9112 §9.6: close after the response to Connection: close",
                req(G + "Connection: close\r\n\r\n"), keep_alive=False))
    a(echo_case("HTTP10-CLOSE", MUST, "RFC 9112 §9.3: HTTP/1.0 without keep-alive is not persistent",
                req("GET / HTTP/1.0\r\nHost: {H}\r\n\r\n"), keep_alive=False, http10=True))
    a(echo_case("HTTP10-NO-HOST", MUST, "RFC 9112 §3.2: Host is required of HTTP/1.1 only",
                req("GET / HTTP/1.0\r\n\r\n"), keep_alive=False, http10=True))
    a(echo_case("HTTP10-POST", MUST, "RFC 9112 §6.2", req("POST / HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello"), b"hello", keep_alive=False, http10=True))
    a(echo_case("HTTP10-HEAD", MUST, "RFC 9110 §9.3.2", req("HEAD / HTTP/1.0\r\n\r\n"), keep_alive=False, http10=True, head=True))
    a(echo_case("HTTP10-NO-100", MUST, "RFC 9110 §10.1.1: no 100 to an HTTP/1.0 client",
                req("POST / HTTP/1.0\r\nHost: {H}\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello"), b"hello",
                keep_alive=False, http10=True, interim_ok=False))
    a(Case("HTTP10-KEEP-ALIVE", MUST, "RFC 9112 §9.3 / RFC 2068 §19.7.1: keep-alive honoured",
           [(req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 1, ["GET"]),
            (req("POST / HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi"), 1, ["POST"])],
           lambda res: (fail(res.describe()) if len(res.responses) != 2 or res.responses[1].body != b"hi"
                        or "keep-alive" not in str(res.first.header("connection")).lower()
                        or res.first.has("transfer-encoding")
                        else ok("2 responses, Connection: keep-alive")), close_wait=0))
    a(Case("EXPECT-100", MUST, "RFC 9110 §10.1.1: 100 then the final response",
           [(req(P + "Content-Length: 5\r\nExpect: 100-continue\r\n\r\n"), 0, []),
            (b"", 0, []), (b"hello", 1, ["POST"]), (req(FOLLOW), 1, ["GET"])],
           lambda res: (ok("100 then 200") if res.interim and res.interim[0].status == 100 and len(res.responses) == 2
                        and res.first.body == b"hello" else fail(res.describe())), close_wait=0))
    a(echo_case("EXPECT-100-BODY-AT-ONCE", MUST, "RFC 9110 §10.1.1: body sent without waiting",
                req(P + "Content-Length: 5\r\nExpect: 100-continue\r\n\r\nhello"), b"hello"))
    a(reject_case("EXPECT-UNKNOWN", SHOULD, "RFC 9110 §10.1.1: MAY answer 417 to an unknown expectation",
                  req(G + "Expect: 200-ok\r\n\r\n"), (417,)))

    # pipelining: responses in order, bodies framed (RFC 9112 §9.3.2)
    pipe = req(P + "Content-Length: 3\r\n\r\nabc") + req("HEAD / HTTP/1.1\r\nHost: {H}\r\n\r\n") + \
        req(P + "Transfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n") + req(G + "\r\n")

    def check_pipe(res):
        got = [(r.status, r.body) for r in res.responses]
        want = [(200, b"abc"), (200, b""), (200, b"de"), (200, b"")]
        if got != want or res.closed:
            return fail("got %r %s" % (got, res.describe()))
        if res.responses[1].header("content-length") != "0":
            return fail("HEAD Content-Length %r" % res.responses[1].header("content-length"))
        return ok("4 responses in order")
    a(Case("PIPELINE-4", MUST, "RFC 9112 §9.3.2", [(pipe, 4, ["POST", "HEAD", "POST", "GET"])], check_pipe, close_wait=0.2))

    # upgrades are never accepted by this server
    ws = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    a(Case("UPGRADE-POST", MUST, "RFC 6455 §4.1 / RFC 9110 §7.8", [req(P + "Connection: Upgrade\r\nUpgrade: websocket\r\n" + ws + "\r\n")], expect_not_101))
    a(Case("UPGRADE-NO-CONNECTION", MUST, "RFC 9110 §7.8", [req(G + "Upgrade: websocket\r\n" + ws + "\r\n")], expect_not_101))
    a(Case("UPGRADE-UNKNOWN", MUST, "RFC 9110 §7.8", [req(G + "Connection: Upgrade\r\nUpgrade: totally-made-up/1.0\r\n\r\n")], expect_not_101))
    a(Case("UPGRADE-BAD-WS-VERSION", MUST, "RFC 6455 §4.4", [req(G + "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 99\r\n\r\n")], expect_not_101))
    a(Case("UPGRADE-HTTP10", MUST, "RFC 9110 §7.8: Upgrade in HTTP/1.0 is ignored", [req("GET / HTTP/1.0\r\nHost: {H}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" + ws + "\r\n")], expect_not_101))

    # ---- request line ----------------------------------------------------------
    # RFC 9112 §2.2: bare LF MAY be accepted; this server rejects it (no
    # parser disagreement with CRLF-only intermediaries).
    a(reject_case("BARE-LF-REQUEST-LINE", SHOULD, "RFC 9112 §2.2", req("GET / HTTP/1.1\nHost: {H}\r\n\r\n")))
    a(reject_case("BARE-LF-HEADER", SHOULD, "RFC 9112 §2.2", req(G + "X-Test: value\n\r\n")))
    a(reject_case("BARE-CR-REQUEST-LINE", MUST, "RFC 9112 §2.2: bare CR MUST be rejected or replaced", req("GET / HTTP/1.1\rHost: {H}\r\n\r\n")))
    a(reject_case("MULTI-SP-REQUEST-LINE", SHOULD, "RFC 9112 §3: SHOULD reject, MAY parse on whitespace", req("GET  / HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("TAB-REQUEST-LINE", SHOULD, "RFC 9112 §3", req("GET\t/ HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("MISSING-TARGET", MUST, "RFC 9112 §3", req("GET HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("SPACE-IN-TARGET", MUST, "RFC 9112 §3.2", req("GET /pa th HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("FRAGMENT-IN-TARGET", SHOULD, "RFC 9112 §3.2: origin-form has no fragment", req("GET /path#frag HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("NUL-IN-TARGET", MUST, "RFC 9112 §3.2 / RFC 3986", req("GET /\x00test HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("NON-ASCII-TARGET", MUST, "RFC 9112 §3.2 / RFC 3986: octets > 0x7F must be percent-encoded", b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: " + H.encode() + b"\r\n\r\n"))
    a(reject_case("ASTERISK-WITH-GET", MUST, "RFC 9112 §3.2.4: * only for OPTIONS", req("GET * HTTP/1.1\r\nHost: {H}\r\n\r\n")))
    # RFC 9110 §9.3.6: a 2xx to CONNECT switches to tunnel mode and MUST
    # NOT carry Content-Length; a server without tunnels answers 501.
    a(reject_case("CONNECT-ORIGIN", MUST, "RFC 9110 §9.3.6 / §9.1",
                  req("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), (400, 405, 501)))
    a(reject_case("VERSION-INVALID-MAJOR", MUST, "RFC 9110 §6.2 / §15.6.6", req("GET / HTTP/9.9\r\nHost: {H}\r\n\r\n"), (400, 505)))
    a(reject_case("VERSION-MISSING-MINOR", MUST, "RFC 9112 §2.3", req("GET / HTTP/1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("VERSION-LEADING-ZEROS", MUST, "RFC 9112 §2.3", req("GET / HTTP/01.01\r\nHost: {H}\r\n\r\n")))
    a(reject_case("VERSION-WHITESPACE", MUST, "RFC 9112 §2.3", req("GET / HTTP/ 1.1\r\nHost: {H}\r\n\r\n")))
    a(reject_case("VERSION-CASE", MUST, "RFC 9112 §2.3: HTTP-name is case-sensitive", req("GET / http/1.1\r\nHost: {H}\r\n\r\n")))
    a(Case("HTTP09", MUST, "RFC 9112 §2.3: no HTTP/0.9", [req("GET /\r\n")],
           lambda res: fail("2xx to HTTP/0.9") if res.first and res.first.status < 300 else ok(res.describe())))
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before
    # the request-line.
    a(echo_case("LEADING-CRLF", SHOULD, "RFC 9112 §2.2", req("\r\n" + G + "\r\n")))
    a(reject_case("WHITESPACE-BEFORE-HEADERS", MUST, "RFC 9112 §2.2: reject, or skip the line", req("GET / HTTP/1.1\r\n \r\nHost: {H}\r\n\r\n")))
    a(Case("WHITESPACE-ONLY-LINE", MUST, "RFC 9112 §3", [req("   \r\n\r\n")], expect_no_success))
    a(Case("BINARY-GARBAGE", MUST, "RFC 9112 §3", [bytes((i * 73 + 41) & 0xFF for i in range(256))], expect_no_success))
    a(Case("EMPTY-CONNECTION", MUST, "RFC 9112 §9.5", [b""], expect_no_success, close_wait=0))
    a(Case("INCOMPLETE-HEAD", MUST, "RFC 9112 §8", [req(G + "X-Test: value")], expect_no_success, close_wait=0))

    # ---- header fields ---------------------------------------------------------
    a(reject_case("OBS-FOLD", MUST, "RFC 9112 §5.2: reject with 400 or unfold", req(G + "X-Test: value\r\n continued\r\n\r\n")))
    a(reject_case("SP-BEFORE-COLON", MUST, "RFC 9112 §5.1: MUST reject with 400", req(G + "X-Test : value\r\n\r\n")))
    a(reject_case("EMPTY-HEADER-NAME", MUST, "RFC 9112 §5", req(G + ": empty-name\r\n\r\n")))
    a(reject_case("HEADER-NO-COLON", MUST, "RFC 9112 §5", req(G + "NoColonHere\r\n\r\n")))
    a(reject_case("INVALID-HEADER-NAME", MUST, "RFC 9110 §5.1: field-name = token", req(G + "Bad[Name: value\r\n\r\n")))
    a(reject_case("TAB-IN-HEADER-NAME", MUST, "RFC 9110 §5.1", req(P + "Content-Length: 11\r\nContent\tLength: 99\r\n\r\nhello world")))
    a(reject_case("NON-ASCII-HEADER-NAME", MUST, "RFC 9110 §5.1", b"GET / HTTP/1.1\r\nHost: " + H.encode() + b"\r\nX-T\xc3\xabst: value\r\n\r\n"))
    a(reject_case("CTL-IN-HEADER-VALUE", MUST, "RFC 9110 §5.5: CTLs are not field-vchar", req(G + "X-Test: abc\x07\x08\x0bdef\r\n\r\n")))
    a(reject_case("NUL-IN-HEADER-VALUE", MUST, "RFC 9110 §5.5: NUL MUST be rejected or replaced", req(G + "Cookie: foo=\x00bar\r\n\r\n")))
    a(reject_case("BARE-CR-HEADER-VALUE", MUST, "RFC 9112 §2.2", req(P + "Content-Length: 5\r\nX-Test: val\rue\r\n\r\nhello")))
    a(reject_case("MISSING-HOST", MUST, "RFC 9112 §3.2: 400 to HTTP/1.1 without Host", req("GET / HTTP/1.1\r\n\r\n")))
    a(reject_case("DUPLICATE-HOST", MUST, "RFC 9112 §3.2: 400 to more than one Host", req(G + "Host: other.example.com\r\n\r\n")))
    a(reject_case("DUPLICATE-HOST-SAME", MUST, "RFC 9112 §3.2", req(G + "Host: {H}\r\n\r\n")))
    a(reject_case("HOST-LIST", MUST, "RFC 9112 §3.2: a list is not a valid Host", req("GET / HTTP/1.1\r\nHost: {H}, other.example.com\r\n\r\n")))
    a(reject_case("HOST-USERINFO", MUST, "RFC 9112 §3.2 / RFC 9110 §4.2.4: no userinfo", req("GET / HTTP/1.1\r\nHost: user@{H}\r\n\r\n")))
    a(reject_case("HOST-PATH", MUST, "RFC 9112 §3.2", req("GET / HTTP/1.1\r\nHost: {H}/path\r\n\r\n")))
    # RFC 9110 §4.2.1: an http URI with an empty host is invalid, and the
    # target URI of an origin-form request is rebuilt from Host (RFC 9112
    # §3.3).
    a(reject_case("HOST-EMPTY", MUST, "RFC 9110 §4.2.1 / RFC 9112 §3.3", req("GET / HTTP/1.1\r\nHost: \r\n\r\n")))
    # RFC 9110 §5.3: a singleton field sent twice is an error the recipient
    # may reject; this server does for Content-Type (differing media types
    # are a known confusion vector).
    a(reject_case("DUPLICATE-CONTENT-TYPE", SHOULD, "RFC 9110 §5.3 / §8.3",
                  req(P + "Content-Length: 5\r\nContent-Type: text/plain\r\nContent-Type: text/html\r\n\r\nhello")))
    a(reject_case("LONG-TARGET", MUST, "RFC 9112 §3: 414 (or 400/431) past the limit",
                  req("GET /" + "A" * 100000 + " HTTP/1.1\r\nHost: {H}\r\n\r\n"), (400, 414, 431), silent_close_ok=True))
    a(reject_case("LONG-METHOD", MUST, "RFC 9112 §3 / RFC 9110 §9.1: not a request line",
                  req("A" * 100000 + " / HTTP/1.1\r\nHost: {H}\r\n\r\n"), (400, 501), silent_close_ok=True))
    a(reject_case("LONG-HEADER-VALUE", MUST, "RFC 6585 §5: 431",
                  req(G + "X-Big: " + "B" * 100000 + "\r\n\r\n"), (400, 431), silent_close_ok=True))
    a(reject_case("LONG-HEADER-NAME", MUST, "RFC 6585 §5: 431",
                  req(G + "A" * 100000 + ": v\r\n\r\n"), (400, 431), silent_close_ok=True))
    a(reject_case("MANY-HEADERS", MUST, "RFC 6585 §5: 431",
                  req(G + "".join("X-H-%d: value\r\n" % i for i in range(10000)) + "\r\n"), (400, 431), silent_close_ok=True))

    # ---- Content-Length --------------------------------------------------------
    for cid, v, body in (("CL-NON-NUMERIC", "abc", ""), ("CL-PLUS", "+5", "hello"), ("CL-NEGATIVE", "-1", ""),
                         ("CL-NEGATIVE-ZERO", "-0", ""), ("CL-HEX", "0x5", "hello"), ("CL-OCTAL", "0o5", "hello"),
                         ("CL-UNDERSCORE", "1_0", "helloworld"), ("CL-INTERNAL-SPACE", "1 0", "hello12345"),
                         ("CL-COMMA-DIFFERENT", "5, 10", "hello"), ("CL-OVERFLOW", "99999999999999999999", ""),
                         ("CL-EMPTY", "", "")):
        a(reject_case(cid, MUST, "RFC 9110 §8.6 / RFC 9112 §6.3 (5): invalid Content-Length is 400", req(P + "Content-Length: " + v + "\r\n\r\n" + body)))
    # RFC 9110 §8.6: a list of identical values MAY be accepted; this server
    # rejects any list (one parser, one meaning).
    a(reject_case("CL-COMMA-SAME", SHOULD, "RFC 9110 §8.6", req(P + "Content-Length: 5, 5\r\n\r\nhello")))
    # Leading zeros are 1*DIGIT, but "0200" is octal 128 to some parsers:
    # a strict server refuses the ambiguity.
    a(reject_case("CL-LEADING-ZEROS", SHOULD, "RFC 9110 §8.6 (strict choice)", req(P + "Content-Length: 005\r\n\r\nhello")))
    a(reject_case("CL-DOUBLE-ZERO", SHOULD, "RFC 9110 §8.6 (strict choice)", req(P + "Content-Length: 00\r\n\r\n")))
    a(reject_case("CL-LEADING-ZEROS-OCTAL", SHOULD, "RFC 9110 §8.6 (strict choice)", req(P + "Content-Length: 0200\r\n\r\n" + "A" * 200)))
    a(reject_case("DUPLICATE-CL", MUST, "RFC 9112 §6.3 (5)", req(P + "Content-Length: 5\r\nContent-Length: 10\r\n\r\nhelloworld")))
    a(reject_case("SP-BEFORE-COLON-CL", MUST, "RFC 9112 §5.1", req(P + "Content-Length: 11\r\nContent-Length : 5\r\n\r\nhello world")))
    a(reject_case("BODY-TOO-LARGE", MUST, "RFC 9110 §15.5.14: 413", req(P + "Content-Length: 999999999999\r\n\r\n"), (413,)))
    a(Case("CL-UNDERSEND", MUST, "RFC 9112 §6.3: wait for the whole body", [req(P + "Content-Length: 10\r\n\r\nhello")], expect_no_success, close_wait=0))

    # ---- Transfer-Encoding -----------------------------------------------------
    # RFC 9112 §6.1: a transfer coding the server does not understand: 501
    # (SHOULD); §6.3 (4): chunked not final: 400 and close (MUST).
    a(reject_case("TE-UNKNOWN", MUST, "RFC 9112 §6.1 / §6.3 (4)", req(P + "Transfer-Encoding: gzip\r\n\r\n"), (400, 501)))
    a(reject_case("TE-NOT-FINAL-CHUNKED", MUST, "RFC 9112 §6.3 (4): MUST 400", req(P + "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n")))
    a(reject_case("TE-CHUNKED-TWICE", MUST, "RFC 9112 §6.1: chunked at most once", req(P + "Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n")))
    a(reject_case("TE-EMPTY", MUST, "RFC 9112 §6.1", req(P + "Transfer-Encoding: \r\n\r\n")))
    a(reject_case("TE-HTTP10", MUST, "RFC 9112 §6.1: HTTP/1.0 with TE: faulty framing", req("POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), http10=True))
    a(reject_case("TE-PARAMS", SHOULD, "RFC 9112 §7: chunked has no parameters", req(P + "Transfer-Encoding: chunked;ext=val\r\n\r\n0\r\n\r\n"), (400, 501)))
    a(reject_case("TE-IDENTITY", MUST, "RFC 9112 §7: identity is no longer a coding", req(P + "Transfer-Encoding: identity\r\n\r\n"), (400, 501)))
    # Transfer_Encoding is another field name (RFC 9110 §5.1): no body.
    a(echo_case("TE-UNDERSCORE-NAME", MUST, "RFC 9110 §5.1", req(P + "Transfer_Encoding: chunked\r\n\r\n")))

    # ---- both framings, obfuscated TE: request smuggling (RFC 9112 §6.1, §6.3)
    te_cl = [
        ("CL-TE-BOTH", "Content-Length: 23\r\nTransfer-Encoding: chunked", "D\r\nhello-bananas\r\n0\r\n\r\n"),
        ("TE-XCHUNKED", "Transfer-Encoding: xchunked\r\nContent-Length: 5", "hello"),
        ("TE-TRAILING-SPACE", "Transfer-Encoding: chunked \r\nContent-Length: 5", "hello"),
        ("TE-SP-BEFORE-COLON", "Transfer-Encoding : chunked\r\nContent-Length: 5", "hello"),
        ("TE-DOUBLE-CHUNKED-CL", "Transfer-Encoding: chunked, chunked\r\nContent-Length: 5", "hello"),
        ("TE-CASE-CL", "Transfer-Encoding: Chunked\r\nContent-Length: 5", "hello"),
        ("TE-HTTP10-CL", None, None),
        ("TE-EMPTY-CL", "Transfer-Encoding: \r\nContent-Length: 5", "hello"),
        ("TE-LEADING-COMMA", "Transfer-Encoding: , chunked\r\nContent-Length: 5", "hello"),
        ("TE-TRAILING-COMMA", "Transfer-Encoding: chunked,\r\nContent-Length: 5", "hello"),
        ("TE-DUPLICATE-HEADERS", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: 5", "hello"),
        ("TE-VTAB", "Transfer-Encoding: \x0bchunked\r\nContent-Length: 5", "hello"),
        ("TE-FORMFEED", "Transfer-Encoding: \x0cchunked\r\nContent-Length: 5", "hello"),
        ("TE-NUL", "Transfer-Encoding: chunked\x00\r\nContent-Length: 5", "hello"),
        ("TE-OBS-FOLD", "Transfer-Encoding:\r\n chunked\r\nContent-Length: 5", "hello"),
        ("TE-TAB-OWS", "Transfer-Encoding:\tchunked\r\nContent-Length: 5", "hello"),
        ("TE-IDENTITY-CL", "Transfer-Encoding: identity\r\nContent-Length: 5", "hello"),
        ("TE-UNDERSCORE-CL", "Transfer_Encoding: chunked\r\nContent-Length: 5", None),
    ]
    for cid, hdrs, body in te_cl:
        if cid == "TE-HTTP10-CL":
            a(reject_case(cid, MUST, "RFC 9112 §6.1", req("POST / HTTP/1.0\r\nHost: {H}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello"), http10=True))
        elif body is None:
            a(echo_case(cid, MUST, "RFC 9110 §5.1: only Content-Length frames this", req(P + hdrs + "\r\n\r\nhello"), b"hello"))
        else:
            a(reject_case(cid, MUST, "RFC 9112 §6.1 / §6.3 (3): both framings: reject and close", req(P + hdrs + "\r\n\r\n" + body), (400, 501)))

    # sequences: the ambiguous request, then a follow-up GET on the same
    # connection, or a request embedded in the body: one response only.
    smug = "GET / HTTP/1.1\r\nHost: {H}\r\n\r\n"
    emb = "0\r\n\r\n" + smug
    n = len(emb.replace("{H}", H))
    for cid, hdrs, body in (
        ("CLTE-CONN-CLOSE", "Content-Length: 5\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
        ("TECL-CONN-CLOSE", "Transfer-Encoding: chunked\r\nContent-Length: 5", "0\r\n\r\n"),
        ("CLTE-DESYNC", "Content-Length: 6\r\nTransfer-Encoding: chunked", "0\r\n\r\nX"),
        ("TECL-DESYNC", "Transfer-Encoding: chunked\r\nContent-Length: 30", "0\r\n\r\nX"),
        ("CLTE-PIPELINE", "Content-Length: 4\r\nTransfer-Encoding: chunked", "0\r\n\r\n"),
        ("CLTE-SMUGGLED-GET", "Content-Length: %d\r\nTransfer-Encoding: chunked" % n, emb),
        ("CLTE-SMUGGLED-HEAD", "Content-Length: %d\r\nTransfer-Encoding: chunked" % (n + 1), emb.replace("GET", "HEAD")),
        ("CLTE-SMUGGLED-CL-PLUS", "Content-Length: +%d\r\nTransfer-Encoding: chunked" % n, emb),
        ("CLTE-SMUGGLED-CL-ALPHA", "Content-Length: %dx\r\nTransfer-Encoding: chunked" % n, emb),
        ("CLTE-SMUGGLED-TE-FOLD", "Transfer-Encoding:\r\n chunked\r\nContent-Length: %d" % n, emb),
        ("CLTE-SMUGGLED-TE-SPACE", "Content-Length: %d\r\nTransfer-Encoding: chunked " % n, emb),
        ("CLTE-SMUGGLED-TE-COMMA", "Content-Length: %d\r\nTransfer-Encoding: , chunked" % n, emb),
        ("CLTE-SMUGGLED-TE-CASE", "Content-Length: %d\r\nTransfer-Encoding: Chunked" % n, emb),
        ("TETE-SMUGGLED-GET", "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\nContent-Length: %d" % n, emb),
        ("CLCL-SMUGGLED-GET", "Content-Length: 4\r\nContent-Length: %d" % (n - 5 + 4), "PING" + smug),
    ):
        a(smuggle_case("SMUG-" + cid, MUST, "RFC 9112 §6.1 / §6.3: reject and close", req(P + hdrs + "\r\n\r\n" + body)))
    inner = "GET / HTTP/1.1\r\nHost: {H}\r\nContent-Length: 7\r\n\r\n"
    ilen = len(inner.replace("{H}", H))
    hexlen = "%x" % ilen
    a(smuggle_case("SMUG-TECL-SMUGGLED-GET", MUST, "RFC 9112 §6.1",
                   req(P + "Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n%s\r\n%s\r\n0\r\n\r\n" % (len(hexlen) + 2, hexlen, inner))))
    # A body that is framed correctly leaves nothing behind: the bytes after
    # it are the next request (RFC 9112 §6.3).
    a(Case("CL0-THEN-NEXT", MUST, "RFC 9112 §6.3", [(req(P + "Content-Length: 0\r\n\r\n") + req(G + "\r\n"), 2, ["POST", "GET"])],
           lambda res: ok("2 responses") if [r.status for r in res.responses] == [200, 200] and not res.closed else fail(res.describe()),
           close_wait=0.2))

    # ---- chunked framing (RFC 9112 §7.1) ------------------------------------
    CH = P + "Transfer-Encoding: chunked\r\n\r\n"
    for cid, level, body in (
        ("CHUNK-BARE-SEMICOLON", MUST, "5;\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EXT-INVALID-TOKEN", MUST, "5;bad[=x\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EXT-NUL", MUST, "5;\x00ext\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EXT-BARE-CR", MUST, "5;a\rX\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EXT-BARE-LF", SHOULD, "5;\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EXT-UNTERMINATED-QUOTE", MUST, "5;a=\"x\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-UNDERSCORE", MUST, "1_0\r\nhello world!!!!!\r\n0\r\n\r\n"),
        ("CHUNK-HEX-PREFIX", MUST, "0x5\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-SIZE-PLUS", MUST, "+5\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-SIZE-TRAILING-SP", MUST, "5 \r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-SIZE-LEADING-SP", MUST, " 5\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-NEGATIVE", MUST, "-1\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-EMPTY-SIZE", MUST, "\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-SIZE-OVERFLOW", MUST, "10000000000000000\r\nhello\r\n0\r\n\r\n"),
        ("CHUNK-MISSING-CRLF", MUST, "5\r\nhello0\r\n\r\n"),
        ("CHUNK-SPILL", MUST, "5\r\nhello!!\r\n0\r\n\r\n"),
        ("CHUNK-LF-AFTER-DATA", SHOULD, "5\r\nhello\n0\r\n\r\n"),
        ("CHUNK-BARE-CR-SIZE", MUST, "5\rhello\r\n0\r\n\r\n"),
        ("CHUNK-LF-TRAILER-END", SHOULD, "5\r\nhello\r\n0\r\n\n"),
        ("CHUNK-TRAILER-OBS-FOLD", MUST, "5\r\nhello\r\n0\r\nX-A: b\r\n c\r\n\r\n"),
        ("CHUNK-TRAILER-NO-COLON", MUST, "5\r\nhello\r\n0\r\nbogus\r\n\r\n"),
    ):
        a(reject_case(cid, level, "RFC 9112 §7.1 / §7.1.1 / §2.2", req(CH + body)))
    a(Case("CHUNKED-NO-FINAL", MUST, "RFC 9112 §7.1: wait for the last chunk", [req(CH + "5\r\nhello\r\n")], expect_no_success, close_wait=0))

    return C


def main():
    global H
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("target", help="HOST:PORT of the echo server")
    ap.add_argument("--strict", action="store_true", help="SHOULD failures also fail the run")
    ap.add_argument("--only", help="run the cases whose id contains this")
    ap.add_argument("--timeout", type=float, default=2.0, help="seconds per read (default 2)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    host, sep, port = args.target.rpartition(":")
    if not sep or not port.isdigit():
        print("conformance.py: target must be HOST:PORT", file=sys.stderr)
        return 2
    addr = (host.strip("[]"), int(port))
    H = args.target
    try:
        socket.create_connection(addr, timeout=args.timeout).close()
    except OSError as e:
        print("conformance.py: cannot connect to %s: %s" % (args.target, e), file=sys.stderr)
        return 2

    cases = build_cases()
    ids = [c.id for c in cases]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        print("conformance.py: duplicate case ids %s" % sorted(dup), file=sys.stderr)
        return 2
    if args.only:
        cases = [c for c in cases if args.only in c.id]
    counts = {}
    failed_must = []
    failed_should = []
    for c in cases:
        try:
            verdict, detail = run_case(c, addr, args.timeout)
        except OSError as e:
            verdict, detail = "FAIL", "socket error: %s" % e
        counts[(verdict, c.level)] = counts.get((verdict, c.level), 0) + 1
        if verdict == "FAIL":
            (failed_must if c.level == MUST else failed_should).append(c.id)
        line = "%-4s %-6s %-32s %s" % (verdict, c.level, c.id, detail)
        if args.verbose or verdict != "PASS":
            line += "  [%s]" % c.ref
        print(line, flush=True)
    total = len(cases)
    passed = sum(v for (k, _), v in counts.items() if k == "PASS")
    print("summary: %d cases, %d passed, %d MUST failed, %d SHOULD failed"
          % (total, passed, len(failed_must), len(failed_should)))
    if failed_must:
        print("MUST failures: " + " ".join(failed_must))
    if failed_should:
        print("SHOULD failures: " + " ".join(failed_should))
    if failed_must or (args.strict and failed_should):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
