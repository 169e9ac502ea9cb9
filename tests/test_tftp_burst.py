"""A boot storm's first second: a burst of RRQs at once, and RRQs the client resends.

The server's clock is held still (`clock=`), so its timer never retransmits anything: every
answer a client gets here was sent because of a request, and a request the server lost would
stay unanswered (the recv backstop fails the test). Assertions are on the server's counters.
"""
import os
import threading

import pytest

from tftp_support import ServerThread, ack, client_socket, decode, rrq, twin_params

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

BURST = 1000


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    (root / "nbp").write_bytes(os.urandom(3000))
    return root


@pytest.fixture(params=twin_params())
def server(request, root):
    with ServerThread(root, request.param, timeout=1.0, retries=3, clock=lambda: 0.0) as srv:
        yield srv


def _hold(server):
    """Block the server's event loop until the returned event is set (requests queue meanwhile)."""
    release, held = threading.Event(), threading.Event()

    def block():
        held.set()
        release.wait(30)
    server.loop.call_soon_threadsafe(block)
    assert held.wait(10)
    return release


def test_burst_of_rrqs_all_answered_without_retransmission(server):
    clients = [client_socket(timeout=20.0) for _ in range(BURST)]
    try:
        release = _hold(server)
        try:
            # All queue in the listener's receive buffer: the default one (~200 KB) holds a few hundred.
            for s in clients:
                s.sendto(rrq("nbp", blksize="1432", tsize="0"), ("127.0.0.1", server.port))
        finally:
            release.set()
        for s in clients:
            opcode, options, _ = decode(s.recvfrom(2000)[0])
            assert opcode == 6 and options == {"blksize": "1432", "tsize": "3000"}
        stats = server.stats()
        assert stats["started"] == BURST and stats["requests_started"] == BURST, stats
        assert stats["retransmits"] == 0 and stats["duplicate_requests"] == 0, stats
    finally:
        for s in clients:
            s.close()


@pytest.mark.parametrize("options", [{"blksize": "1432", "tsize": "0"}, {}], ids=["oack", "no-options"])
def test_resent_rrq_gets_the_first_packet_again_at_once(server, root, options):
    s = client_socket(timeout=10.0)
    request = rrq("nbp", **options)
    s.sendto(request, ("127.0.0.1", server.port))
    first, server_tid = s.recvfrom(2000)
    # The client's RRQ timer expired (say the first answer was lost): it resends the RRQ.
    s.sendto(request, ("127.0.0.1", server.port))
    again, tid_again = s.recvfrom(2000)
    assert again == first and tid_again == server_tid        # the same transfer, not a new one
    stats = server.stats()
    assert stats["started"] == 1 and stats["duplicate_requests"] == 1 and stats["first_resends"] == 1, stats
    assert stats["retransmits"] == 0 and stats["requests_duplicate"] == 1, stats
    # The transfer goes on as one: ACK 0 (OACK) or ACK 1, then the rest.
    data = b""
    packet = first
    if decode(packet)[0] == 6:
        s.sendto(ack(0), server_tid)
        packet = s.recvfrom(2000)[0]
    while True:
        opcode, block, chunk = decode(packet)
        assert opcode == 3
        data += chunk
        s.sendto(ack(block), server_tid)
        if len(chunk) < int(options.get("blksize", 512)):
            break
        packet = s.recvfrom(2000)[0]
    assert data == (root / "nbp").read_bytes()
    assert server.wait_idle() and server.stats()["completed"] == 1
    s.close()


def test_request_buffer_falls_back_and_says_when_capped(caplog):
    """Unprivileged (no SO_RCVBUFFORCE): the capped SO_RCVBUF is taken and the shortfall is logged."""
    import logging
    import socket

    from wwfast.server import tftp

    class Unprivileged:
        def __init__(self, cap):
            self.cap, self.got = cap, 0

        def setsockopt(self, level, option, value):
            if option == getattr(socket, "SO_RCVBUFFORCE", None):
                raise PermissionError(1, "Operation not permitted")
            self.got = 2 * min(value, self.cap)      # what Linux does with SO_RCVBUF

        def getsockopt(self, level, option):
            return self.got

    with caplog.at_level(logging.WARNING, logger="wwfast.tftp"):
        assert tftp._deepen_receive_buffer(Unprivileged(212992)) == 212992
        assert "raise net.core.rmem_max" in caplog.text
        caplog.clear()
        assert tftp._deepen_receive_buffer(Unprivileged(8 << 20)) == tftp.LISTENER_RCVBUF
        assert caplog.text == ""
    # and a real socket here (root): the forced size is granted
    real = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert tftp._deepen_receive_buffer(real) >= (tftp.LISTENER_RCVBUF if os.geteuid() == 0 else 0)
    finally:
        real.close()
