"""RFC behaviour seen on the wire with a raw UDP client: both core twins, both event loops.

No test waits for silence or for a moment: each waits for the server's counters (its record of what it
handled) and reads what the server sent from its socket's buffer; timeouts are backstops."""
import contextlib
import os
import time

import pytest

from tftp_support import ServerThread, ack, client_socket, decode, fetch, rrq, twin_params
from wwfast._tftp_codec import TftpError, negotiate, parse_request

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    (root / "f5000").write_bytes(os.urandom(5000))
    (root / "f1024").write_bytes(os.urandom(1024))
    for i in range(100):
        (root / f"node{i}").write_bytes(b"x" * 700)
    return root


@pytest.fixture(scope="module", params=[(core, loop) for core in twin_params() for loop in ("asyncio", "uvloop")],
                ids=lambda p: f"{p[0].id}-{p[1]}")
def server(request, root):
    core, loop = request.param
    with ServerThread(root, core.values[0], loop=loop, timeout=1.0, retries=3) as srv:
        yield srv


def test_oack_lists_only_asked_known_options(server, root):
    data, oack = fetch(server.port, "f5000", blksize="1432", tsize="0", windowsize="4", foo="bar")
    assert data == (root / "f5000").read_bytes()
    assert oack == {"blksize": "1432", "tsize": "5000", "windowsize": "4"}


def test_no_options_means_data_1_at_once(server, root):
    data, oack = fetch(server.port, "f1024")
    assert oack is None and data == (root / "f1024").read_bytes()


def test_blksize_clamped_and_windowsize_capped(server, root):
    data, oack = fetch(server.port, "f5000", blksize="70000", windowsize="1000")
    assert oack == {"blksize": "65464", "windowsize": "2"}       # a window stays within 128 KiB
    assert data == (root / "f5000").read_bytes()
    data, oack = fetch(server.port, "f5000", blksize="1432", windowsize="1000")
    assert oack == {"blksize": "1432", "windowsize": "64"}
    assert data == (root / "f5000").read_bytes()


@pytest.mark.parametrize("options", [{"blksize": "7"}, {"blksize": "abc"}, {"windowsize": "0"},
                                     {"timeout": "0"}, {"timeout": "256"}])
def test_bad_option_values_get_error_8(server, options):
    s = client_socket()
    s.sendto(rrq("f5000", **options), ("127.0.0.1", server.port))
    assert decode(s.recvfrom(1000)[0])[:2] == (5, 8)


def test_wrong_tid_gets_error_5_and_transfer_goes_on(server, root):
    s, intruder = client_socket(), client_socket()
    s.sendto(rrq("f1024"), ("127.0.0.1", server.port))
    packet, tid = s.recvfrom(1000)
    assert decode(packet)[:2] == (3, 1)
    intruder.sendto(ack(1), tid)
    assert decode(intruder.recvfrom(1000)[0])[:2] == (5, 5)
    got = packet[4:]
    for block in (1, 2):   # 1024 bytes: blocks 1, 2 and an empty block 3
        s.sendto(ack(block), tid)
        packet, _ = s.recvfrom(1000)
        assert decode(packet)[:2] == (3, block + 1)
        got += packet[4:]
    s.sendto(ack(3), tid)
    assert got == (root / "f1024").read_bytes()
    assert server.wait_idle(30)


def wait_count(server, name, at_least, backstop=30):
    """Until the server's counter `name` reaches `at_least` (its record that it handled what we sent)."""
    deadline = time.monotonic() + backstop
    while (stats := server.stats()).get(name, 0) < at_least:
        assert time.monotonic() < deadline, f"{name} never reached {at_least}: {stats}"
        time.sleep(0.01)
    return stats


def receive_rest(s, tid, got, have):
    """Lockstep to the end of a transfer from `tid`: ACK each new block; a block we already have is the
    server's timer resending it (a loaded machine may be that slow) and is skipped."""
    s.sendto(ack(have), tid)
    while True:
        packet, sender = s.recvfrom(1000)
        assert sender == tid, "a packet from another transfer"
        opcode, block, data = decode(packet)
        assert opcode == 3 and block <= have + 1, (opcode, block)
        if block <= have:
            continue
        got, have = got + data, block
        s.sendto(ack(block), tid)
        if len(data) < 512:
            return got


def test_late_duplicate_rrq_leaves_the_transfer_alone(server, root):
    """A retransmitted RRQ processed after the transfer began (queued behind a burst)."""
    before = server.stats()
    s = client_socket(30)                                   # a backstop: nothing waits for silence
    s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
    packet, tid = s.recvfrom(1000)
    got = packet[4:]
    s.sendto(ack(1), tid)
    packet, _ = s.recvfrom(1000)
    assert decode(packet)[:2] == (3, 2)
    got += packet[4:]
    s.sendto(rrq("f5000"), ("127.0.0.1", server.port))      # the same request again
    # the server's record: it took the RRQ as a duplicate and started no second transfer
    stats = wait_count(server, "requests_duplicate", before.get("requests_duplicate", 0) + 1)
    assert stats.get("requests_started", 0) == before.get("requests_started", 0) + 1, stats
    assert receive_rest(s, tid, got, 2) == (root / "f5000").read_bytes()    # only `tid` ever sends
    assert server.wait_idle(30)


def test_duplicate_ack_is_answered_only_by_counted_resends(server):
    """Sorcerer's Apprentice (RFC 1123): DATA goes out again on a timeout, or on a re-ACK of a block sent
    long enough ago (counted as dupack_resends; test_tftp_reack holds the clock to pin that down)."""
    before = server.stats()
    s = client_socket(30)
    s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
    _, tid = s.recvfrom(1000)
    s.sendto(ack(1), tid)
    assert decode(s.recvfrom(1000)[0])[:2] == (3, 2)
    for _ in range(3):
        s.sendto(ack(1), tid)          # duplicates of an old ACK
    after = wait_count(server, "duplicate_acks", before["duplicate_acks"] + 3)
    # DATA sent other than as a counted resend: blocks 1 and 2 only, however slow either side was
    resends = after["retransmits"] + after["dupack_resends"] - before["retransmits"] - before["dupack_resends"]
    assert after["data_sent"] - before["data_sent"] == 2 + resends, after
    wait_count(server, "retransmits", before["retransmits"] + 1)   # the timer still resends
    packet, sender = s.recvfrom(1000)
    assert sender == tid and decode(packet)[:2] == (3, 2)
    s.sendto(b"\0\5\0\0bye\0", tid)
    assert server.wait_idle(30)


@pytest.mark.parametrize("core", twin_params())
def test_unanswered_transfer_is_retried_then_dropped(root, core):
    with ServerThread(root, core, timeout=0.1, retries=3) as server:
        for options, first in (({}, (3, 1)), ({"tsize": "0"}, (6, {"tsize": "5000"}))):
            before = server.stats()
            s = client_socket()
            s.sendto(rrq("f5000", **options), ("127.0.0.1", server.port))
            # The server's record says when it gave up (expired); everything it sent is then in our
            # socket's buffer, whatever the gaps between sends were on a loaded machine.
            wait_count(server, "expired", before["expired"] + 1)
            got = []
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                while True:
                    got.append(decode(s.recvfrom(1000)[0])[:2])
            assert got == [first] * 4          # the first send and 3 retries (DATA 1, or the OACK)
            assert server.wait_idle(30)
            after = server.stats()
            assert after["expired"] == before["expired"] + 1 and after["retransmits"] == before["retransmits"] + 3


def test_client_error_ends_the_session(server):
    s = client_socket()
    s.sendto(rrq("f5000"), ("127.0.0.1", server.port))
    _, tid = s.recvfrom(1000)
    s.sendto(b"\0\5\0\0user abort\0", tid)
    assert server.wait_idle(30)


def test_request_codec():
    request = parse_request(b"\0\1dir\\file\0OcTeT\0BLKSIZE\0001432\0blksize\0008\0\0\0")
    assert (request.filename, request.mode, request.options) == ("dir\\file", "octet", {"blksize": "1432"})
    assert negotiate(request.options, 10)[:3] == (1432, 1, 0)
    for bad in (b"", b"\0", b"\0\3abc\0octet\0", b"\0\1abc\0octet", b"\0\1abc\0mail\0", b"\0\1\0octet\0"):
        with pytest.raises(TftpError):
            parse_request(bad)


class HeldClock:
    """The TFTP core's timer clock (seconds), which the test can hold still: while held, no session
    expires, however long sending takes on a loaded machine; released, time runs on from there."""

    def __init__(self):
        self.held_at, self.lost = None, 0.0

    def __call__(self):
        return (self.held_at if self.held_at is not None else time.monotonic()) - self.lost

    def hold(self):
        self.held_at = time.monotonic()

    def release(self):
        self.lost += time.monotonic() - self.held_at
        self.held_at = None


@pytest.mark.parametrize("core", twin_params())
def test_ten_thousand_abandoned_sessions_are_reclaimed(root, core):
    """10,000 RRQs never ACKed, all open at once: after the retries every session, socket and buffer is
    freed. The core's clock is held while the requests go in, so all 10,000 are open together (the old
    test sampled the open count while sessions expired and hoped for 5,000)."""
    fd_dir = "/proc/self/fd"
    clock = HeldClock()
    with ServerThread(root, core, timeout=1.0, retries=1, clock=clock) as srv:
        clients = [client_socket() for _ in range(100)]
        baseline = len(os.listdir(fd_dir))
        rss = []
        for round_ in range(2):
            clock.hold()
            sent = 10_000 * round_
            for i in range(100):
                for c in clients:
                    c.sendto(rrq(f"node{i}"), ("127.0.0.1", srv.port))
                sent += len(clients)
                # Let the listener keep up (its socket buffer holds a few hundred requests): its count of
                # started requests is the record; 60 s is a backstop.
                wait_count(srv, "requests_started", sent - 200, backstop=60)
            stats = wait_count(srv, "requests_started", 10_000 * (round_ + 1), backstop=60)
            assert stats["requests_started"] == 10_000 * (round_ + 1), stats
            assert stats["active"] == 10_000 and stats["expired"] == 10_000 * round_, stats    # none expired yet
            clock.release()
            assert srv.wait_idle(60), srv.stats()
            stats = srv.stats()
            assert stats["expired"] == 10_000 * (round_ + 1) and stats["active"] == 0
            assert len(os.listdir(fd_dir)) <= baseline, "transfer sockets leaked"
            rss.append(_rss_bytes())
            for c in clients:   # drain what the clients were sent
                c.setblocking(False)
                try:
                    while True:
                        c.recv(2000)
                except BlockingIOError:
                    pass
        assert srv.server.table.active == 0
        assert rss[1] - rss[0] < 16 << 20, f"memory not reused: RSS grew by {rss[1] - rss[0]} bytes"
        for c in clients:
            c.close()


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.parametrize("core", twin_params())
def test_each_reported_transfer_end_says_how_it_ended_and_what_was_acknowledged(root, core):
    """on_request's token comes back once through on_end: complete, client error, illegal packet, no ACK."""
    ends = []
    tokens = iter(range(1, 100))

    def on_request(path, client, result, nbytes):
        return next(tokens) if result == "ok" and path != "node7" else None     # node7: not watched

    with ServerThread(root, core, timeout=0.1, retries=2, on_request=on_request,
                      on_end=lambda *a: ends.append(a)) as srv:
        data, _ = fetch(srv.port, "f5000", blksize="1024")                      # token 1: whole
        assert len(data) == 5000
        s = client_socket()
        s.sendto(rrq("f5000", blksize="1024"), ("127.0.0.1", srv.port))       # token 2: ERROR after block 2
        _, tid = s.recvfrom(2000)
        s.sendto(ack(0), tid)
        s.recvfrom(2000)
        s.sendto(ack(1), tid)
        s.recvfrom(2000)
        s.sendto(ack(2), tid)
        s.recvfrom(2000)
        s.sendto(b"\0\5\0\0user abort\0", tid)
        s.sendto(rrq("f1024"), ("127.0.0.1", srv.port))                        # token 3: DATA back: illegal
        _, tid = s.recvfrom(2000)
        s.sendto(b"\0\3\0\1x", tid)
        s.recvfrom(2000)                                                        # the ERROR 4 it gets
        s.sendto(rrq("node7"), ("127.0.0.1", srv.port))                        # unwatched: never reported
        s.sendto(rrq("node1"), ("127.0.0.1", srv.port))                        # token 4: never ACKed
        assert srv.wait_idle(10)
        s.close()
    assert sorted(ends) == [(1, "ok", 5000), (2, "aborted", 2048), (3, "illegal", 0), (4, "expired", 0)], ends
