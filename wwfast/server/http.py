"""The HTTP provisioning server: Warewulf's routes over the published manifest.

One asyncio Protocol per connection reads and parses requests (httptools);
responses go out on a dup() of the connection's socket, driven by add_writer:
headers with send(MSG_MORE), file bodies with os.sendfile straight from the page
cache (uvloop has no loop.sendfile, uvloop#228). Memory per connection is a few
small objects whatever the file size. `send_mode="mmap"` copies from an mmap
with send() instead; benchmarks/bench_http.py measures both.

Limits (header size, header time, idle time, send stall) are checked by one
sweep per half second over all connections, not a timer per connection.
"""
import asyncio
import email.utils
import errno
import hmac
import json
import logging
import mmap
import os
import socket
import stat
import time
import urllib.parse

import httptools

from wwfast import layout
from wwfast.server.catalog import STAGES, CatalogWatcher, normalise_mac
from wwfast.server.metrics import Metrics
from wwfast.server.pins import BootPins
from wwfast.server.status import StatusBook

log = logging.getLogger("wwfast.serve")

SERVER = "wwfast"
PUMP_BUDGET = 16 << 20        # bytes one connection may send per loop wake-up (fairness)
MMAP_CHUNK = 4 << 20
MAX_QUEUED = 8                # pipelined requests buffered before we stop reading
STAGE_ALIASES = {"container": "image", "overlay-system": "system", "overlay-runtime": "runtime"}
ENCODING_NAMES = {"zst": "zst", "zstd": "zst", "gz": "gz", "gzip": "gz"}
CONTENT_TYPES = {"ipxe": "text/plain; charset=utf-8"}
REASONS = {200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           408: "Request Timeout", 413: "Content Too Large", 416: "Range Not Satisfiable",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 503: "Service Unavailable"}


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


class FileBody:
    """A byte range of an open store file, sent with sendfile or from an mmap."""
    __slots__ = ("fd", "offset", "remaining", "mm", "on_done", "sent")

    def __init__(self, fd, offset, length, on_done):
        self.fd, self.offset, self.remaining, self.on_done = fd, offset, length, on_done
        self.mm = None
        self.sent = 0

    def close(self, complete):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.mm = None     # the mapping goes when the last memoryview does
            done, self.on_done = self.on_done, None
            if done:
                done(self.sent, complete)


class Reply:
    """What a route answers: status, headers, and a body (bytes, or a file range)."""
    __slots__ = ("code", "headers", "body", "file", "close")

    def __init__(self, code, body=b"", headers=(), file=None, close=False):
        self.code, self.body, self.headers, self.file, self.close = code, body, list(headers), file, close


def text_reply(code, message, close=False, headers=()):
    return Reply(code, (message.rstrip("\n") + "\n").encode(), [("Content-Type", "text/plain; charset=utf-8"),
                                                                *headers], close=close)


def http_date(ts):
    return email.utils.formatdate(ts, usegmt=True)


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
                reply, stage = self.server.answer(req, self.peer)
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
            self.out.append(reply.file)
        else:
            if reply.file is not None:      # HEAD: nothing was in flight
                reply.file.on_done = None
                reply.file.close(complete=False)
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
                        if mode_mmap:
                            if item.mm is None:
                                item.mm = self.server.mapping(item.fd)
                            n = sock.send(item.mm[item.offset:item.offset + min(want, MMAP_CHUNK)])
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
            if now - self.last_activity > limits.stall_timeout:
                log.warning("%s: client stopped reading for %g s; closing", self.peer[0], limits.stall_timeout)
                self.close()
        elif not self.queue and now - self.last_activity > limits.idle_timeout:
            self.close()


class HttpServer:
    """Serves STATE/store through STATE/publish/manifest.json; `async with HttpServer(...)`."""

    def __init__(self, state_dir, host="0.0.0.0", port=9873, secure=False, send_mode="sendfile",
                 limits=None, reload_interval=1.0, status_debounce=1.0, follow_manifest_secure=True):
        if send_mode not in ("sendfile", "mmap"):
            raise ValueError(f"send_mode must be sendfile or mmap, not {send_mode!r}")
        self.state_dir = state_dir
        self.host, self.port = host, port
        # Secure mode: ours, or the manifest's copy of the settings unless a flag decided explicitly.
        self.secure = secure
        self.follow_manifest_secure = follow_manifest_secure
        self.send_mode = send_mode
        self.limits = limits or Limits()
        self.metrics = Metrics()
        self.status = StatusBook(state_dir, debounce=status_debounce)
        self.watcher = CatalogWatcher(state_dir, interval=reload_interval, on_swap=self._swapped)
        self.pins = BootPins()      # a node finishes its boot from the generation it started with
        self.connections = set()
        self.loop = None
        self._server = None
        self._sweeper = None
        self._date = (0, "")
        self._maps = {}

    def _swapped(self, old, new):
        self.metrics.reloads += 1
        self.pins.prune()
        if self._maps:
            self._unmap_unused()

    def mapping(self, fd):
        """A read-only memoryview of the file behind `fd`, one mapping per file shared by all
        connections (a mapping per connection would count the file once per client in RSS)."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size)
        view = self._maps.get(key)
        if view is None:
            view = self._maps[key] = memoryview(mmap.mmap(fd, 0, prot=mmap.PROT_READ))
        return view

    def _unmap_unused(self):
        """Drop mappings of files no longer in the manifest (transfers still using one keep a reference)."""
        names = set()
        for node in self.catalog.nodes.values():
            for encodings in node.artifacts.values():
                names.update(os.path.basename(a.path) for a in encodings.values())
        keep = set()
        for name in names:
            try:
                st = os.stat(layout.store_file(self.state_dir, name))
                keep.add((st.st_dev, st.st_ino, st.st_size))
            except OSError:
                pass
        for key in [k for k in self._maps if k not in keep]:
            del self._maps[key]

    @property
    def catalog(self):
        return self.watcher.current

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, http_date(now))
        return self._date[1]

    async def start(self):
        self.loop = asyncio.get_running_loop()
        self.status.attach(self.loop)
        self.watcher.start(self.loop)
        self._server = await self.loop.create_server(lambda: Connection(self), self.host, self.port,
                                                     reuse_address=True, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]
        self._sweeper = self.loop.call_later(0.5, self._sweep)
        log.info("HTTP on %s:%d (%s, %s)", self.host, self.port, self.send_mode,
                 type(self.loop).__module__.split(".")[0])
        return self

    def _sweep(self):
        now = time.monotonic()
        for conn in list(self.connections):
            try:
                conn.sweep(now, self.limits)
            except Exception:
                log.exception("sweep failed for %s", conn.peer[0])
                conn.close()
        self._sweeper = self.loop.call_later(0.5, self._sweep)

    async def close(self):
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self.watcher.stop()
        if self._server is not None:
            self._server.close()
            for conn in list(self.connections):
                conn.close()
            await self._server.wait_closed()
            self._server = None
        await self.status.close()

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    # -- routing ----------------------------------------------------------------------------
    def answer(self, req, peer):
        """(Reply, stage label for metrics) for one parsed request."""
        if req.method not in ("GET", "HEAD"):
            return text_reply(405, f"method {req.method} not allowed", headers=[("Allow", "GET, HEAD")]), "other"
        try:
            url = httptools.parse_url(req.url)
        except httptools.HttpParserInvalidURLError:
            return text_reply(400, "malformed URL"), "bad"
        raw_path = (url.path or b"/").decode("latin-1")
        query = urllib.parse.parse_qs((url.query or b"").decode("latin-1"), keep_blank_values=True)
        query = {k: v[0] for k, v in query.items()}
        segments = []
        for raw in raw_path.split("/"):
            if not raw:
                continue             # collapse '//' (shim asks for .../efiboot//grub.efi)
            seg = urllib.parse.unquote(raw, errors="strict") if "%" in raw else raw
            if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
                return text_reply(400, "path segments may not be '.', '..' or contain slashes"), "bad"
            segments.append(seg)
        if not segments:
            return text_reply(404, "no such route; try /ipxe/<mac>, /status, /metrics, /healthz"), "other"
        head = segments[0]
        if len(segments) == 1 and head in ("status", "metrics", "healthz"):
            return getattr(self, "_" + head)(), head
        if head == "provision":
            stage = query.get("stage", "ipxe") or "ipxe"
            stage = STAGE_ALIASES.get(stage, stage)
            if stage not in STAGES:
                return text_reply(400, f"unknown stage {stage!r}"), "bad"
        else:
            stage = STAGE_ALIASES.get(head, head)
            if stage not in STAGES:
                return text_reply(404, f"no such route /{head}"), "other"
        if len(segments) > 2:
            return text_reply(404, f"no such route {raw_path}"), stage
        return self._provision(stage, segments[1] if len(segments) == 2 else None, query, req, peer), stage

    def _provision(self, stage, wwid, query, req, peer):
        catalog = self.catalog
        if not self.watcher.loaded:
            return text_reply(503, "nothing published yet (no STATE/publish/manifest.json)")
        wwid = wwid or query.get("wwid") or arp_lookup(peer[0])
        if not wwid:
            return text_reply(400, "which node? give the MAC in the path or as ?wwid=")
        mac = normalise_mac(wwid)
        if mac is None:
            return text_reply(400, f"{wwid!r} is not a MAC address")
        compress = query.get("compress")
        encoding = None
        if compress:
            encoding = ENCODING_NAMES.get(compress.lower())
            if encoding is None:
                return text_reply(400, f"compress={compress} is not one of zst, gz")
        catalog = self.pins.catalog_for(mac, stage, catalog)
        node = catalog.by_mac.get(mac)
        if node is None:
            if stage == "ipxe" and catalog.unknown_ipxe is not None:
                log.info("%s: unknown MAC %s asked for iPXE; sent the unknown-node script", peer[0], mac)
                return self._file_reply(catalog.unknown_ipxe, req, "ipxe", None, peer)
            log.info("%s: %s for unknown MAC %s", peer[0], stage, mac)
            return text_reply(404, f"no node has MAC {mac}")
        if node.asset_key and not hmac.compare_digest(query.get("assetkey", "").encode(), node.asset_key.encode()):
            self.status.requested(node.id, stage, "BAD_ASSET", peer[0], ok=False)
            log.warning("%s: wrong asset key for %s (%s)", peer[0], node.id, stage)
            return text_reply(401, f"asset key required for {node.id}")
        if stage == "runtime" and (self.secure or (self.follow_manifest_secure and catalog.secure)):
            if peer[1] >= 1024 or (node.addresses and peer[0] not in node.addresses):
                self.status.requested(node.id, stage, "BAD_PORT", peer[0], ok=False)
                log.warning("%s:%d: secure mode refuses the runtime overlay of %s", peer[0], peer[1], node.id)
                return text_reply(403, "secure mode: the runtime overlay is served only to the node's own "
                                       "address from a privileged port (< 1024)")
        artifact = node.artifact(stage, encoding)
        if artifact is None:
            self.status.requested(node.id, stage, "NOT_FOUND", peer[0], ok=False)
            what = f"{encoding} encoding of " if encoding else ""
            return text_reply(404, f"no {what}{stage} published for {node.id}")
        return self._file_reply(artifact, req, stage, node, peer)

    def _file_reply(self, artifact, req, stage, node, peer):
        try:
            # O_NOFOLLOW + regular-file check: a link planted in the store never leads outside it
            fd = os.open(artifact.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise OSError(errno.EINVAL, "not a regular file")
        except OSError as e:
            log.error("store file of %s %s is missing: %s", node.id if node else "unknown", stage, e)
            if node:
                self.status.requested(node.id, stage, "NOT_FOUND", "", ok=False)
            return text_reply(404, f"{stage} file missing from the store")
        try:
            st = os.fstat(fd)
            reply = self._ranged(fd, st, artifact, req, stage, node, peer)
        except BaseException:
            os.close(fd)
            raise
        if reply.file is None:
            os.close(fd)
        return reply

    def _ranged(self, fd, st, artifact, req, stage, node, peer):
        size = st.st_size
        etag = f'"{artifact.sha256}"'
        headers = [("Content-Type", CONTENT_TYPES.get(stage, "application/octet-stream")),
                   ("ETag", etag), ("Last-Modified", http_date(st.st_mtime)), ("Accept-Ranges", "bytes")]
        h = req.headers
        if not_modified(h, etag, st.st_mtime):
            return Reply(304, headers=headers)
        start, end = 0, size
        code = 200
        rng = h.get("range")
        if rng and if_range_ok(h.get("if-range"), etag, st.st_mtime):
            parsed = parse_range(rng, size)
            if parsed == "unsatisfiable":
                return Reply(416, b"", headers=[("Content-Range", f"bytes */{size}")] + headers[1:])
            if parsed is not None:
                start, end = parsed
                code = 206
                headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
        node_id = node.id if node else None
        log.info("%s:%d %s %s %s %s -> %d", peer[0], peer[1], req.method, node_id or "unknown", stage,
                 artifact.name, code)
        if node:
            self.node_fetched(node, stage, artifact, peer[0])
        on_done = self._completion(stage, code, node_id, end - start)
        return Reply(code, headers=headers, file=FileBody(fd, start, end - start, on_done))

    def node_fetched(self, node, stage, artifact, client_host):
        """`node` is being sent `artifact` for `stage` (by HTTP, or its script by TFTP): /status shows it,
        and a script or a boot's first kernel starts the node's boot."""
        self.status.requested(node.id, stage, artifact.name, client_host)

    def _completion(self, stage, code, node_id, length):
        def done(sent, complete):
            self.metrics.in_flight -= 1
            self.metrics.sent(stage, code, sent)
            if node_id and complete and sent == length:
                duration = self.status.completed(node_id, stage)
                if duration is not None:
                    self.metrics.boot.observe(duration)
                    log.info("%s booted in %.1f s", node_id, duration)
        return done

    # -- service routes ------------------------------------------------------------------------
    def _status(self):
        catalog = self.catalog
        doc = self.status.snapshot(catalog.nodes)
        doc["generation"] = catalog.generation
        doc["update interval"] = catalog.update_interval
        doc["now"] = time.time()
        body = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
        return Reply(200, body, [("Content-Type", "application/json"), ("Cache-Control", "no-store")])

    def _metrics(self):
        catalog = self.catalog
        body = self.metrics.render(self.status.by_stage(catalog.nodes), catalog.generation).encode()
        return Reply(200, body, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8")])

    def _healthz(self):
        if not self.watcher.loaded:
            return text_reply(503, "no manifest published yet")
        return text_reply(200, f"ok generation={self.catalog.generation}")


def not_modified(headers, etag, mtime):
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip() for t in inm.split(",")]
        return "*" in tags or etag in tags or ("W/" + etag) in tags
    ims = headers.get("if-modified-since")
    if ims:
        try:
            return int(mtime) <= email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def if_range_ok(value, etag, mtime):
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == etag
    try:
        return int(mtime) <= email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return False


def parse_range(value, size):
    """(start, end) for one 'bytes=' range, 'unsatisfiable', or None to ignore it (RFC 9110 14.2)."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None                     # other units and multiple ranges: send the whole file
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    if not (first.isdigit() or first == "") or not (last.isdigit() or last == "") or first == last == "":
        return None
    if first == "":                     # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        return "unsatisfiable"
    return start, end


def arp_lookup(ip):
    """The MAC the kernel's ARP cache has for `ip` (Warewulf's fallback when no wwid is given)."""
    try:
        with open("/proc/net/arp") as f:
            next(f)
            for line in f:
                cols = line.split()
                if len(cols) >= 4 and cols[0] == ip and cols[3] != "00:00:00:00:00:00":
                    return cols[3]
    except (OSError, StopIteration):
        pass
    return None
