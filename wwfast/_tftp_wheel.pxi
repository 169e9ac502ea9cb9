# The clock, the retransmission timer wheel and the end of a transfer, for the compiled TFTP session
# table (wwfast/_tftp.pyx): one hashed wheel of WHEEL_SLOTS ticks, each slot a doubly linked list kept
# in the table's wnext/wprev arrays. Module-level C functions on the table `t`; included into _tftp.pyx
# after the class (one compiled module); not a module of its own.

cdef int64_t clock_now(SessionTable t) noexcept:
    """Now, in ticks."""
    if t.clock is not None:
        return <int64_t>(t.clock() * 1e9) // t.tick_ns
    return monotonic_ns() // t.tick_ns


cdef int wheel_schedule(SessionTable t, int sid) except -1:
    cdef int s
    wheel_unlink(t, sid)
    # Exponential backoff (1, 2, 4, then 8 timeouts): an overloaded path gets room.
    t.deadline[sid] = clock_now(t) + (t.timeout_ticks[sid] << min(t.nretries[sid], MAX_BACKOFF))
    s = <int>(t.deadline[sid] & (WHEEL_SLOTS - 1))
    t.slot[sid] = s
    t.wprev[sid] = -1
    t.wnext[sid] = t.wheel[s]
    if t.wheel[s] >= 0:
        t.wprev[t.wheel[s]] = sid
    t.wheel[s] = sid
    return 0


cdef void wheel_unlink(SessionTable t, int sid) noexcept:
    cdef int s = t.slot[sid]
    if s < 0:
        return
    if t.wprev[sid] >= 0:
        t.wnext[t.wprev[sid]] = t.wnext[sid]
    else:
        t.wheel[s] = t.wnext[sid]
    if t.wnext[sid] >= 0:
        t.wprev[t.wnext[sid]] = t.wprev[sid]
    t.slot[sid] = -1
    t.wnext[sid] = -1
    t.wprev[sid] = -1


cdef int advance_wheel(SessionTable t) except -1:
    """Turn the wheel to now: every session whose deadline passed is retried or expired."""
    cdef int64_t now = clock_now(t)
    cdef int64_t tick, first = t.now_tick + 1
    cdef int sid, nxt, fired = 0
    if now - first >= WHEEL_SLOTS:
        first = now - WHEEL_SLOTS + 1
    tick = first
    while tick <= now:
        sid = t.wheel[tick & (WHEEL_SLOTS - 1)]
        while sid >= 0:
            nxt = t.wnext[sid]
            if t.deadline[sid] <= now:
                fired += 1
                on_timeout(t, sid)
            sid = nxt
        tick += 1
    if now > t.now_tick:
        t.now_tick = now
    return fired


cdef int on_timeout(SessionTable t, int sid) except -1:
    t.nretries[sid] += 1
    if t.nretries[sid] > t.retries:
        t.st_expired += 1
        end_session(t, sid, END_EXPIRED)
        return 0
    t.st_retransmits += 1
    t.flags[sid] |= RESENT
    send_current(t, sid)
    return 0


cdef int end_session(SessionTable t, int sid, int result) except -1:
    cdef int64_t acked_bytes
    if t.state[sid] == FREE:
        return 0
    tag = t.tags[sid]
    if tag is not None:
        t.tags[sid] = None
        acked_bytes = t.acked[sid] * t.blksize[sid]
        if acked_bytes > t.size[sid]:
            acked_bytes = t.size[sid]
        t.ended.append((tag, END_RESULTS[result], acked_bytes))
    wheel_unlink(t, sid)
    epoll_ctl(t.epfd, EPOLL_CTL_DEL, t.fd[sid], NULL)
    close(t.fd[sid])
    t.fd[sid] = -1
    t.state[sid] = FREE
    t.data[sid] = 0
    t.keep[sid] = None
    t.oacks[sid] = None
    key = t.keys[sid]
    if key is not None:
        t.keys[sid] = None
        if t.by_key.get(key) == sid:
            del t.by_key[key]
    t.free_ids[t.nfree] = sid
    t.nfree += 1
    t.nactive -= 1
    return 0


cdef int close_all(SessionTable t) except -1:
    cdef int sid
    for sid in range(t.capacity):
        if t.state[sid] != FREE:
            end_session(t, sid, END_CLOSED)
    return 0
