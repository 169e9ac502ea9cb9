"""serve's send budget: many transfers at once share a fixed amount of socket send memory instead of
each growing its buffer to the kernel's maximum (which pushes the machine into TCP memory pressure).

The arithmetic is checked alone; the kernel's side is read off `ss` (skmem tb: the send buffer the
kernel holds a socket to) for real transfers to clients that do not read yet.
"""
import hashlib
import os
import re
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import pytest

from serve_helpers import free_port, make_node, publish, running_server, wait_port
from wwfast.configure import tls
from wwfast.server.metrics import Metrics
from wwfast.server.send_budget import MIN_SHARE, STEP, SendBudget, kernel_limits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAC = "52:54:00:00:00:01"
MiB = 1 << 20


def test_the_kernel_sizes_buffers_while_the_budget_covers_every_transfer():
    budget = SendBudget(64 * MiB, ceiling=4 * MiB, settable=4 * MiB)
    assert budget.share(1) is None and budget.share(16) is None      # 4 MiB each: the kernel's maximum
    assert budget.share(17) is not None


def test_shares_shrink_with_the_transfers_in_steps_never_below_the_floor():
    budget = SendBudget(64 * MiB, ceiling=4 * MiB, settable=4 * MiB)
    shares = [budget.share(n) for n in (20, 40, 80, 1000, 100000)]
    assert shares == sorted(shares, reverse=True)
    for n, value in zip((20, 40, 80), shares):
        assert value * 2 <= 64 * MiB // n and (value * 2) % STEP == 0     # SO_SNDBUF is doubled by the kernel
    assert shares[-1] == shares[-2] == MIN_SHARE // 2
    assert SendBudget(64 * MiB, ceiling=4 * MiB, settable=200000).share(20) == 200000   # net.core.wmem_max
    assert SendBudget(None).share(100000) is None


def test_with_sndbufforce_net_core_wmem_max_clips_neither_the_floor_nor_the_release():
    clipped = SendBudget(64 * MiB, ceiling=4 * MiB, settable=212992)      # a stock kernel's wmem_max
    forced = SendBudget(64 * MiB, ceiling=4 * MiB, settable=212992, force=True)
    assert clipped.share(1000) == 212992 and clipped.uncapped() == 212992
    assert forced.share(1000) == MIN_SHARE // 2 and forced.uncapped() == 2 * MiB
    assert forced.option != clipped.option == socket.SO_SNDBUF


def test_the_default_budget_is_a_quarter_of_the_pressure_threshold_split_among_workers():
    limits = (1600 * MiB, 4 * MiB, 4 * MiB)
    assert SendBudget.for_process(2, limits=limits).total == 200 * MiB
    assert SendBudget.for_process(1, 64, limits=limits).total == 64 * MiB
    assert SendBudget.for_process(4, 0, limits=limits).total is None     # --send-budget 0: no cap


def test_the_kernel_limits_come_from_proc_or_are_unknown(tmp_path):
    (tmp_path / "ipv4").mkdir()
    (tmp_path / "core").mkdir()
    (tmp_path / "ipv4" / "tcp_mem").write_text("1000\t2000\t3000\n")
    (tmp_path / "ipv4" / "tcp_wmem").write_text("4096\t16384\t4194304\n")
    (tmp_path / "core" / "wmem_max").write_text("212992\n")
    assert kernel_limits(str(tmp_path)) == (2000 * os.sysconf("SC_PAGE_SIZE"), 4194304, 212992)
    assert kernel_limits(str(tmp_path / "missing")) is None


# What serve's budget makes of this process's privileges, on a real socket: a value past the kernel's
# net.core.wmem_max set with the budget's option, and the send buffer the kernel then keeps.
_APPLY = """
import socket, sys
from wwfast.server.send_budget import SendBudget
value = int(sys.argv[1])
budget = SendBudget.for_process(1, 4)
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, budget.option, value)
    print(budget.force, s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
"""


def test_a_process_with_cap_net_admin_sets_buffers_past_wmem_max_and_one_without_is_clipped():
    """serve as root (CAP_NET_ADMIN) forces its values past net.core.wmem_max; without the capability
    (setpriv drops it from the bounding set) it falls back to SO_SNDBUF, which the kernel clips."""
    wmem_max = kernel_limits()[2]
    value = wmem_max + MiB
    run = [sys.executable, "-c", _APPLY, str(value)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    privileged = subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert privileged == ["True", str(2 * value)]
    dropped = ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"] + run
    unprivileged = subprocess.run(dropped, env=env, capture_output=True, text=True, check=True).stdout.split()
    assert unprivileged == ["False", str(2 * wmem_max)]


def _send_buffers(port):
    """{client port: tb} of the server's established connections on `port`, from ss."""
    out = subprocess.run(["ss", "-tmnH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    found = {}
    for peer, tb in re.findall(r"127\.0\.0\.1:\d+\s+127\.0\.0\.1:(\d+).*?\n?\s*skmem:\(.*?\btb(\d+)", out):
        found[int(peer)] = int(tb)
    return found


def _connect(port, tls_conf):
    """A client that asks for the image and reads nothing yet (a small receive window: the server's
    send buffer, not the client's, holds what is in flight)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
    if tls_conf:
        ctx = ssl.create_default_context(cafile=os.path.join(tls_conf, "tls", "wwfast.crt"))
        s = ctx.wrap_socket(s, server_hostname="127.0.0.1")
    s.sendall(f"GET /image/{MAC}?compress=none HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    return s


def _read_image(s, image):
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    digest = hashlib.sha256(body)
    got = len(body)
    while got < len(image):
        chunk = s.recv(1 << 20)
        assert chunk, f"closed after {got} bytes"
        digest.update(chunk)
        got += len(chunk)
    assert digest.hexdigest() == hashlib.sha256(image).hexdigest()


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_transfers_past_the_budget_hold_their_share_and_still_deliver_every_byte(tmp_path, scheme):
    """16 downloads on a server given 4 MB: each connection's send buffer is set to the floor share
    (4 MB / 16 is below it), including those that started while the budget still covered them (the
    half-second sweep refits them); once the clients read, every byte arrives. HTTPS connections (their
    bytes go through the TLS transport, not sendfile) are held to the same budget."""
    state = str(tmp_path)
    image = os.urandom(24 * MiB)
    publish(state, {"n001": make_node(state, "n001", MAC, image)}, "gen-b")
    port = free_port()
    settings = "warewulf:\n  secure: false\n"
    tls_conf = None
    if scheme == "https":
        tls_conf = os.path.join(state, "conf")
        tls.generate(tls_conf, ["127.0.0.1"])
        tls_port = free_port()
        settings += f"  tls: true\n  tls port: {tls_port}\n"
    clients = []
    with running_server(state, port, "--workers", "1", "--send-budget", "4", settings=settings) as proc:
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        if tls_conf:
            port = tls_port
            wait_port(port, proc)
        try:
            clients = [_connect(port, tls_conf) for _ in range(16)]
            ours = {s.getsockname()[1] for s in clients}
            # the floor share, as the kernel keeps it (twice the value set; net.core.wmem_max may clip it)
            want = 2 * SendBudget.for_process(1, 4).share(16)
            assert want <= MIN_SHARE
            buffers = {}
            for _ in range(600):        # the sweep runs every 0.5 s; 60 s is only a backstop
                buffers = {p: tb for p, tb in _send_buffers(port).items() if p in ours}
                if len(buffers) == 16 and all(tb == want for tb in buffers.values()):
                    break
                time.sleep(0.1)
            assert len(buffers) == 16 and set(buffers.values()) == {want}, buffers
            metrics = urllib.request.urlopen(metrics_url, timeout=60).read().decode()
            assert "\nwwfast_http_send_budget_bytes 4194304\n" in metrics, metrics
            assert "\nwwfast_http_transfers_capped 16\n" in metrics, metrics
            for s in clients:
                _read_image(s, image)
            metrics = urllib.request.urlopen(metrics_url, timeout=60).read().decode()
            assert "\nwwfast_http_transfers_capped 0\n" in metrics, metrics       # every transfer is done
        finally:
            for s in clients:
                s.close()


def test_metrics_show_the_budget_and_the_capped_transfers_summed_over_workers():
    """serve --workers N: each worker holds its part of the budget; the supervisor renders the sums."""
    workers = []
    for capped in (3, 5):
        m = Metrics()
        m.send_budget = 2 * MiB
        m.send_capped_sources.append(lambda capped=capped: capped)   # what each worker's servers count now
        workers.append(m.state())
    supervisor = Metrics()
    supervisor.take_sums(workers)
    text = supervisor.render({}, "gen-a")
    assert f"\nwwfast_http_send_budget_bytes {4 * MiB}\n" in text
    assert "\nwwfast_http_transfers_capped 8\n" in text
