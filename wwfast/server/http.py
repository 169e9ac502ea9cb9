"""The HTTP transport: a connection, the request parser's callbacks, and the pump that sends replies.

What to answer is decided elsewhere (wwfast.server.provision: request in, reply out), and the
listening socket and the limits sweep are wwfast.server.http_server's; this module only moves
one connection's bytes. One asyncio Protocol per connection reads and parses requests (httptools);
responses go out on a dup() of the connection's socket, driven by add_writer:
headers with send(MSG_MORE), file bodies with os.sendfile straight from the page
cache (uvloop has no loop.sendfile, uvloop#228). Memory per connection is a few
small objects whatever the file size. `send_mode="mmap"` copies from an mmap
with send() instead; benchmarks/bench_http.py measures both.

Limits (header size, header time, idle time, send stall) are checked by
Connection.sweep, which the server calls for all connections every half second.
"""
import asyncio
import errno
import logging
import os
import socket
import time

import httptools

from wwfast.server.replies import REASONS, FileBody, text_reply

log = logging.getLogger("wwfast.serve")

SERVER = "wwfast"
PUMP_BUDGET = 16 << 20        # bytes one connection may send per loop wake-up (fairness)
MMAP_CHUNK = 4 << 20
# Unsent bytes a connection may queue in the kernel. Without a cap every socket's send buffer grows to
# tcp_wmem's maximum (4 MiB): a thousand nodes pulling images at once then hold GBs of socket memory,
# TCP memory pressure sets in machine-wide, receivers prune and drop, and unlucky connections stall for
# tens of seconds in RTO back-off (seen as a storm's tail). What is in flight is not capped by this.
NOTSENT_LOWAT = 512 << 10
MAX_QUEUED = 8                # pipelined requests buffered before we stop reading


class Limits:
    def __init__(self, header_bytes=16384, header_timeout=10.0, idle_timeout=75.0, stall_timeout=120.0,
                 linger=2.0, body_bytes=65536):
        self.header_bytes = header_bytes        # request line + headers
        self.body_bytes = body_bytes            # GET/HEAD need no body: refuse a client that streams one
        self.header_timeout = header_timeout    # first byte of a request to the end of its headers
        self.idle_timeout = idle_timeout        # keep-alive connection with nothing to do
        self.stall_timeout = stall_timeout      # a response that makes no progress (client not reading)
        self.linger = linger                    # after an error response, wait this long for the peer's EOF


class Request:
    __slots__ = ("method", "url", "headers", "keep_alive")

    def __init__(self, method, url, headers, keep_alive):
        self.method, self.url, self.headers, self.keep_alive = method, url, headers, keep_alive


class ParseAbort(Exception):
    """Raised from a parser callback to stop parsing a request we refuse."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code, self.message = code, message


class Connection(asyncio.Protocol):
    def __init__(self, server):
        self.server = server
        self.loop = server.loop
        self.transport = None
        self.wsock = None
        self.peer = ("", 0)
        self.parser = httptools.HttpRequestParser(self)
        self.queue = []
        self.out = []                 # bytes / FileBody items being sent, in order
        self.writing = False          # add_writer registered
        self.busy = False             # a response is being sent
        self.close_after = False
        self.closed = False
        self.draining = 0.0           # lingering close deadline (monotonic), 0 when not lingering
        self.eof = False
        self.paused = False
        self.sndbuf = None            # SO_SNDBUF we set (wwfast.server.send_budget), None: the kernel sizes it
        self.capped = False           # sndbuf is this connection's share of the budget (not the kernel's maximum)
        now = time.monotonic()
        self.last_activity = now
        self.request_started = 0.0
        self._url = []
        self._headers = {}
        self._header_bytes = 0
        self._body_bytes = 0

    # -- connection lifecycle ---------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        sock = transport.get_extra_info("socket")
        peer = transport.get_extra_info("peername") or ("", 0)
        host = peer[0]
        if host.startswith("::ffff:"):
            host = host[7:]
        self.peer = (host, peer[1])
        # Our own descriptor for the same socket: the transport keeps reading on its fd,
        # we write on this one with sendfile (asyncio refuses add_writer on a transport's fd).
        try:
            self.wsock = socket.socket(fileno=os.dup(sock.fileno()))
        except OSError as e:          # EMFILE: out of descriptors; drop this client, keep serving
            log.error("%s: cannot take the connection: %s", self.peer[0], e)
            self.closed = True
            transport.abort()
            return
        self.wsock.setblocking(False)
        if self.wsock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                self.wsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
            except OSError:       # kernels before 3.12; the send buffer's own limit applies
                pass
        self.server.connections.add(self)
        self.server.metrics.connections += 1

    def connection_lost(self, exc):
        if self.wsock is None:
            return
        self._teardown(complete=False)
        self.server.connections.discard(self)
        self.server.metrics.connections -= 1

    def eof_received(self):
        self.eof = True
        if not self.busy and not self.queue:
            self.close()
        return True           # half-closed: finish what we are sending, then close

    def close(self):
        """Close now (after any bytes already handed to the kernel)."""
        if not self.closed:
            self._teardown(complete=False)
            self.transport.close()

    def _teardown(self, complete):
        if self.closed:
            return
        self.closed = True
        if self.writing:
            self.loop.remove_writer(self.wsock.fileno())
            self.writing = False
        for item in self.out:
            if isinstance(item, FileBody):
                item.close(complete)
        self.out.clear()
        self.wsock.close()

    def _linger(self):
        """After an error: stop sending, let the peer read our answer, then close."""
        try:
            self.wsock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.draining = time.monotonic() + self.server.limits.linger

    # -- reading ------------------------------------------------------------------------
    def data_received(self, data):
        self.last_activity = time.monotonic()
        if self.draining or self.closed:
            return
        try:
            self.parser.feed_data(data)
        except ParseAbort as e:
            self._refuse(e.code, e.message)
        except httptools.HttpParserCallbackError as e:
            cause = e.__context__
            if isinstance(cause, ParseAbort):
                self._refuse(cause.code, cause.message)
            else:
                log.exception("request handling failed for %s", self.peer[0])
                self._refuse(500, "internal error")
        except httptools.HttpParserUpgrade:
            self._refuse(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as e:
            self._refuse(400, f"malformed request: {e}")

    def _refuse(self, code, message):
        """A request we could not parse: answer, count it, close (the stream is out of sync)."""
        log.warning("%s:%s: %d %s", self.peer[0], self.peer[1], code, message)
        self.request_started = 0.0
        self.queue.clear()
        if self.busy:                 # mid-response: the client cannot tell our answer apart
            self.close()
            return
        reply = text_reply(code, message, close=True)
        self._send(reply, "bad", head_only=False)

    def on_message_begin(self):
        self.request_started = time.monotonic()
        self._url = []
        self._headers = {}
        self._header_bytes = 0
        self._body_bytes = 0

    def _count(self, n):
        self._header_bytes += n
        if self._header_bytes > self.server.limits.header_bytes:
            raise ParseAbort(431, f"request headers larger than {self.server.limits.header_bytes} bytes")

    def on_url(self, url):
        self._count(len(url))
        self._url.append(url)

    def on_header(self, name, value):
        self._count(len(name) + len(value) + 4)
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self):
        self.request_started = 0.0
        self._body_bytes = 0

    def on_body(self, body):
        self._body_bytes += len(body)
        if self._body_bytes > self.server.limits.body_bytes:
            raise ParseAbort(413, f"request body larger than {self.server.limits.body_bytes} bytes")

    def on_message_complete(self):
        p = self.parser
        req = Request(p.get_method().decode("latin-1"), b"".join(self._url), self._headers,
                      p.should_keep_alive())
        self.queue.append(req)
        if len(self.queue) >= MAX_QUEUED and not self.paused:
            self.transport.pause_reading()
            self.paused = True
        if not self.busy:
            self._next()

    # -- answering --------------------------------------------------------------------------
    def _next(self):
        while self.queue and not self.busy and not self.closed and not self.draining:
            req = self.queue.pop(0)
            if self.paused and len(self.queue) < MAX_QUEUED // 2 and not self.closed and not self.draining:
                self.transport.resume_reading()
                self.paused = False
            try:
                reply, stage = self.server.provisioner.answer(req.method, req.url, req.headers, self.peer,
                                                              tls=self.server.ssl is not None)
            except Exception:
                log.exception("error answering %s %r from %s", req.method, req.url, self.peer[0])
                reply, stage = text_reply(500, "internal server error", close=True), "other"
            if not req.keep_alive:
                reply.close = True
            self._send(reply, stage, head_only=req.method == "HEAD")
        if self.eof and not self.busy and not self.queue and not self.closed:
            self.close()

    def _send(self, reply, stage, head_only):
        metrics = self.server.metrics
        metrics.request(stage, reply.code)
        headers = [f"HTTP/1.1 {reply.code} {REASONS.get(reply.code, 'Unknown')}",
                   f"Server: {SERVER}", f"Date: {self.server.date()}"]
        if reply.file is not None:
            length = reply.file.remaining
        else:
            length = len(reply.body)
        if reply.code != 304:
            headers.append(f"Content-Length: {length}")
        headers += [f"{k}: {v}" for k, v in reply.headers]
        if reply.close:
            headers.append("Connection: close")
            self.close_after = True
        head = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        self.busy = True
        if reply.file is not None and not head_only:
            self.out.append(head)
            metrics.in_flight += 1
            reply.file.on_done = self.server.counted(reply.file.on_done, stage, reply.code)
            self.out.append(reply.file)
            self.fit_send_buffer()
        else:
            if reply.file is not None:      # HEAD: no body was due (its boot record says 0 of 0 bytes)
                reply.file.close(complete=True)
            self.out.append(head if head_only or reply.code == 304 else head + reply.body)
            if not head_only:
                metrics.sent(stage, reply.code, len(reply.body))
        self._pump()

    def _pump(self):
        """Send what we can without blocking; called again by add_writer when the socket drains."""
        if self.closed:
            return
        sock = self.wsock
        budget = PUMP_BUDGET
        mode_mmap = self.server.send_mode == "mmap"
        try:
            while self.out and budget > 0:
                item = self.out[0]
                if isinstance(item, FileBody):
                    while item.remaining and budget > 0:
                        want = min(item.remaining, budget)
                        chunk = min(want, MMAP_CHUNK) if mode_mmap else want
                        if chunk == item.remaining:
                            item.last_send_at = item.clock()    # this call may send the last byte
                        if mode_mmap:
                            if item.mm is None:
                                item.mm = self.server.maps.view(item.fd)
                            n = sock.send(item.mm[item.offset:item.offset + chunk])
                        else:
                            n = os.sendfile(sock.fileno(), item.fd, item.offset, want)
                            if n == 0:
                                raise OSError(errno.EIO, "store file shrank while being sent")
                        item.offset += n
                        item.remaining -= n
                        item.sent += n
                        budget -= n
                        if n < want and item.remaining:
                            break      # a short write means the socket buffer is full: skip the EAGAIN call
                    if item.remaining:
                        break
                    self.out.pop(0)
                    item.close(complete=True)
                else:
                    flags = socket.MSG_MORE if len(self.out) > 1 else 0
                    n = sock.send(item, flags)
                    budget -= n
                    if n < len(item):
                        self.out[0] = memoryview(item)[n:]     # no copy of a large /status body
                        break
                    self.out.pop(0)
            self.last_activity = time.monotonic()
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF):
                log.warning("%s: send failed: %s", self.peer[0], e)
            self.close()
            return
        except Exception:             # never leave a writer registered on a broken connection
            log.exception("%s: send failed", self.peer[0])
            self.close()
            return
        if self.out:
            if not self.writing:
                self.loop.add_writer(sock.fileno(), self._pump)
                self.writing = True
            return
        if self.writing:
            self.loop.remove_writer(sock.fileno())
            self.writing = False
        self._reply_sent()

    def fit_send_buffer(self):
        """Give this connection its share of the process's send budget for the transfers in flight
        now (called when a file body starts, and by the sweep while one is being sent)."""
        sock = self._buffer_socket()
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        budget = self.server.send_budget
        value = budget.share(self.server.metrics.in_flight)
        capped = value is not None
        if not capped and self.sndbuf is None:
            return                    # never set: the kernel still sizes this buffer
        value = value if capped else budget.uncapped()
        if value != self.sndbuf:
            try:
                sock.setsockopt(socket.SOL_SOCKET, budget.option, value)
            except OSError:
                return
            self.sndbuf = value
        self.capped = capped

    def _buffer_socket(self):
        """The socket whose send buffer the budget sizes: our own descriptor (TLS connections override)."""
        return self.wsock if isinstance(self.wsock, socket.socket) else None

    def _reply_sent(self):
        """Everything of the reply is out: close if asked, else answer what is queued."""
        self.busy = False
        if self.close_after:
            self._linger()
            return
        if self.queue or self.eof:
            self._next()

    # -- limits, checked by the server's sweep -------------------------------------------------
    def sweep(self, now, limits):
        if self.closed:
            return
        if self.draining:
            if now > self.draining:
                self.close()
        elif self.request_started and now - self.request_started > limits.header_timeout:
            self.request_started = 0.0
            self._refuse(408, f"request headers not received within {limits.header_timeout:g} s")
        elif self.busy:
            if self.out and isinstance(self.out[-1], FileBody):
                self.fit_send_buffer()        # transfers started after this one changed its share
            if now - self.last_activity > limits.stall_timeout:
                log.warning("%s: client stopped reading for %g s; closing", self.peer[0], limits.stall_timeout)
                self.server.metrics.closed("stalled")
                self.close()
        elif not self.queue and now - self.last_activity > limits.idle_timeout:
            # recorded (log line and counter): what tests and operators check, not the moment of the close
            log.info("%s:%d: keep-alive connection idle for %g s; closed", *self.peer, limits.idle_timeout)
            self.server.metrics.closed("idle")
            self.close()
