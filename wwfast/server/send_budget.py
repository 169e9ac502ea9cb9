"""How much socket send memory serve's HTTP transfers may hold together, and each one's share of it.

Linux sizes a TCP send buffer by itself, up to tcp_wmem's maximum (4 MiB by default). With a thousand
transfers at once that asks for gigabytes: past tcp_mem's pressure threshold the kernel enters TCP
memory pressure for the whole machine, shrinks buffers, receivers prune and drop, and transfers stall
in retransmission back-off. (bench_http, 1,000 keep-alive downloads on one kernel: 10,000-45,000 prunes
and 25,000-70,000 retransmitted segments per 6 s run, and throughput anywhere between 3.6 and 7.8 GB/s.)

So serve keeps its transfers under a budget, by default a quarter of the pressure threshold split
evenly among its workers. While the budget covers every transfer at the kernel's own maximum nothing
changes (the kernel keeps sizing buffers); past that each transfer's connection gets SO_SNDBUF set to
its share, never below MIN_SHARE: room for a whole iPXE receive window (256 KiB) in flight and as much
again queued behind it, which also fills a LAN path (512 KiB per 100 us round trip is 5 GB/s).

SO_SNDBUF is clipped to net.core.wmem_max (212,992 on a stock kernel, which would hold the floor to
416 KiB and give a released connection 416 KiB instead of the kernel's 4 MiB for the rest of its life).
serve usually runs as root, and then sets SO_SNDBUFFORCE, which CAP_NET_ADMIN may set past wmem_max;
without that capability it falls back to SO_SNDBUF and the clip.
"""
import os
import socket

SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)   # Linux; Python does not name it

FRACTION = 4                    # of tcp_mem's pressure threshold, for all of serve
MIN_SHARE = 512 << 10           # kernel-side bytes (what SO_SNDBUF becomes: twice the value set)
STEP = 64 << 10                 # shares move in steps, so a transfer more or less changes no socket


def _read_ints(path):
    with open(path) as f:
        return [int(v) for v in f.read().split()]


def may_force():
    """Whether this process may set SO_SNDBUFFORCE (CAP_NET_ADMIN), tried on a socket of its own."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 1 << 20)
    except OSError:
        return False
    return True


def kernel_limits(proc="/proc/sys/net"):
    """(tcp_mem's pressure threshold, tcp_wmem's maximum, net.core.wmem_max) in bytes, or None when the
    kernel does not say (not Linux, or /proc hidden)."""
    try:
        pressure = _read_ints(os.path.join(proc, "ipv4/tcp_mem"))[1] * os.sysconf("SC_PAGE_SIZE")
        tcp_wmem_max = _read_ints(os.path.join(proc, "ipv4/tcp_wmem"))[2]
        core_wmem_max = _read_ints(os.path.join(proc, "core/wmem_max"))[0]
    except (OSError, ValueError, IndexError):
        return None
    return pressure, tcp_wmem_max, core_wmem_max


class SendBudget:
    """`total`: kernel-side send-buffer bytes this process's transfers may hold together (None: no cap).
    `ceiling`: the most the kernel would give one socket by itself (tcp_wmem's maximum).
    `settable`: the largest SO_SNDBUF value an unprivileged process may set (net.core.wmem_max).
    `force`: this process may set SO_SNDBUFFORCE, so `settable` does not clip its values."""

    def __init__(self, total, ceiling=4 << 20, settable=4 << 20, force=False):
        self.total = total
        self.ceiling = ceiling
        self.settable = settable
        self.force = force
        self.option = SO_SNDBUFFORCE if force else socket.SO_SNDBUF     # what setsockopt sets

    @classmethod
    def for_process(cls, workers, total_mb=None, limits=None, force=None):
        """This process's budget: `total_mb` (serve --send-budget; 0 turns the cap off) or, by default,
        a quarter of the kernel's pressure threshold; split evenly among `workers`. `force`: None
        tries whether this process may set SO_SNDBUFFORCE."""
        limits = limits if limits is not None else kernel_limits()
        if limits is None or total_mb == 0:
            return cls(None)
        pressure, ceiling, settable = limits
        total = int(total_mb * (1 << 20)) if total_mb is not None else pressure // FRACTION
        force = may_force() if force is None else force
        return cls(total // max(1, workers), ceiling, settable, force)

    def share(self, transfers):
        """The SO_SNDBUF value for each of `transfers` concurrent transfers, or None when the budget
        covers them all at the kernel's own maximum (leave the kernel to size the buffer)."""
        if self.total is None:
            return None
        per = self.total // max(1, transfers)
        if per >= self.ceiling:
            return None
        per = max(MIN_SHARE, per - per % STEP)
        return self._settable(per // 2)            # the kernel doubles the value for its bookkeeping

    def uncapped(self):
        """The value that gives a connection back the kernel's own maximum after it was capped."""
        return self._settable(self.ceiling // 2)

    def _settable(self, value):
        return value if self.force else min(value, self.settable)
