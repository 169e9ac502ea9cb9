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
"""
import os

FRACTION = 4                    # of tcp_mem's pressure threshold, for all of serve
MIN_SHARE = 512 << 10           # kernel-side bytes (what SO_SNDBUF becomes: twice the value set)
STEP = 64 << 10                 # shares move in steps, so a transfer more or less changes no socket


def _read_ints(path):
    with open(path) as f:
        return [int(v) for v in f.read().split()]


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
    `settable`: the largest SO_SNDBUF value an unprivileged process may set (net.core.wmem_max)."""

    def __init__(self, total, ceiling=4 << 20, settable=4 << 20):
        self.total = total
        self.ceiling = ceiling
        self.settable = settable

    @classmethod
    def for_process(cls, workers, total_mb=None, limits=None):
        """This process's budget: `total_mb` (serve --send-budget; 0 turns the cap off) or, by default,
        a quarter of the kernel's pressure threshold; split evenly among `workers`."""
        limits = limits if limits is not None else kernel_limits()
        if limits is None or total_mb == 0:
            return cls(None)
        pressure, ceiling, settable = limits
        total = int(total_mb * (1 << 20)) if total_mb is not None else pressure // FRACTION
        return cls(total // max(1, workers), ceiling, settable)

    def share(self, transfers):
        """The SO_SNDBUF value for each of `transfers` concurrent transfers, or None when the budget
        covers them all at the kernel's own maximum (leave the kernel to size the buffer)."""
        if self.total is None:
            return None
        per = self.total // max(1, transfers)
        if per >= self.ceiling:
            return None
        per = max(MIN_SHARE, per - per % STEP)
        return min(per // 2, self.settable)      # the kernel doubles the value for its bookkeeping

    def uncapped(self):
        """The value that gives a connection back the kernel's own maximum after it was capped."""
        return min(self.ceiling // 2, self.settable)
