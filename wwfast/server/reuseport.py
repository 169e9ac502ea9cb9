"""The listening sockets of `serve --workers N`: one SO_REUSEPORT socket per worker slot, per protocol.

The supervisor binds them all before any worker starts (a busy port fails at once) and keeps them
open for its whole life; worker i serves slot i's sockets. So a worker that dies takes no socket out
of the group: connections and TFTP requests the kernel gives its slot wait in that socket's queue
for the restarted worker (no reset), and the other slots' share never moves.

Which slot a client lands on: a classic BPF program on the group picks `slot_of(source port, N)`, a
multiplicative hash of the port (not the port itself: Linux gives connect() even ports only, so
`port % 2` would send every TCP client to one worker). The kernel's own choice is a hash of the
addresses and ports with a random seed; this one spreads alike and is deterministic, so a
retransmitted TFTP request finds the worker that started its transfer even after a restart, and tests
choose a worker with `curl --local-port` or `tftp -R`.
When the program cannot be attached the kernel's hash is used (logged).
"""
import ctypes
import logging
import socket
import struct

log = logging.getLogger("wwfast.serve")

SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = (-0x100000) & 0xFFFFFFFF     # classic BPF: offsets from the network header


GOLDEN = 0x9E3779B1        # multiplicative hashing: spreads the even-only ports Linux gives connect()


def slot_of(port, n):
    """The worker slot the steering program gives a client with source `port` (of `n`)."""
    return (((port * GOLDEN) & 0xFFFFFFFF) >> 16) % n


def _steering_program(n):
    """cBPF for slot_of(source port, n), reading the port behind an IPv4 header (any length) or IPv6's 40 bytes."""
    ld_b_abs, rsh_k, jeq_k, ldx_msh, ld_h_ind, ja, ld_h_abs, mul_k, mod_k, ret_a = (
        0x30, 0x74, 0x15, 0xb1, 0x48, 0x05, 0x28, 0x24, 0x94, 0x16)
    insns = [
        (ld_b_abs, 0, 0, SKF_NET_OFF),        # 0: A = first byte of the IP header
        (rsh_k, 0, 0, 4),                     # 1: A = IP version
        (jeq_k, 3, 0, 6),                     # 2: IPv6: to 6
        (ldx_msh, 0, 0, SKF_NET_OFF),         # 3: X = IPv4 header length
        (ld_h_ind, 0, 0, SKF_NET_OFF),        # 4: A = source port (first half-word of UDP/TCP)
        (ja, 0, 0, 1),                        # 5: to 7
        (ld_h_abs, 0, 0, SKF_NET_OFF + 40),   # 6: IPv6: source port after the 40-byte header
        (mul_k, 0, 0, GOLDEN),                # 7: hash
        (rsh_k, 0, 0, 16),
        (mod_k, 0, 0, n),
        (ret_a, 0, 0, 0),
    ]
    return b"".join(struct.pack("=HBBI", *insn) for insn in insns)


def steer_by_source_port(sock, n):
    """Attach the slot-choosing program to `sock`'s reuseport group; False (logged) when refused."""
    code = _steering_program(n)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("@HP", len(code) // 8, ctypes.addressof(buf))
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
    except OSError as e:
        log.warning("cannot steer %s clients by source port (%s); the kernel's hash picks the worker",
                    "TCP" if sock.type == socket.SOCK_STREAM else "UDP", e)
        return False
    return True


def _family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind_group(kind, host, port, n, backlog=4096):
    """`n` sockets of `kind` (socket.SOCK_STREAM listening, or SOCK_DGRAM) sharing (host, port);
    port 0 picks a free port for all. Raises OSError naming the address when it is busy."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(_family(host), kind)
            socks.append(s)
            if kind == socket.SOCK_STREAM:      # (UDP: REUSEADDR would let any socket share the port)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            if kind == socket.SOCK_STREAM:
                s.listen(backlog)          # join the group now: slot order = listen order
            s.set_inheritable(True)
    except OSError as e:
        for s in socks:
            s.close()
        what = "TCP" if kind == socket.SOCK_STREAM else "UDP"
        raise OSError(e.errno, f"cannot bind {what} {host}:{port}: {e.strerror}") from None
    if n > 1:
        steer_by_source_port(socks[0], n)
    return socks
