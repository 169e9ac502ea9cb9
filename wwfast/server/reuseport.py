"""The listening sockets of `serve --workers N`: one SO_REUSEPORT socket per worker slot, per protocol.

The supervisor binds them all before any worker starts (a busy port fails at once) and keeps them
open for its whole life; worker i serves slot i's sockets. So a worker that dies takes no socket out
of the group: connections and TFTP requests the kernel gives its slot wait in that socket's queue
for the restarted worker (no reset), and the other slots' share never moves.

Which slot a client lands on: a classic BPF program on the group picks `source port % N` (the
kernel's own choice is a hash of the addresses and ports). For real clients the two spread alike;
this one is deterministic, so a retransmitted TFTP request finds the worker that started its
transfer even after a restart, and tests choose a worker with `curl --local-port` or `tftp -R`.
When the program cannot be attached the kernel's hash is used (logged).
"""
import ctypes
import logging
import socket
import struct

log = logging.getLogger("wwfast.serve")

SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = (-0x100000) & 0xFFFFFFFF     # classic BPF: offsets from the network header


def _steering_program(n):
    """cBPF: slot = source port % n, reading the port behind an IPv4 header (any length) or IPv6's 40 bytes."""
    ld_b_abs, rsh_k, jeq_k, ldx_msh, ld_h_ind, mod_k, ret_a, ld_h_abs = (
        0x30, 0x74, 0x15, 0xb1, 0x48, 0x94, 0x16, 0x28)
    insns = [
        (ld_b_abs, 0, 0, SKF_NET_OFF),        # A = first byte of the IP header
        (rsh_k, 0, 0, 4),                     # A = IP version
        (jeq_k, 4, 0, 6),                     # IPv6: jump to the fixed offset below
        (ldx_msh, 0, 0, SKF_NET_OFF),         # X = IPv4 header length
        (ld_h_ind, 0, 0, SKF_NET_OFF),        # A = source port (first half-word of UDP/TCP)
        (mod_k, 0, 0, n),
        (ret_a, 0, 0, 0),
        (ld_h_abs, 0, 0, SKF_NET_OFF + 40),   # IPv6: source port after the 40-byte header
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
