"""A client's re-ACK (its retry timer fired) gets the lost DATA back at once, at most once per interval.

The core's timer clock is a value the test sets (`clock=`): its retransmit timer never fires unless the
test moves the clock past it, and "how long ago was that block sent" is exactly what the test says. Each
step waits for the server's own counters (its record that it handled what we sent); what it sent is
then already in our socket's buffer (loopback), so reading it without waiting is exact.
"""
import os
import subprocess
import time

import pytest

from test_tftp_loss import LossyRelay
from tftp_support import ServerThread, ack, client_socket, decode, rrq, twin_params

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

TIMEOUT = 1.0       # the server's timeout: 100 ticks of 10 ms, so the re-ACK guard is 12 ticks (125 ms)
T0 = 100.005        # half a tick clear of a tick boundary: float rounding cannot move a tick


class SetClock:
    def __init__(self, t):
        self.t = t

    def __call__(self):
        return self.t


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    (root / "f5000").write_bytes(os.urandom(5000))
    (root / "boot.bin").write_bytes(os.urandom(60_000))
    return root


def until(server, name, value, backstop=30):
    deadline = time.monotonic() + backstop
    while (stats := server.stats())[name] < value:
        assert time.monotonic() < deadline, f"{name} never reached {value}: {stats}"
        time.sleep(0.005)
    return stats


def pending(s):
    """(opcode, block) of every packet waiting in the client's socket."""
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(decode(s.recvfrom(70000)[0])[:2])
    except BlockingIOError:
        pass
    s.settimeout(30)
    return out


def settled(server):
    """The server's counters, read on its own thread: whatever it was doing when it sent what we got
    (noting the send time, arming the timer) is done, so the test may move the clock."""
    return server.stats()


def reack(server, s, tid, block, times=1):
    """Send `times` copies of ACK `block`; return the server's counters once it handled them all."""
    before = server.stats()["duplicate_acks"]
    for _ in range(times):
        s.sendto(ack(block), tid)
    return until(server, "duplicate_acks", before + times)


@pytest.mark.parametrize("core", twin_params())
def test_lost_data_is_resent_on_reack_after_the_guard_and_once_per_burst(root, core):
    clock = SetClock(T0)
    with ServerThread(root, core, timeout=TIMEOUT, retries=3, clock=clock) as server:
        s = client_socket(30)
        s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
        packet, tid = s.recvfrom(1000)
        got = packet[4:]
        s.sendto(ack(1), tid)
        packet, _ = s.recvfrom(1000)                 # DATA 2, sent at T0: say it was lost
        assert decode(packet)[:2] == (3, 2)
        data2 = packet[4:]
        start = settled(server)

        stats = reack(server, s, tid, 1, times=3)    # re-ACKs at once (a doubled DATA 1, say): too soon
        assert stats["dupack_resends"] == start["dupack_resends"] and pending(s) == []
        clock.t = T0 + 0.11                          # 11 ticks: still within the guard
        stats = reack(server, s, tid, 1)
        assert stats["dupack_resends"] == start["dupack_resends"] and pending(s) == []

        clock.t = T0 + 0.12                          # 12 ticks: the client's timer fired, a burst of 5
        stats = reack(server, s, tid, 1, times=5)
        assert stats["dupack_resends"] == start["dupack_resends"] + 1, stats
        assert pending(s) == [(3, 2)]                # DATA 2 once, not once per duplicate
        assert stats["data_sent"] == start["data_sent"] + 1
        assert stats["retransmits"] == start["retransmits"]       # the timer never fired

        clock.t = T0 + 0.23                          # since that resend: 11 ticks, then 12
        reack(server, s, tid, 1)
        assert pending(s) == []
        clock.t = T0 + 0.24
        stats = reack(server, s, tid, 1)
        assert pending(s) == [(3, 2)] and stats["dupack_resends"] == start["dupack_resends"] + 2

        got += data2                                 # the rest in lock-step, byte-exact
        have = 2
        while len(got) < 5000:
            s.sendto(ack(have), tid)
            opcode, block, data = decode(s.recvfrom(1000)[0])
            assert (opcode, block) == (3, have + 1)
            got, have = got + data, block
        s.sendto(ack(have), tid)
        assert got == (root / "f5000").read_bytes()
        assert server.wait_idle(30), server.stats()
        assert server.stats()["completed"] == start["completed"] + 1


@pytest.mark.parametrize("core", twin_params())
def test_the_echo_of_a_doubled_block_starts_no_chain(root, core):
    """DATA 1 went out twice (late, not lost): the client ACKs each copy. The second ACK 1 comes long after
    DATA 2 went out, but it is the echo of the doubled DATA 1, not news: answering it would double DATA 2,
    whose echo would double DATA 3, and so on (Sorcerer's Apprentice at one resend per interval). It is
    absorbed; the next re-ACK is the client's timer again and gets DATA 2."""
    clock = SetClock(T0)
    with ServerThread(root, core, timeout=TIMEOUT, retries=3, clock=clock) as server:
        s = client_socket(30)
        s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
        _, tid = s.recvfrom(1000)
        settled(server)
        clock.t = T0 + 0.12
        reack(server, s, tid, 0)                     # the client's timer: DATA 1 again
        assert pending(s) == [(3, 1)]
        s.sendto(ack(1), tid)                        # the first copy's ACK: DATA 2
        assert decode(s.recvfrom(1000)[0])[:2] == (3, 2)
        settled(server)
        clock.t = T0 + 0.30                          # DATA 2 went out 18 ticks ago
        stats = reack(server, s, tid, 1)             # the second copy's ACK
        assert pending(s) == [] and stats["dupack_resends"] == 1, stats
        stats = reack(server, s, tid, 1)             # then the client's timer for DATA 2
        assert pending(s) == [(3, 2)] and stats["dupack_resends"] == 2, stats
        s.sendto(b"\0\5\0\0bye\0", tid)
        assert server.wait_idle(30)


@pytest.mark.parametrize("core", twin_params())
def test_reack_resends_the_whole_window(root, core):
    clock = SetClock(T0)
    with ServerThread(root, core, timeout=TIMEOUT, retries=3, clock=clock) as server:
        s = client_socket(30)
        s.sendto(rrq("f5000", windowsize="4"), ("127.0.0.1", server.port))
        packet, tid = s.recvfrom(1000)
        assert decode(packet)[0] == 6
        s.sendto(ack(0), tid)
        until(server, "data_sent", 4)
        assert pending(s) == [(3, 1), (3, 2), (3, 3), (3, 4)]
        stats = reack(server, s, tid, 0, times=3)    # the gap re-ACKs of a window that lost DATA 1: too soon
        assert pending(s) == [] and stats["dupack_resends"] == 0
        clock.t = T0 + 0.12
        stats = reack(server, s, tid, 0, times=3)
        assert pending(s) == [(3, 1), (3, 2), (3, 3), (3, 4)]
        assert stats["dupack_resends"] == 1 and stats["data_sent"] == 8, stats
        s.sendto(b"\0\5\0\0bye\0", tid)
        assert server.wait_idle(30)


@pytest.mark.parametrize("core", twin_params())
def test_reack_resends_count_as_retries_and_the_timer_still_expires(root, core):
    """`retries` bounds the resends of one block whoever asks: past it a re-ACK gets nothing, and the
    timer ends the transfer (a block that never gets through, e.g. too big for the path)."""
    clock = SetClock(T0)
    with ServerThread(root, core, timeout=TIMEOUT, retries=3, clock=clock) as server:
        s = client_socket(30)
        s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
        _, tid = s.recvfrom(1000)
        settled(server)
        for i in range(1, 5):
            clock.t = T0 + 0.12 * i
            reack(server, s, tid, 0)                 # ACK 0: the client never got DATA 1
            assert pending(s) == ([(3, 1)] if i <= 3 else []), i
        stats = server.stats()
        assert stats["dupack_resends"] == 3 and stats["retransmits"] == 0 and stats["expired"] == 0, stats
        clock.t = T0 + 60                            # past any backoff: the timer gives up
        stats = until(server, "expired", 1)
        assert stats["retransmits"] == 0 and stats["active"] == 0, stats


@pytest.mark.parametrize("core", twin_params())
def test_tftp_hpa_through_a_lossy_path_recovers_on_its_own_reacks(root, core, tmp_path):
    """tftp-hpa re-sends its last ACK when its 1 s timer fires; the server's timer (5 s) is left out of it:
    every lost DATA comes back on the client's re-ACK, and the file is byte-exact."""
    with ServerThread(root, core, timeout=5.0, retries=5) as server:
        with LossyRelay(server.port, drop=0.05, duplicate=0.05, seed=7) as relay:
            out = tmp_path / "boot.bin"
            script = f"mode octet\nrexmt 1\ntimeout 60\nget boot.bin {out}\nquit\n"
            result = subprocess.run(["tftp", "127.0.0.1", str(relay.port)], input=script, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0, result
            assert out.read_bytes() == (root / "boot.bin").read_bytes(), relay.counts
            assert relay.counts["dropped"] > 0, relay.counts
        stats = server.stats()
        assert stats["dupack_resends"] > 0, stats
        # No wait for the session to end: when the relay drops tftp-hpa's final ACK the server can only
        # retry the last block into a closed port until its timer gives up (minutes at timeout 5 s).
