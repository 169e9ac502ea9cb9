# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""TFTP session table (compiled twin of _tftp_py): the per-packet path of every transfer.

Same API and behaviour as the pure twin. The table is a set of numpy arrays read
and written through typed memoryviews (no Python object per session beyond the
buffer it sends from); each transfer's socket is created, read and written with
plain syscalls on its fd; one epoll set carries the session id of every socket;
a window of DATA goes out in one sendmmsg() straight from the file's buffer; one
hashed timer wheel (linked lists in arrays) drives retransmission, and a client's
re-ACK of the block before the one in flight resends it at once when it went out at
least timeout/8 ago (one resend per interval: no Sorcerer's Apprentice). Nothing on
the ACK -> DATA path touches a Python object.

The class holds the table and the Python API; the ACK -> DATA path is in _tftp_wire.pxi,
the clock, timer wheel and end of a transfer in _tftp_wheel.pxi, the C declarations in
_tftp_sys.pxi: all included here, one compiled module.
"""
import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t, intptr_t
from libc.string cimport memcpy, memcmp, memset
from libc.stdlib cimport malloc, free
from libc.errno cimport errno, EINTR
from posix.unistd cimport close

from wwfast._tftp_codec import (  # noqa: F401  (re-exported: the facade's API)
    ACK, DATA, DEFAULT_BLKSIZE, ERR_ACCESS, ERR_DISK_FULL, ERR_EXISTS, ERR_ILLEGAL, ERR_NO_USER,
    ERR_NOT_FOUND, ERR_OPTIONS, ERR_UNDEFINED, ERR_UNKNOWN_TID, ERROR, MAX_BLKSIZE, MAX_WINDOWSIZE,
    MIN_BLKSIZE, MODES, OACK, RRQ, WRQ, Request, TftpError, build_ack, build_data, build_error,
    build_oack, negotiate, parse_request, to_netascii)
from wwfast._tftp_codec import MAX_WINDOWSIZE as _MAX_WINDOW_PY

include "_tftp_sys.pxi"

cdef enum:
    WHEEL_SLOTS = 4096        # power of two; deadlines beyond one lap wait for their lap
    EVENTS = 512
    MAX_WINDOW = 64           # == _tftp_codec.MAX_WINDOWSIZE
    PEER_BYTES = 28           # sizeof(struct sockaddr_in6)
    MAX_BACKOFF = 3           # a retry waits timeout << min(retries, 3)
    NUDGE_SHIFT = 3           # a re-ACK resends what went out at least timeout >> 3 ago
    RECV_BYTES = 65536

STAT_NAMES = ("started", "completed", "expired", "aborted", "data_sent", "retransmits", "duplicate_requests",
              "first_resends",
              "duplicate_acks", "dupack_resends", "wrong_tid", "malformed", "send_errors")
# How a transfer ended, as finished() reports it (index = the END_* code below)
END_RESULTS = ("ok", "expired", "aborted", "illegal", "closed")

cdef enum:
    END_OK = 0          # the last block was acknowledged
    END_EXPIRED = 1     # no ACK after every retry
    END_ABORTED = 2     # the client sent an ERROR
    END_ILLEGAL = 3     # the client sent something other than an ACK
    END_CLOSED = 4      # the table was closed with the transfer in flight

cdef enum:
    RESENT = 1          # what is in flight went out more than once
    ECHO = 2            # ... and was acknowledged: the next duplicate ACK is its second copy's

cdef enum:
    FREE = 0
    OACK_SENT = 1       # waiting for ACK 0
    SENDING = 2

assert _MAX_WINDOW_PY == MAX_WINDOW

cdef unsigned char UNKNOWN_TID[24]
cdef int UNKNOWN_TID_LEN
cdef unsigned char ILLEGAL[28]
cdef int ILLEGAL_LEN

cdef bytes _tid = build_error(ERR_UNKNOWN_TID, "unknown transfer ID")
cdef bytes _ill = build_error(ERR_ILLEGAL, "illegal TFTP operation")
assert len(_tid) <= 24 and len(_ill) <= 28
UNKNOWN_TID_LEN = len(_tid)
ILLEGAL_LEN = len(_ill)
memcpy(UNKNOWN_TID, <const char *>_tid, UNKNOWN_TID_LEN)
memcpy(ILLEGAL, <const char *>_ill, ILLEGAL_LEN)


def _grown(arr, int old, int new_capacity, dtype, fill):
    """A copy of one column of the table, `new_capacity` long, new rows set to `fill`."""
    out = np.full(new_capacity, fill, dtype=dtype)
    if old:
        out[:old] = np.asarray(arr)[:old]
    return out


cdef inline int64_t monotonic_ns() noexcept nogil:
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <int64_t>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef class SessionTable:
    # configuration
    cdef public str bind_host
    cdef public int family
    cdef public double timeout
    cdef public int retries
    cdef public double tick
    cdef public object log
    cdef object clock                   # None: CLOCK_MONOTONIC; else seconds from a callable (tests hold it)
    cdef int64_t tick_ns
    cdef int epfd
    cdef sockaddr_in6 bind_addr
    cdef socklen_t addr_len
    # the session table: struct of arrays (numpy), through typed memoryviews
    cdef int capacity
    cdef int nactive
    cdef int8_t[::1] state
    cdef int8_t[::1] flags              # RESENT | ECHO (see progress() in _tftp_wire.pxi)
    cdef int32_t[::1] fd, blksize, windowsize, timeout_ticks, nretries, slot, wnext, wprev
    cdef int64_t[::1] size, nblocks, acked, sent_upto, deadline, sent_at
    cdef intptr_t[::1] data
    cdef uint8_t[:, ::1] peer
    cdef int32_t[::1] free_ids
    cdef int nfree
    cdef list keep, oacks, keys, tags   # per session: the buffer kept alive, its OACK, its dedupe key, its tag
    cdef list ended                     # (tag, result, bytes acknowledged) of tagged transfers that ended
    cdef dict by_key
    # the timer wheel
    cdef int32_t[::1] wheel
    cdef int64_t now_tick
    # preallocated I/O state
    cdef unsigned char *recv_buf
    cdef unsigned char headers[MAX_WINDOW * 4]
    cdef iovec iov[MAX_WINDOW * 2]
    cdef mmsghdr msgs[MAX_WINDOW]
    cdef epoll_event events[EVENTS]
    # statistics
    cdef int64_t st_started, st_completed, st_expired, st_aborted, st_data_sent, st_retransmits
    cdef int64_t st_duplicate_acks, st_wrong_tid, st_malformed, st_send_errors
    cdef int64_t st_duplicate_requests, st_first_resends, st_dupack_resends

    def __cinit__(self):
        self.epfd = -1
        self.recv_buf = NULL

    def __init__(self, bind_host="0.0.0.0", timeout=1.0, retries=5, tick=0.01, capacity=1024, log=None,
                 clock=None):
        self.bind_host = bind_host or "0.0.0.0"
        self.clock = clock
        self.family = AF_INET6 if ":" in self.bind_host else AF_INET
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.tick = float(tick)
        self.tick_ns = max(1, <int64_t>(self.tick * 1e9))
        self.log = log
        self.addr_len = self._sockaddr(self.bind_host, 0, &self.bind_addr)
        self.epfd = epoll_create1(EPOLL_CLOEXEC)
        if self.epfd < 0:
            raise OSError(errno, "epoll_create1 failed")
        self.recv_buf = <unsigned char *>malloc(RECV_BYTES)
        if self.recv_buf == NULL:
            raise MemoryError()
        self.capacity = 0
        self.nactive = 0
        self.nfree = 0
        self.keep, self.oacks, self.keys, self.tags = [], [], [], []
        self.ended = []
        self.by_key = {}
        self.wheel = np.full(WHEEL_SLOTS, -1, dtype=np.int32)
        self.now_tick = clock_now(self)
        self._grow(max(16, int(capacity)))

    def __dealloc__(self):
        if self.epfd >= 0:
            close_all(self)
            close(self.epfd)
            self.epfd = -1
        if self.recv_buf != NULL:
            free(self.recv_buf)
            self.recv_buf = NULL

    # -- public API ------------------------------------------------------------------------
    def fileno(self):
        return self.epfd

    @property
    def active(self):
        return self.nactive

    def stats(self):
        values = (self.st_started, self.st_completed, self.st_expired, self.st_aborted,
                  self.st_data_sent, self.st_retransmits, self.st_duplicate_requests, self.st_first_resends,
                  self.st_duplicate_acks, self.st_dupack_resends, self.st_wrong_tid,
                  self.st_malformed, self.st_send_errors)
        out = dict(zip(STAT_NAMES, values))
        out["active"] = self.nactive
        return out

    def start(self, peer, data, blksize=DEFAULT_BLKSIZE, windowsize=1, timeout=0, oack=None, key=None, tag=None):
        """Open a transfer of `data` (a buffer) to `peer` and send its first packet.

        Returns the session id, or -1 when `key` names a transfer in flight (the client
        retransmitted its RRQ). If that transfer's first packet (OACK, or DATA 1 without
        options) is not acknowledged yet, it is resent at once: the client's RRQ timer
        (iPXE: 250 ms) says it lacks it, and our own timer would wait a whole timeout.
        Raises OSError when no socket can be had (the caller answers "busy").
        A transfer with a `tag` (not None) is reported by finished() when it ends.
        """
        cdef int sid, sock
        cdef sockaddr_in6 addr
        cdef epoll_event ev
        cdef const unsigned char[::1] view
        if key is not None and key in self.by_key:
            # A retransmitted RRQ (maybe queued behind a burst while its transfer already
            # runs): never restart the transfer the client is bound to.
            self.st_duplicate_requests += 1
            sid = self.by_key[key]
            if self.state[sid] == OACK_SENT or self.acked[sid] == 0:
                self.st_first_resends += 1
                self.flags[sid] |= RESENT
                send_current(self, sid)
            return -1
        self._sockaddr(peer[0], peer[1], &addr)
        if self.epfd < 0:
            raise OSError("session table is closed")
        sock = socket(self.family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)
        if sock < 0:
            raise OSError(errno, "cannot open a transfer socket")
        if bind(sock, <sockaddr *>&self.bind_addr, self.addr_len) < 0:
            err = errno
            close(sock)
            raise OSError(err, "cannot bind a transfer socket")
        if self.nfree == 0:
            self._grow(self.capacity * 2)
        self.nfree -= 1
        sid = self.free_ids[self.nfree]
        ev.events = EPOLLIN
        ev.data.u64 = 0
        ev.data.u32 = <uint32_t>sid
        if epoll_ctl(self.epfd, EPOLL_CTL_ADD, sock, &ev) < 0:
            err = errno
            close(sock)
            self.nfree += 1
            raise OSError(err, "epoll_ctl failed")
        view = memoryview(data).cast("B") if len(data) else b""
        self.keep[sid] = view
        self.data[sid] = <intptr_t>&view[0] if view.shape[0] else 0
        self.size[sid] = view.shape[0]
        self.fd[sid] = sock
        memcpy(&self.peer[sid, 0], &addr, PEER_BYTES)
        self.blksize[sid] = int(blksize)
        self.windowsize[sid] = max(1, min(MAX_WINDOW, int(windowsize)))
        self.timeout_ticks[sid] = max(1, round((timeout or self.timeout) / self.tick))
        self.nblocks[sid] = self.size[sid] // self.blksize[sid] + 1   # the last block is short, maybe empty
        self.acked[sid] = 0
        self.sent_upto[sid] = 0
        self.nretries[sid] = 0
        self.flags[sid] = 0
        self.sent_at[sid] = 0
        self.slot[sid] = -1
        self.oacks[sid] = oack
        self.keys[sid] = key
        self.tags[sid] = tag
        self.state[sid] = OACK_SENT if oack is not None else SENDING
        if key is not None:
            self.by_key[key] = sid
        self.nactive += 1
        self.st_started += 1
        send_current(self, sid)
        return sid

    def poll(self):
        """Read every pending packet of every ready session; returns the packets handled."""
        cdef int n, i, sid, handled = 0, rounds = 0
        while rounds < 8:
            n = epoll_wait(self.epfd, self.events, EVENTS, 0)
            if n <= 0:
                break
            for i in range(n):
                sid = <int>self.events[i].data.u32
                if sid < self.capacity and self.state[sid] != FREE:
                    handled += drain(self, sid)
            rounds += 1
            if n < EVENTS:
                break
        advance_wheel(self)
        return handled

    def advance(self):
        """Turn the timer wheel to now: retransmit or drop the sessions that timed out."""
        return advance_wheel(self)

    def finished(self):
        """(tag, result, bytes acknowledged) of each tagged transfer that ended since the last call;
        result is one of END_RESULTS. Empty when none did."""
        if not self.ended:
            return ()
        out, self.ended = self.ended, []
        return out

    def close(self):
        if self.epfd >= 0:
            close_all(self)
            close(self.epfd)
            self.epfd = -1

    # -- internals -------------------------------------------------------------------------
    cdef socklen_t _sockaddr(self, host, port, sockaddr_in6 *out) except 0:
        cdef sockaddr_in *v4 = <sockaddr_in *>out
        memset(out, 0, sizeof(sockaddr_in6))
        raw = (host or ("::" if self.family == AF_INET6 else "0.0.0.0")).encode("ascii")
        if self.family == AF_INET:
            v4.sin_family = AF_INET
            v4.sin_port = htons(<uint16_t>int(port))
            if inet_pton(AF_INET, raw, &v4.sin_addr) != 1:
                raise ValueError(f"not an IPv4 address: {host!r}")
            return sizeof(sockaddr_in)
        out.sin6_family = AF_INET6
        out.sin6_port = htons(<uint16_t>int(port))
        if inet_pton(AF_INET6, raw.split(b"%")[0], &out.sin6_addr) != 1:
            raise ValueError(f"not an IPv6 address: {host!r}")
        return sizeof(sockaddr_in6)

    cdef _grow(self, int new_capacity):
        cdef int old = self.capacity
        self.state = _grown(self.state if old else None, old, new_capacity, np.int8, 0)
        self.flags = _grown(self.flags if old else None, old, new_capacity, np.int8, 0)
        self.fd = _grown(self.fd if old else None, old, new_capacity, np.int32, -1)
        self.blksize = _grown(self.blksize if old else None, old, new_capacity, np.int32, 0)
        self.windowsize = _grown(self.windowsize if old else None, old, new_capacity, np.int32, 0)
        self.timeout_ticks = _grown(self.timeout_ticks if old else None, old, new_capacity, np.int32, 0)
        self.nretries = _grown(self.nretries if old else None, old, new_capacity, np.int32, 0)
        self.slot = _grown(self.slot if old else None, old, new_capacity, np.int32, -1)
        self.wnext = _grown(self.wnext if old else None, old, new_capacity, np.int32, -1)
        self.wprev = _grown(self.wprev if old else None, old, new_capacity, np.int32, -1)
        self.size = _grown(self.size if old else None, old, new_capacity, np.int64, 0)
        self.nblocks = _grown(self.nblocks if old else None, old, new_capacity, np.int64, 0)
        self.acked = _grown(self.acked if old else None, old, new_capacity, np.int64, 0)
        self.sent_upto = _grown(self.sent_upto if old else None, old, new_capacity, np.int64, 0)
        self.deadline = _grown(self.deadline if old else None, old, new_capacity, np.int64, 0)
        self.sent_at = _grown(self.sent_at if old else None, old, new_capacity, np.int64, 0)
        self.data = _grown(self.data if old else None, old, new_capacity, np.intp, 0)
        peer = np.zeros((new_capacity, PEER_BYTES), dtype=np.uint8)
        if old:
            peer[:old] = np.asarray(self.peer)
        self.peer = peer
        free_ids = np.zeros(new_capacity, dtype=np.int32)
        if old:
            free_ids[:self.nfree] = np.asarray(self.free_ids)[:self.nfree]
        # hand out low ids first: the stack pops from the end
        free_ids[self.nfree:self.nfree + new_capacity - old] = np.arange(new_capacity - 1, old - 1, -1,
                                                                         dtype=np.int32)
        self.nfree += new_capacity - old
        self.free_ids = free_ids
        self.keep.extend([None] * (new_capacity - old))
        self.oacks.extend([None] * (new_capacity - old))
        self.keys.extend([None] * (new_capacity - old))
        self.tags.extend([None] * (new_capacity - old))
        self.capacity = new_capacity


include "_tftp_wire.pxi"
include "_tftp_wheel.pxi"
