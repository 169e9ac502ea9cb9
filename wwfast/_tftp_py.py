"""TFTP session table (pure twin of _tftp): the per-packet path of every transfer.

One `SessionTable` per process holds every transfer in flight. Each transfer has
its own UDP socket (its TID, RFC 1350) registered in one epoll set, so the event
loop watches a single fd (`fileno()`) and calls `poll()` when it is readable.
Retransmission is driven by one hashed timer wheel that `advance()` turns; the
loop calls it every `tick` seconds while sessions exist. A client's re-ACK of the
block before the one in flight (its own retry timer fired: iPXE after 250 ms) is
answered at once by a resend when that block went out at least `timeout`/8 ago,
so a lost DATA costs the client's timer, not the server's; the age guard holds it
to one resend per interval however many duplicate ACKs come (Sorcerer's Apprentice). Same API and behaviour
as the compiled twin; this one keeps a small Python object per session.
"""
import os
import select
import socket
import struct
import time

from wwfast._tftp_codec import (  # noqa: F401  (re-exported: the facade's API)
    ACK, DATA, DEFAULT_BLKSIZE, ERR_ACCESS, ERR_DISK_FULL, ERR_EXISTS, ERR_ILLEGAL, ERR_NO_USER,
    ERR_NOT_FOUND, ERR_OPTIONS, ERR_UNDEFINED, ERR_UNKNOWN_TID, ERROR, MAX_BLKSIZE, MAX_WINDOWSIZE,
    MIN_BLKSIZE, MODES, OACK, RRQ, WRQ, Request, TftpError, build_ack, build_data, build_error,
    build_oack, negotiate, parse_request, to_netascii)

_WHEEL_SLOTS = 4096          # power of two; deadlines beyond one lap wait for their lap
_MAX_BACKOFF = 3             # a retry waits timeout << min(retries, 3)
_NUDGE_SHIFT = 3             # a re-ACK resends what went out at least timeout >> 3 ago
_HEADER = struct.Struct("!HH")
_UNKNOWN_TID = build_error(ERR_UNKNOWN_TID, "unknown transfer ID")
_ILLEGAL = build_error(ERR_ILLEGAL, "illegal TFTP operation")
STAT_NAMES = ("started", "completed", "expired", "aborted", "data_sent", "retransmits", "duplicate_requests",
              "first_resends",
              "duplicate_acks", "dupack_resends", "wrong_tid", "malformed", "send_errors")
# How a transfer ended, as finished() reports it
END_RESULTS = ("ok", "expired", "aborted", "illegal", "closed")


class _Session:
    __slots__ = ("sid", "sock", "fd", "peer", "data", "size", "blksize", "windowsize", "timeout",
                 "nblocks", "acked", "sent_upto", "retries", "oack", "deadline", "slot", "key", "tag", "sent_at",
                 "resent", "echo")


class SessionTable:
    def __init__(self, bind_host="0.0.0.0", timeout=1.0, retries=5, tick=0.01, capacity=1024, log=None,
                 clock=None):
        self.bind_host = bind_host or "0.0.0.0"
        self.clock = clock or time.monotonic   # seconds; a test may hold it still (no session expires)
        self.family = socket.AF_INET6 if ":" in self.bind_host else socket.AF_INET
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.tick = float(tick)
        self.log = log
        self._epoll = select.epoll()
        self._sessions = {}          # sid -> _Session
        self._by_fd = {}             # fd -> _Session
        self._by_key = {}            # caller's key (peer, file) -> sid: a retransmitted RRQ is no new transfer
        self._free = list(range(capacity - 1, -1, -1))
        self._capacity = capacity
        self._wheel = [set() for _ in range(_WHEEL_SLOTS)]
        self._now_tick = self._clock()
        self._stats = dict.fromkeys(STAT_NAMES, 0)
        self._ended = []             # (tag, result, bytes acknowledged) of tagged transfers that ended

    # -- public API ------------------------------------------------------------------------
    def fileno(self):
        return self._epoll.fileno()

    @property
    def active(self):
        return len(self._sessions)

    def stats(self):
        return dict(self._stats, active=len(self._sessions))

    def start(self, peer, data, blksize=DEFAULT_BLKSIZE, windowsize=1, timeout=0, oack=None, key=None, tag=None):
        """Open a transfer of `data` (a buffer) to `peer` and send its first packet.

        Returns the session id, or -1 when `key` names a transfer in flight (the client
        retransmitted its RRQ). If that transfer's first packet (OACK, or DATA 1 without
        options) is not acknowledged yet, it is resent at once: the client's RRQ timer
        (iPXE: 250 ms) says it lacks it, and our own timer would wait a whole timeout.
        Raises OSError when no socket can be had (the caller answers "busy").
        A transfer with a `tag` (not None) is reported by finished() when it ends.
        """
        if key is not None and key in self._by_key:
            # A retransmitted RRQ (maybe queued behind a burst while its transfer already
            # runs): never restart the transfer the client is bound to.
            self._stats["duplicate_requests"] += 1
            s = self._sessions[self._by_key[key]]
            if s.oack is not None or s.acked == 0:
                self._stats["first_resends"] += 1
                s.resent = True
                self._send_current(s)
            return -1
        sock = socket.socket(self.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.bind((self.bind_host, 0))
            self._epoll.register(sock.fileno(), select.EPOLLIN)
        except BaseException:
            sock.close()
            raise
        if not self._free:
            self._free = list(range(self._capacity * 2 - 1, self._capacity - 1, -1))
            self._capacity *= 2
        s = _Session()
        s.sid = self._free.pop()
        s.sock, s.fd = sock, sock.fileno()
        s.peer = _normal_peer(peer)
        s.data = memoryview(data).cast("B") if len(data) else memoryview(b"")
        s.size = len(s.data)
        s.blksize = int(blksize)
        s.windowsize = max(1, int(windowsize))
        s.timeout = max(1, round((timeout or self.timeout) / self.tick))
        s.nblocks = s.size // s.blksize + 1   # the last block is short, possibly empty
        s.acked = s.sent_upto = 0
        s.retries = 0
        s.sent_at = 0
        s.resent = s.echo = False
        s.oack = oack
        s.slot = -1
        s.key = key
        s.tag = tag
        self._sessions[s.sid] = s
        self._by_fd[s.fd] = s
        if key is not None:
            self._by_key[key] = s.sid
        self._stats["started"] += 1
        self._send_current(s)
        return s.sid

    def poll(self):
        """Read every pending packet of every ready session; returns the packets handled."""
        handled = 0
        # One packet per ready socket per round: the epoll set is level-triggered, so
        # a socket with more waiting is reported again (no failing recv per packet).
        for _round in range(8):
            events = self._epoll.poll(0, 512)
            for fd, _events in events:
                s = self._by_fd.get(fd)
                if s is None:
                    continue
                try:
                    packet, addr = s.sock.recvfrom(65536)
                except OSError:   # EAGAIN, or a socket error: the timer decides
                    continue
                handled += 1
                self._on_packet(s, packet, addr)
            if len(events) < 512:
                break
        self.advance()
        return handled

    def advance(self):
        """Turn the timer wheel to now: retransmit or drop the sessions that timed out."""
        now = self._clock()
        fired = 0
        first = self._now_tick + 1
        if now - first >= _WHEEL_SLOTS:
            first = now - _WHEEL_SLOTS + 1
        for t in range(first, now + 1):
            slot = self._wheel[t & (_WHEEL_SLOTS - 1)]
            if not slot:
                continue
            for sid in [sid for sid in slot if self._sessions[sid].deadline <= now]:
                fired += 1
                self._on_timeout(self._sessions[sid])
        self._now_tick = max(self._now_tick, now)
        return fired

    def finished(self):
        """(tag, result, bytes acknowledged) of each tagged transfer that ended since the last call;
        result is one of END_RESULTS. Empty when none did."""
        if not self._ended:
            return ()
        out, self._ended = self._ended, []
        return out

    def close(self):
        for s in list(self._sessions.values()):
            self._end(s, "closed")
        self._epoll.close()

    # -- internals ---------------------------------------------------------------------------
    def _clock(self):
        return int(self.clock() / self.tick)

    def _on_packet(self, s, packet, addr):
        if _normal_peer(addr) != s.peer:
            self._stats["wrong_tid"] += 1
            self._sendto(s, _UNKNOWN_TID, addr)
            return
        if len(packet) < 2:
            self._stats["malformed"] += 1
            return
        opcode = (packet[0] << 8) | packet[1]
        if opcode == ERROR:
            self._stats["aborted"] += 1
            self._end(s, "aborted")
            return
        if opcode != ACK:
            self._stats["malformed"] += 1
            self._sendto(s, _ILLEGAL, s.peer)
            self._end(s, "illegal")
            return
        if len(packet) < 4:
            self._stats["malformed"] += 1
            return
        block = (packet[2] << 8) | packet[3]
        if s.oack is not None:
            if block == 0:
                s.oack = None
                self._progress(s)
                self._send_window(s)
            else:
                self._stats["duplicate_acks"] += 1
            return
        base = s.acked
        delta = (block - base) & 0xFFFF
        if delta == 0 or delta > s.sent_upto - base:
            self._stats["duplicate_acks"] += 1
            if delta == 0:
                self._on_reack(s)
            return
        s.acked = base + delta
        self._progress(s)
        if s.acked >= s.nblocks:
            self._stats["completed"] += 1
            self._end(s, "ok")
        else:
            self._send_window(s)

    def _progress(self, s):
        """The client acknowledged something new. If what it acknowledged went out more than
        once, its second copy will draw a second ACK (the storm's nodes and iPXE re-ACK a
        duplicate): that echo is no news and must not start a resend, or every block after
        would go out twice, one duplicate drawing the next (Sorcerer's Apprentice)."""
        s.retries = 0
        s.echo, s.resent = s.resent, False

    def _on_reack(self, s):
        """The client ACKed again the block before those in flight: its retry timer fired, so
        what we sent was lost (or is late). Resend it, but only if it went out at least
        timeout/8 ago: a burst of duplicates (a late or doubled DATA, the re-ACKs of a gap
        in a window) gets one resend per interval, never one each (Sorcerer's Apprentice,
        RFC 1123 4.2.3.1), and not for the echo of a block we sent twice. Each counts as a
        retry: `retries` still bounds the resends of a block, and the last one is left to
        the timer, which expires the transfer."""
        if s.echo:
            s.echo = False
            return
        if s.retries >= self.retries or self._clock() - s.sent_at < max(1, s.timeout >> _NUDGE_SHIFT):
            return
        s.retries += 1
        s.resent = True
        self._stats["dupack_resends"] += 1
        self._send_window(s)

    def _on_timeout(self, s):
        s.retries += 1
        if s.retries > self.retries:
            self._stats["expired"] += 1
            self._end(s, "expired")
            return
        self._stats["retransmits"] += 1
        s.resent = True
        self._send_current(s)

    def _send_current(self, s):
        if s.oack is not None:
            self._sendto(s, s.oack, s.peer)
            self._schedule(s)
        else:
            self._send_window(s)

    def _send_window(self, s):
        """Send blocks acked+1 .. acked+windowsize (RFC 7440: a window restarts after the last ACK)."""
        last = min(s.acked + s.windowsize, s.nblocks)
        bs = s.blksize
        for block in range(s.acked + 1, last + 1):
            start = (block - 1) * bs
            self._sendto(s, _HEADER.pack(DATA, block & 0xFFFF) + s.data[start:start + bs], s.peer)
            self._stats["data_sent"] += 1
        s.sent_upto = last
        s.sent_at = self._clock()
        self._schedule(s)

    def _sendto(self, s, packet, addr):
        try:
            s.sock.sendto(packet, addr)
        except OSError:
            # A full socket buffer or an unreachable peer: the timer resends.
            self._stats["send_errors"] += 1

    def _schedule(self, s):
        if s.slot >= 0:
            self._wheel[s.slot].discard(s.sid)
        # Exponential backoff (1, 2, 4, then 8 timeouts): an overloaded path gets room.
        s.deadline = self._clock() + (s.timeout << min(s.retries, _MAX_BACKOFF))
        s.slot = s.deadline & (_WHEEL_SLOTS - 1)
        self._wheel[s.slot].add(s.sid)

    def _end(self, s, result):
        if self._sessions.pop(s.sid, None) is None:
            return
        if s.tag is not None:
            self._ended.append((s.tag, result, min(s.acked * s.blksize, s.size)))
        if s.slot >= 0:
            self._wheel[s.slot].discard(s.sid)
        del self._by_fd[s.fd]
        if s.key is not None and self._by_key.get(s.key) == s.sid:
            del self._by_key[s.key]
        try:
            self._epoll.unregister(s.fd)
        except OSError:
            pass
        s.sock.close()
        s.data.release()
        s.data = s.sock = None
        self._free.append(s.sid)


def _normal_peer(addr):
    """(host, port) of an IPv4 or IPv6 socket address, ignoring flow info."""
    return (addr[0], addr[1])
