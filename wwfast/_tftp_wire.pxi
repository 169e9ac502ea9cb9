# The ACK -> DATA path of the compiled TFTP session table (wwfast/_tftp.pyx): read a session's packet,
# judge it, send the next window. Module-level C functions on the table `t` (direct calls, no vtable).
# Included into _tftp.pyx after the class (one compiled module); not a module of its own.

cdef int drain(SessionTable t, int sid) except -1:
    """Read one packet from a ready session's socket.

    One, not "until EAGAIN": in lock-step there is one ACK waiting, and the
    epoll set is level-triggered, so a second packet is reported by the next
    epoll_wait. That saves a failing recvfrom per packet.
    """
    cdef sockaddr_in6 src
    cdef socklen_t srclen = sizeof(sockaddr_in6)
    cdef ssize_t n = recvfrom(t.fd[sid], t.recv_buf, RECV_BYTES, MSG_DONTWAIT, <sockaddr *>&src, &srclen)
    if n < 0:
        return 0    # EAGAIN (or a socket error: the timer decides)
    on_packet(t, sid, t.recv_buf, n, &src, srclen)
    return 1


cdef bint same_peer(SessionTable t, int sid, sockaddr_in6 *src) noexcept:
    cdef sockaddr_in6 *p = <sockaddr_in6 *>&t.peer[sid, 0]
    cdef sockaddr_in *a
    cdef sockaddr_in *b
    if src.sin6_family != p.sin6_family or src.sin6_port != p.sin6_port:
        return False
    if p.sin6_family == AF_INET:
        a = <sockaddr_in *>src
        b = <sockaddr_in *>p
        return a.sin_addr.s_addr == b.sin_addr.s_addr
    return memcmp(&src.sin6_addr, &p.sin6_addr, 16) == 0


cdef int on_packet(SessionTable t, int sid, unsigned char *pkt, ssize_t n, sockaddr_in6 *src,
                   socklen_t srclen) except -1:
    cdef int opcode, block
    cdef int64_t base, delta
    if not same_peer(t, sid, src):
        t.st_wrong_tid += 1
        if sendto(t.fd[sid], UNKNOWN_TID, UNKNOWN_TID_LEN, MSG_DONTWAIT, <sockaddr *>src, srclen) < 0:
            t.st_send_errors += 1
        return 0
    if n < 2:
        t.st_malformed += 1
        return 0
    opcode = (pkt[0] << 8) | pkt[1]
    if opcode == 5:            # ERROR: the client gave up
        t.st_aborted += 1
        end_session(t, sid, END_ABORTED)
        return 0
    if opcode != 4:            # anything but an ACK from the peer ends the transfer
        t.st_malformed += 1
        send_raw(t, sid, ILLEGAL, ILLEGAL_LEN)
        end_session(t, sid, END_ILLEGAL)
        return 0
    if n < 4:
        t.st_malformed += 1
        return 0
    block = (pkt[2] << 8) | pkt[3]
    if t.state[sid] == OACK_SENT:
        if block == 0:
            t.state[sid] = SENDING
            t.oacks[sid] = None
            progress(t, sid)
            send_window(t, sid)
        else:
            t.st_duplicate_acks += 1
        return 0
    base = t.acked[sid]
    delta = (block - base) & 0xFFFF
    if delta == 0 or delta > t.sent_upto[sid] - base:
        t.st_duplicate_acks += 1
        if delta == 0:
            on_reack(t, sid)
        return 0
    t.acked[sid] = base + delta
    progress(t, sid)
    if t.acked[sid] >= t.nblocks[sid]:
        t.st_completed += 1
        end_session(t, sid, END_OK)
    else:
        send_window(t, sid)
    return 0


cdef void progress(SessionTable t, int sid) noexcept:
    """The client acknowledged something new. If what it acknowledged went out more than
    once, its second copy will draw a second ACK (the storm's nodes and iPXE re-ACK a
    duplicate): that echo is no news and must not start a resend, or every block after
    would go out twice, one duplicate drawing the next (Sorcerer's Apprentice)."""
    t.nretries[sid] = 0
    t.flags[sid] = ECHO if t.flags[sid] & RESENT else 0


cdef int on_reack(SessionTable t, int sid) except -1:
    """The client ACKed again the block before those in flight: its retry timer fired, so
    what we sent was lost (or is late). Resend it, but only if it went out at least
    timeout/8 ago: a burst of duplicates (a late or doubled DATA, the re-ACKs of a gap
    in a window) gets one resend per interval, never one each (Sorcerer's Apprentice,
    RFC 1123 4.2.3.1), and not for the echo of a block we sent twice. Each counts as a
    retry: `retries` still bounds the resends of a block, and the last one is left to
    the timer, which expires the transfer."""
    cdef int64_t guard = t.timeout_ticks[sid] >> NUDGE_SHIFT
    if t.flags[sid] & ECHO:
        t.flags[sid] &= ~ECHO
        return 0
    if guard < 1:
        guard = 1
    if t.nretries[sid] >= t.retries or clock_now(t) - t.sent_at[sid] < guard:
        return 0
    t.nretries[sid] += 1
    t.flags[sid] |= RESENT
    t.st_dupack_resends += 1
    send_window(t, sid)
    return 0


cdef int send_raw(SessionTable t, int sid, const unsigned char *buf, size_t n) except -1:
    cdef sockaddr_in6 *p = <sockaddr_in6 *>&t.peer[sid, 0]
    cdef socklen_t plen = sizeof(sockaddr_in) if p.sin6_family == AF_INET else sizeof(sockaddr_in6)
    if sendto(t.fd[sid], buf, n, MSG_DONTWAIT, <sockaddr *>p, plen) < 0:
        t.st_send_errors += 1   # a full buffer or an unreachable peer: the timer resends
    return 0


cdef int send_current(SessionTable t, int sid) except -1:
    cdef bytes oack
    if t.state[sid] == OACK_SENT:
        oack = t.oacks[sid]
        send_raw(t, sid, <const unsigned char *>oack, len(oack))
        wheel_schedule(t, sid)
    else:
        send_window(t, sid)
    return 0


cdef int send_window(SessionTable t, int sid) except -1:
    """Send blocks acked+1 .. acked+windowsize in one sendmmsg (RFC 7440 window)."""
    cdef int64_t first = t.acked[sid] + 1
    cdef int64_t last = t.acked[sid] + t.windowsize[sid]
    cdef int64_t block, start, end_, size = t.size[sid]
    cdef int64_t bs = t.blksize[sid]
    cdef const unsigned char *data = <const unsigned char *>t.data[sid]
    cdef sockaddr_in6 *p = <sockaddr_in6 *>&t.peer[sid, 0]
    cdef socklen_t plen = sizeof(sockaddr_in) if p.sin6_family == AF_INET else sizeof(sockaddr_in6)
    cdef int i = 0, sent
    if last > t.nblocks[sid]:
        last = t.nblocks[sid]
    block = first
    while block <= last:
        start = (block - 1) * bs
        end_ = start + bs
        if end_ > size:
            end_ = size
        t.headers[4 * i] = 0
        t.headers[4 * i + 1] = 3
        t.headers[4 * i + 2] = (block >> 8) & 0xFF
        t.headers[4 * i + 3] = block & 0xFF
        t.iov[2 * i].iov_base = &t.headers[4 * i]
        t.iov[2 * i].iov_len = 4
        t.iov[2 * i + 1].iov_base = <void *>(data + start) if end_ > start else NULL
        t.iov[2 * i + 1].iov_len = end_ - start
        memset(&t.msgs[i], 0, sizeof(mmsghdr))
        t.msgs[i].msg_hdr.msg_name = p
        t.msgs[i].msg_hdr.msg_namelen = plen
        t.msgs[i].msg_hdr.msg_iov = &t.iov[2 * i]
        t.msgs[i].msg_hdr.msg_iovlen = 2
        i += 1
        block += 1
    sent = sendmmsg(t.fd[sid], t.msgs, i, MSG_DONTWAIT)
    if sent < i:
        t.st_send_errors += i - (sent if sent > 0 else 0)
    t.st_data_sent += i
    t.sent_upto[sid] = last
    t.sent_at[sid] = clock_now(t)
    wheel_schedule(t, sid)
    return 0
