"""Transfers through a lossy UDP relay (drops and duplicates both ways) still end byte-exact."""
import os
import random
import selectors
import socket
import subprocess
import threading

import pytest

from tftp_support import ServerThread, fetch, twin_params

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)


class LossyRelay:
    """client <-> relay <-> server, mirroring every server TID with a socket of its own.

    RRQs reach the server intact (clients retry them only after seconds) but may be
    duplicated; every other packet, either way, is dropped or sent twice at random.

    What happens to a packet is decided by the packet itself (direction, its first 4 bytes: opcode and
    block, and how many times that one was seen), drawn from the seed: the same transfer meets the same
    losses whatever the interleaving of DATA and ACKs on a loaded machine. (One rng drawn in arrival order
    let the timing decide whether a low draw fell on a droppable packet, so "some packet was dropped"
    could fail at random.)
    """

    def __init__(self, server_port, drop, duplicate, seed, drop_acks=True):
        self.server = ("127.0.0.1", server_port)
        self.drop, self.duplicate, self.drop_acks = drop, duplicate, drop_acks
        self.seed = seed
        self.seen = {}         # (direction, packet head) -> times seen
        self.selector = selectors.DefaultSelector()
        self.front = self._socket(("front", None))
        self.port = self.front.getsockname()[1]
        self.upstream = {}     # client address -> socket facing the server
        self.downstream = {}   # (client address, server TID) -> socket facing the client
        self.counts = {"dropped": 0, "dropped_data": 0, "duplicated": 0, "forwarded": 0}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _socket(self, route):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        self.selector.register(s, selectors.EVENT_READ, route)
        return s

    def _forward(self, sock, packet, addr, lossy=True, direction=""):
        key = (direction, packet[:4])
        self.seen[key] = self.seen.get(key, 0) + 1
        roll = random.Random(f"{self.seed}/{direction}/{packet[:4].hex()}/{self.seen[key]}").random()
        if lossy and roll < self.drop:
            self.counts["dropped"] += 1
            self.counts["dropped_data"] += packet[:2] == b"\x00\x03"
            return
        copies = 2 if roll > 1 - self.duplicate else 1
        self.counts["duplicated"] += copies - 1
        self.counts["forwarded"] += 1
        for _ in range(copies):
            sock.sendto(packet, addr)

    def _run(self):
        while not self._stop:
            for key, _ in self.selector.select(0.05):
                kind, arg = key.data
                try:
                    packet, addr = key.fileobj.recvfrom(70000)
                except BlockingIOError:
                    continue
                if kind == "front":            # a request from a client
                    if addr not in self.upstream:
                        self.upstream[addr] = self._socket(("up", addr))
                    self._forward(self.upstream[addr], packet, self.server, lossy=False, direction="rrq")
                elif kind == "up":              # from a server TID to client `arg`
                    route = (arg, addr)
                    if route not in self.downstream:
                        self.downstream[route] = self._socket(("down", route))
                    self._forward(self.downstream[route], packet, arg, direction="down")
                else:                           # from the client to the server TID it talks to
                    client, tid = arg
                    self._forward(self.upstream[client], packet, tid, lossy=self.drop_acks, direction="up")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop = True
        self._thread.join(5)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tftproot")
    (root / "boot.bin").write_bytes(os.urandom(60_000))
    (root / "exact.bin").write_bytes(os.urandom(512 * 40))
    return root


BLKSIZE = {"tftp-hpa": 512, "atftp-1432": 1432, "atftp-ws4": 512}
CLIENTS = {
    "tftp-hpa": lambda port, name, out: ["tftp", "-m", "octet", "127.0.0.1", str(port), "-c", "get", name, out],
    "atftp-1432": lambda port, name, out: ["atftp", "--option", "blksize 1432", "--option", "tsize 0", "-g",
                                           "-r", name, "-l", out, "127.0.0.1", str(port)],
    "atftp-ws4": lambda port, name, out: ["atftp", "--option", "blksize 512", "--option", "windowsize 4", "-g",
                                          "-r", name, "-l", out, "127.0.0.1", str(port)],
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("core", twin_params())
def test_lossy_path_still_byte_exact(root, tmp_path, core, client):
    blocks = dropped_data = 0
    with ServerThread(root, core, timeout=0.1, retries=8) as server:
        for seed, name in ((1, "boot.bin"), (2, "exact.bin")):
            # atftp does not re-ACK a window it already has: after a lost ACK it waits for
            # its own 5 s timer, which the server's resends keep resetting. So its windowed
            # run loses DATA only; test_windowed_recovery covers lost ACKs with windows.
            with LossyRelay(server.port, drop=0.05, duplicate=0.05, seed=seed,
                            drop_acks=client != "atftp-ws4") as relay:
                out = tmp_path / name
                result = subprocess.run(CLIENTS[client](relay.port, name, str(out)), capture_output=True,
                                        text=True, timeout=60)
                assert result.returncode == 0, result
                assert out.read_bytes() == (root / name).read_bytes(), (client, name, relay.counts)
                assert relay.counts["dropped"] > 0 and relay.counts["duplicated"] > 0, relay.counts
                blocks += (root / name).stat().st_size // BLKSIZE[client] + 1
                dropped_data += relay.counts["dropped_data"]
        stats = server.stats()
        # Every DATA packet the relay dropped was sent again (by the timer or for the client's ACK: which
        # one depends on timing, so the test counts sends, not the path that made them).
        assert dropped_data > 0 or client != "atftp-ws4"
        assert stats["data_sent"] >= blocks + dropped_data, (stats, blocks, dropped_data)
        assert server.wait_idle(8), stats


@pytest.mark.parametrize("core", twin_params())
def test_windowed_recovery_from_lost_data_and_acks(root, core):
    """RFC 7440 both ways: a gap is re-ACKed by the client, a lost ACK is resent by the timer."""
    expected = (root / "boot.bin").read_bytes()
    with ServerThread(root, core, timeout=0.1, retries=5) as server:
        for seed, options in ((3, {"windowsize": "4"}), (4, {"windowsize": "16", "blksize": "1024"})):
            with LossyRelay(server.port, drop=0.05, duplicate=0.05, seed=seed) as relay:
                data, _ = fetch(relay.port, "boot.bin", timeout=10, **options)
            assert data == expected
            assert relay.counts["dropped"] > 0, relay.counts
        assert server.wait_idle(5), server.stats()
