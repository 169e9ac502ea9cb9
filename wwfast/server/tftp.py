"""TFTP server: the asyncio glue around the session table of `wwfast.tftp`.

A listener on the well-known port only dispatches requests (RRQ parse, path
check, file lookup, option negotiation: once per transfer, in Python). Each
transfer then gets its own socket (RFC 1350 TID) inside the core's session
table, which the loop watches through one epoll fd; every DATA/ACK after the
RRQ is handled by the core (compiled: no Python object per packet), and one
timer wheel drives retransmission. Read only: WRQ is refused.

`TftpServer(root, host, port, resolve=None, on_request=None, on_end=None)`: `resolve(path)`
may answer a path first (bytes, or a file name to serve, or None to fall back to the
root), so the serve stage can hand out per-node iPXE scripts by MAC.
`on_request(path, client, result, nbytes)` hears once per read request how it
went (for status and metrics; never per packet): `path` relative to the root (None
when the packet was no readable request), `client` (host, port), `result` "ok",
"duplicate" (a retransmitted RRQ of a transfer in flight), "busy" or an error name
from ERROR_RESULTS, `nbytes` the size of the transfer started (0 otherwise). When it
returns something other than None for a started transfer, `on_end(token, result, nbytes)`
hears once how that transfer ended: the token, a result from the core's END_RESULTS
("ok", "expired", "aborted", "illegal", "closed") and the bytes the client acknowledged.

Standalone, for tests and benchmarks (the runner is wwfast.server.tftp_standalone):
    python -m wwfast.server.tftp --root DIR --port 6969 --bind 127.0.0.1 [--workers 2]
"""
import asyncio
import collections
import logging
import mmap
import os
import resource
import socket
import sys

from wwfast import tftp as _facade

log = logging.getLogger("wwfast.tftp")

DEFAULT_CACHE_BYTES = 256 << 20
# TFTP error code -> the result on_request hears
ERROR_RESULTS = {_facade.ERR_NOT_FOUND: "not_found", _facade.ERR_ACCESS: "access_denied",
                 _facade.ERR_OPTIONS: "bad_options", _facade.ERR_ILLEGAL: "illegal"}


class _Listener(asyncio.DatagramProtocol):
    def __init__(self, server):
        self.server = server
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        try:
            self.server._on_request(data, addr)
        except Exception:  # never let one request take the listener down
            log.exception("tftp: request from %s failed", addr)

    def error_received(self, exc):
        log.debug("tftp listener: %s", exc)


class FileCache:
    """File contents by path, checked against (dev, inode, size, mtime) on every request.

    Stages replace files by rename, so a changed file is a new inode and the old
    content stays valid for transfers in flight. Files above the budget are mapped
    (mmap) instead of read; netascii conversions are cached beside the raw bytes.
    """

    def __init__(self, budget=DEFAULT_CACHE_BYTES):
        self.budget = budget
        self.used = 0
        self._entries = collections.OrderedDict()   # (path, mode) -> (stat key, buffer)

    def get(self, path, mode):
        st = os.stat(path)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        entry = self._entries.get((path, mode))
        if entry is not None and entry[0] == key:
            self._entries.move_to_end((path, mode))
            return entry[1]
        with open(path, "rb") as f:
            if mode == "octet" and st.st_size > self.budget:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            data = f.read()
        if mode == "netascii":
            data = _facade.to_netascii(data)
        self._put((path, mode), key, data)
        return data

    def _put(self, name, key, data):
        old = self._entries.pop(name, None)
        if old is not None:
            self.used -= len(old[1])
        if len(data) > self.budget:
            return
        while self._entries and self.used + len(data) > self.budget:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.used -= len(dropped)
        self._entries[name] = (key, data)
        self.used += len(data)


class TftpServer:
    """Serve `root` read-only over TFTP on (host, port); use `async with` or start()/close()."""

    def __init__(self, root, host="0.0.0.0", port=69, resolve=None, on_request=None, on_end=None, *, timeout=1.0,
                 retries=5, max_blksize=None, max_windowsize=None, reuse_port=False, core=None,
                 cache_bytes=DEFAULT_CACHE_BYTES, tick=0.01, sock=None, clock=None):
        self.root = os.path.realpath(root)
        self.host = host
        self.port = port
        self.resolve = resolve
        self.on_request = on_request
        self.on_end = on_end
        self.sock = sock                         # an already bound socket to serve on (serve's workers)
        self.timeout = timeout
        self.retries = retries
        self.core = core or _facade.core()
        self.max_blksize = max_blksize or self.core.MAX_BLKSIZE
        self.max_windowsize = max_windowsize or self.core.MAX_WINDOWSIZE
        self.reuse_port = reuse_port
        self.tick = tick
        self.clock = clock                       # the core's timer clock (seconds); None: monotonic
        self.cache = FileCache(cache_bytes)
        self.table = None
        self.requests = collections.Counter()    # outcome -> count, for status/metrics
        self._loop = None
        self._transport = None
        self._timer = None
        self._closed = False
        self._last_report = 0.0
        self._reported = {}

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self):
        raise_fd_limit()
        self._loop = asyncio.get_running_loop()
        # clock only when given: a compiled core built before it had the argument still serves
        held = {"clock": self.clock} if self.clock is not None else {}
        self.table = self.core.SessionTable(self.host, timeout=self.timeout, retries=self.retries,
                                            tick=self.tick, **held)
        if self.sock is not None:
            self._transport, _ = await self._loop.create_datagram_endpoint(lambda: _Listener(self), sock=self.sock)
        else:
            self._transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Listener(self), local_addr=(self.host, self.port),
                reuse_port=self.reuse_port or None)
        self.port = self._transport.get_extra_info("sockname")[1]
        _deepen_receive_buffer(self._transport.get_extra_info("socket"))
        self._loop.add_reader(self.table.fileno(), self._poll)
        log.info("tftp: serving %s on %s:%s (core %s)", self.root, self.host, self.port,
                 "compiled" if self.core.__name__.endswith("_tftp") else "pure")
        return self

    async def close(self):
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self._transport is not None:
            self._transport.close()
        if self.table is not None:
            self._loop.remove_reader(self.table.fileno())
            self.table.close()
            if self.on_end is not None:
                self._report_ends()      # transfers cut short by the close

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, *exc):
        await self.close()

    def stats(self):
        out = dict(self.table.stats()) if self.table is not None else {}
        out.update(("requests_" + k, v) for k, v in self.requests.items())
        return out

    # -- event handlers ----------------------------------------------------------------------
    def _poll(self):
        self.table.poll()
        if self.on_end is not None:
            self._report_ends()
        self._arm_timer()

    def _tick(self):
        self._timer = None
        if self._closed:
            return
        self.table.advance()
        if self.on_end is not None:
            self._report_ends()
        self._report_anomalies()
        self._arm_timer()

    def _report_ends(self):
        for ticket, result, nbytes in self.table.finished():
            if ticket[0] is None:
                continue
            try:
                self.on_end(ticket[0], result, nbytes)
            except Exception:  # accounting must never cost a client its transfer
                log.exception("tftp: on_end failed")

    def _report_anomalies(self):
        """Log, at most once a second, the bad packets the core dropped or answered."""
        now = self._loop.time()
        if now - self._last_report < 1.0:
            return
        self._last_report = now
        stats = self.table.stats()
        seen = {k: stats[k] for k in ("wrong_tid", "malformed", "expired", "aborted")}
        new = {k: v - self._reported.get(k, 0) for k, v in seen.items() if v != self._reported.get(k, 0)}
        if new:
            log.info("tftp: since last report: %s", ", ".join(f"{k} {v}" for k, v in sorted(new.items())))
        self._reported = seen

    def _arm_timer(self):
        # One timer for the whole wheel, only while transfers are in flight.
        if self._timer is None and self.table.active:
            self._timer = self._loop.call_later(self.tick, self._tick)

    def _on_request(self, data, addr):
        core = self.core
        relative = None
        try:
            request = core.parse_request(data)
            if request.opcode == core.WRQ:
                raise core.TftpError(core.ERR_ACCESS, "read-only server: write requests are refused")
            relative = self._confine(request.filename)
            content = self._content(relative, request.mode)
            blksize, windowsize, timeout, oack = core.negotiate(
                request.options, len(content), self.max_blksize, self.max_windowsize)
        except core.TftpError as e:
            self.requests["refused"] += 1
            log.info("tftp: %s from %s:%s: error %d %s", _describe(data), addr[0], addr[1], e.code, e.message)
            if len(data) < 2 or data[1] != core.ERROR or data[0] != 0:   # never answer an error with one
                self._transport.sendto(core.build_error(e.code, e.message), addr)
            self._report(relative, addr, ERROR_RESULTS.get(e.code, "error"), 0)
            return
        # The transfer's ticket holds what on_request answers (reported again by on_end).
        ticket = [None] if self.on_end is not None else None
        try:
            sid = self.table.start(addr, content, blksize, windowsize, timeout, oack,
                                   key=(addr, request.filename), tag=ticket)
        except OSError as e:
            self.requests["busy"] += 1
            log.warning("tftp: cannot open a transfer for %s:%s: %s", addr[0], addr[1], e)
            self._transport.sendto(core.build_error(core.ERR_UNDEFINED, "server busy"), addr)
            self._report(relative, addr, "busy", 0)
            return
        self.requests["duplicate" if sid < 0 else "started"] += 1
        token = self._report(relative, addr, "duplicate" if sid < 0 else "ok", len(content) if sid >= 0 else 0)
        if ticket is not None and sid >= 0:
            ticket[0] = token
        self._arm_timer()

    def _report(self, relative, addr, result, nbytes):
        if self.on_request is None:
            return None
        try:
            return self.on_request(relative, (addr[0], addr[1]), result, nbytes)
        except Exception:  # accounting must never cost a client its transfer
            log.exception("tftp: on_request(%r) failed", relative)
            return None

    def _confine(self, filename):
        """`filename` as a path relative to the root; raises TftpError 2 when it would leave the root."""
        core = self.core
        name = filename.replace("\\", "/")
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise core.TftpError(core.ERR_ACCESS, "'..' is not allowed in file names")
        if name.startswith("/"):
            # Absolute names are accepted only inside the root (as dnsmasq does).
            inside = os.path.normpath(name)
            if inside != self.root and not inside.startswith(self.root.rstrip("/") + "/"):
                raise core.TftpError(core.ERR_ACCESS, "absolute path outside the TFTP root")
            parts = [p for p in os.path.relpath(inside, self.root).split("/") if p not in ("", ".")]
        return "/".join(parts)

    def _content(self, relative, mode):
        """The bytes to send for the confined name `relative`; raises TftpError 1 or 2."""
        core = self.core
        if self.resolve is not None:
            try:
                answer = self.resolve(relative)
            except Exception:
                log.exception("tftp: resolve(%r) failed", relative)
                raise core.TftpError(core.ERR_UNDEFINED, "internal error") from None
            if isinstance(answer, (bytes, bytearray, memoryview)):
                return core.to_netascii(answer) if mode == "netascii" else answer
            if answer is not None:
                return self._read(os.fspath(answer), mode)
        path = os.path.realpath(os.path.join(self.root, relative))
        if path != self.root and not path.startswith(self.root.rstrip("/") + "/"):
            raise core.TftpError(core.ERR_ACCESS, "path leads outside the TFTP root")
        return self._read(path, mode)

    def _read(self, path, mode):
        core = self.core
        try:
            if not os.path.isfile(path):
                raise core.TftpError(core.ERR_NOT_FOUND, "file not found")
            return self.cache.get(path, mode)
        except PermissionError:
            raise core.TftpError(core.ERR_ACCESS, "permission denied") from None
        except OSError:
            raise core.TftpError(core.ERR_NOT_FOUND, "file not found") from None


LISTENER_RCVBUF = 4 << 20


def _deepen_receive_buffer(sock):
    """Room for a boot storm's burst of RRQs (the default buffer holds a few hundred).

    SO_RCVBUFFORCE passes net.core.rmem_max when we may (root); else the capped SO_RCVBUF.
    """
    if sock is None:
        return
    for option in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if option is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, LISTENER_RCVBUF)
            break
        except OSError:
            continue
    # Unprivileged, net.core.rmem_max caps it (the kernel reports twice what it granted).
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
    if granted < LISTENER_RCVBUF:
        log.warning("tftp: request buffer %d KiB (wanted %d KiB): a boot storm's burst of read requests may "
                    "overflow it; raise net.core.rmem_max or run serve with CAP_NET_ADMIN",
                    granted >> 10, LISTENER_RCVBUF >> 10)
    return granted


def _describe(data):
    head = bytes(data[:2])
    if head == b"\0\1":
        return "RRQ " + repr(bytes(data[2:]).split(b"\0")[0][:200])
    if head == b"\0\2":
        return "WRQ " + repr(bytes(data[2:]).split(b"\0")[0][:200])
    return f"packet of {len(data)} bytes starting {bytes(data[:4]).hex()}"


def raise_fd_limit():
    """Each transfer holds a socket: lift the soft fd limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# `python -m wwfast.server.tftp` is the standalone runner of wwfast.server.tftp_standalone.
if __name__ == "__main__":
    from wwfast.server.tftp_standalone import main
    sys.exit(main())
