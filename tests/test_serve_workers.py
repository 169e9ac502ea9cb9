"""serve --workers N: real serve processes, curl and tftp-hpa's client.

Which worker answers is chosen, not hoped for: the supervisor's BPF program gives a connection (or a
TFTP request) to slot `reuseport.slot_of(source port, N)`, so `curl --local-port` and `tftp -R` pick the worker, and
/healthz names the one that answered.
"""
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from serve_helpers import free_port, make_node, publish, running_server, store_bytes
from wwfast.server import reuseport

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
STAGES = ("ipxe", "kernel", "image", "system", "runtime")
_ports = iter(range(20000 + (os.getpid() % 200) * 40, 30000))


def local_port(worker, workers=2):
    """A free local port that the steering program gives to `worker`."""
    for port in _ports:
        if reuseport.slot_of(port, workers) != worker:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free local port left")


def curl(url, worker, *args, check=True):
    out = subprocess.run(["curl", "-sS", "--max-time", "30", "--local-port", str(local_port(worker)), *args, url],
                         capture_output=True, check=check)
    return out.stdout


def sha(data):
    return hashlib.sha256(data).hexdigest()


def status(base):
    return json.loads(curl(f"{base}/status", 0))


def metric(text, name):
    """The value of the sample line `name` (with its labels) in a /metrics text."""
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def wait_generation(base, generation, timeout=30):
    """Until every worker has acknowledged `generation` (the supervisor records each worker's swap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = status(base)["workers"]
        if all(w["generation"] == generation and w["ready"] for w in workers):
            return workers
        time.sleep(0.1)
    raise AssertionError(f"workers never all served {generation}: {workers}")


def two_nodes(state, generation, image=b"IMAGE" * 4096):
    tag = generation.encode()
    return publish(state, {"n1": make_node(state, "n1", MAC1, image, tag=tag),
                           "n2": make_node(state, "n2", MAC2, image, tag=tag)}, generation)


def artifact_bytes(state, manifest, node, stage):
    encodings = manifest["nodes"][node]["artifacts"][stage]
    return store_bytes(state, encodings.get("zst") or encodings["raw"])


@pytest.fixture
def served(tmp_path):
    state = str(tmp_path)
    manifest = two_nodes(state, "gen-1")
    port = free_port()
    with running_server(state, port, "--workers", "2") as proc:
        base = f"http://127.0.0.1:{port}"
        wait_generation(base, "gen-1")
        yield state, base, manifest, proc


def test_steering_program_picks_the_slot_by_source_port():
    # connect() gets even ports on Linux: the hash still spreads them over both slots of two
    assert {reuseport.slot_of(port, 2) for port in range(40000, 40040, 2)} == {0, 1}
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            group = reuseport.bind_group(kind, host, 0, 3)
            port = group[0].getsockname()[1]
            try:
                for _ in range(8):
                    with socket.socket(family, kind) as c:
                        c.bind((host, 0))
                        sport = c.getsockname()[1]
                        if kind == socket.SOCK_STREAM:
                            c.connect((host, port))
                        else:
                            c.sendto(b"x", (host, port))
                        got = _arrivals(group, kind)
                        assert got == [reuseport.slot_of(sport, 3)], (host, kind, sport, got)
            finally:
                for s in group:
                    s.close()


def _arrivals(group, kind):
    """The slots of `group` the client's connection or datagram reached."""
    ready, _, _ = select.select(group, [], [], 5.0)
    ready += [s for s in select.select(group, [], [], 0.2)[0] if s not in ready]   # a second one, if any
    for sock in ready:
        if kind == socket.SOCK_STREAM:
            sock.accept()[0].close()
        else:
            sock.recvfrom(16)
    return sorted(group.index(s) for s in ready)


def test_each_worker_answers_and_metrics_sum_all_workers(served):
    _state, base, _manifest, _proc = served
    assert curl(f"{base}/healthz", 0) == b"ok generation=gen-1 worker=0\n"
    for _ in range(2):
        assert curl(f"{base}/healthz", 1) == b"ok generation=gen-1 worker=1\n"
    metrics = curl(f"{base}/metrics", 1)
    assert metric(metrics, 'wwfast_http_requests_total{stage="healthz",code="200"}') == 3


def test_a_boot_spread_over_workers_is_one_whole_record(served):
    state, base, manifest, _proc = served
    for i, stage in enumerate(STAGES):          # ipxe on 0, kernel on 1, image on 0, ...
        body = curl(f"{base}/{stage}/{MAC1}", i % 2)
        assert sha(body) == sha(artifact_bytes(state, manifest, "n1", stage)), stage
    doc = status(base)
    n1 = doc["nodes"]["n1"]
    assert n1["stage"] == "runtime" and n1["boot start"] and n1["boot end"] >= n1["boot start"]
    assert doc["nodes"]["n2"]["stage"] == ""
    boot = json.loads(curl(f"{base}/status?node=n1", 1))["boot"]      # the node's record, from either worker
    assert [(r["stage"], r["result"], r["generation"]) for r in boot["requests"]] == \
        [(stage, "ok", "gen-1") for stage in STAGES]
    assert boot["start"] == n1["boot start"] and boot["end"] == n1["boot end"]
    assert len({r["seq"] for r in boot["requests"]}) == 5
    metrics = curl(f"{base}/metrics", 0)
    assert metric(metrics, "wwfast_boot_duration_seconds_count") == 1
    for stage in STAGES:
        assert metric(metrics, f'wwfast_http_requests_total{{stage="{stage}",code="200"}}') == 1, stage


def test_a_publish_reaches_every_worker_at_the_same_generation(served):
    state, base, _manifest, _proc = served
    new = two_nodes(state, "gen-2")
    workers = wait_generation(base, "gen-2")
    assert [w["worker"] for w in workers] == [0, 1]
    for worker in (0, 1):
        assert curl(f"{base}/healthz", worker) == f"ok generation=gen-2 worker={worker}\n".encode()
        assert curl(f"{base}/ipxe/{MAC2}", worker) == artifact_bytes(state, new, "n2", "ipxe")
    metrics = curl(f"{base}/metrics", 1)
    assert metric(metrics, "wwfast_manifest_reloads_total") == 2


def test_a_boot_pinned_on_one_worker_finishes_from_its_generation_on_the_other(served):
    state, base, old, _proc = served
    assert curl(f"{base}/ipxe/{MAC1}", 0) == artifact_bytes(state, old, "n1", "ipxe")
    new = two_nodes(state, "gen-2")
    wait_generation(base, "gen-2")
    for i, stage in enumerate(STAGES[1:]):       # kernel on 1, image on 0, system on 1, runtime on 0
        assert sha(curl(f"{base}/{stage}/{MAC1}", (i + 1) % 2)) == sha(artifact_bytes(state, old, "n1", stage))
    # the boot is over: n1's next boot, and n2 which was not booting, get the new generation
    assert curl(f"{base}/ipxe/{MAC1}", 1) == artifact_bytes(state, new, "n1", "ipxe")
    assert sha(curl(f"{base}/kernel/{MAC1}", 0)) == sha(artifact_bytes(state, new, "n1", "kernel"))
    assert sha(curl(f"{base}/kernel/{MAC2}", 1)) == sha(artifact_bytes(state, new, "n2", "kernel"))


def held_download(port, worker, path):
    """GET `path` from `worker` on a socket nobody reads yet: the body (larger than both socket buffers)
    stays in flight, held by this client, until the test reads it or the worker dies. (Was: curl
    --limit-rate and hoping every download was still running at the kill.)"""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.bind(("127.0.0.1", local_port(worker)))
    s.settimeout(90)                                  # a backstop
    s.connect(("127.0.0.1", port))
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return s


def read_all(s):
    """Everything until the server closes (or resets) the connection: (status line, body)."""
    data = b""
    try:
        while chunk := s.recv(1 << 20):
            data += chunk
    except ConnectionResetError:
        pass
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


def test_kill_9_of_one_worker_mid_load_costs_the_others_nothing(tmp_path):
    state = str(tmp_path)
    manifest = two_nodes(state, "gen-1", image=os.urandom(24 << 20))
    image = artifact_bytes(state, manifest, "n1", "image")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with running_server(state, port, "--workers", "2"):
        before = wait_generation(base, "gen-1")
        clients = [(i % 2, held_download(port, i % 2, f"/image/{MAC1}")) for i in range(6)]
        # Held, they cannot finish: the servers' in-flight count reaches 6 and stays (30 s: a backstop)
        deadline = time.monotonic() + 30
        while metric(curl(f"{base}/metrics", 0), "wwfast_http_transfers_in_flight") != 6:
            assert time.monotonic() < deadline, "the six downloads never were all in flight"
            time.sleep(0.1)
        os.kill(before[1]["pid"], signal.SIGKILL)
        # a connection the kernel gives the dead worker's slot waits for its successor
        assert curl(f"{base}/healthz", 1) == b"ok generation=gen-1 worker=1\n"
        for worker, s in clients:
            line, body = read_all(s)
            assert line == b"HTTP/1.1 200 OK", line
            if worker == 0:
                assert body == image
            else:
                assert len(body) < len(image), "a download of the killed worker should have been cut"
                out = tmp_path / "retry"
                curl(f"{base}/image/{MAC1}", 1, "-o", str(out))     # the node's retry
                assert out.read_bytes() == image
        after = status(base)["workers"]
        assert after[0]["pid"] == before[0]["pid"] and after[0]["restarts"] == 0
        assert after[1]["pid"] != before[1]["pid"] and after[1]["restarts"] == 1
        # the cut transfers are ended in the ledger: nothing is left in flight
        assert metric(curl(f"{base}/metrics", 0), "wwfast_http_transfers_in_flight") == 0
        requests = json.loads(curl(f"{base}/status?node=n1", 0))["boot"]["requests"]
        images = [(r["result"], r["reason"]) for r in requests if r["stage"] == "image"]
        assert sorted(images) == [("cut short", "worker died")] * 3 + [("ok", "")] * 6


@pytest.mark.twin
def test_tftp_on_every_worker_and_a_script_by_mac_starts_the_boot(tmp_path):
    state = str(tmp_path)
    manifest = two_nodes(state, "gen-1")
    root = tmp_path / "tftproot"
    root.mkdir()
    nbp = os.urandom(300_000)
    (root / "ipxe.efi").write_bytes(nbp)
    tftp_port = free_port()
    http_port = free_port()
    with running_server(state, http_port, "--workers", "2", tftp_port=tftp_port, tftp_root=root):
        tbase = f"http://127.0.0.1:{http_port}"
        wait_generation(tbase, "gen-1")
        for worker in (0, 1):
            lport = local_port(worker)
            got = tmp_path / f"nbp-{worker}"
            subprocess.run(["tftp", "-m", "binary", "-R", f"{lport}:{lport}", "127.0.0.1", str(tftp_port),
                            "-c", "get", "ipxe.efi", str(got)], check=True, timeout=60)
            assert got.read_bytes() == nbp
        lport = local_port(1)
        script = tmp_path / "script"
        subprocess.run(["tftp", "-m", "binary", "-R", f"{lport}:{lport}", "127.0.0.1", str(tftp_port),
                        "-c", "get", MAC1.replace(":", "-") + ".ipxe", str(script)], check=True, timeout=60)
        assert script.read_bytes() == artifact_bytes(state, manifest, "n1", "ipxe")
        assert sha(curl(f"{tbase}/kernel/{MAC1}", 0)) == sha(artifact_bytes(state, manifest, "n1", "kernel"))
        n1 = status(tbase)["nodes"]["n1"]
        assert n1["stage"] == "kernel" and n1["boot start"] and not n1["boot end"]
        boot = json.loads(curl(f"{tbase}/status?node=n1", 0))["boot"]
        assert [(r["stage"], r["protocol"], r["result"]) for r in boot["requests"]] == \
            [("ipxe", "tftp", "ok"), ("kernel", "http", "ok")]
        metrics = curl(f"{tbase}/metrics", 1)
        assert metric(metrics, 'wwfast_tftp_requests_total{stage="file",result="ok"}') == 2
        assert metric(metrics, 'wwfast_tftp_requests_total{stage="ipxe",result="ok"}') == 1
        # the session tables' own counters, summed over the workers (3 transfers started, none resent)
        assert metric(metrics, 'wwfast_tftp_transfer_events_total{event="started"}') == 3
        assert metric(metrics, 'wwfast_tftp_transfer_events_total{event="duplicate_requests"}') == 0


def test_workers_flag(tmp_path):
    state = str(tmp_path)
    two_nodes(state, "gen-1")
    port = free_port()
    with running_server(state, port, "--workers", "1"):      # one process: no supervisor, no worker name
        assert curl(f"http://127.0.0.1:{port}/healthz", 0) == b"ok generation=gen-1\n"
    out = subprocess.run([sys.executable, "-m", "stages.serve", "--conf", str(tmp_path / "conf"), "--state", state,
                          "--workers", "0"], capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__))))
    assert out.returncode == 2 and "--workers 0" in out.stderr


def _gone(pid):
    """The process exited (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def test_workers_stop_when_the_supervisor_is_killed(tmp_path):
    state = str(tmp_path)
    two_nodes(state, "gen-1")
    port = free_port()
    with running_server(state, port, "--workers", "2") as proc:
        pids = [w["pid"] for w in wait_generation(f"http://127.0.0.1:{port}", "gen-1")]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 30                      # a backstop: they stop at their channel's end
        while not all(_gone(pid) for pid in pids):
            assert time.monotonic() < deadline, "workers outlived their supervisor"
            time.sleep(0.1)
    with socket.socket() as s:                                # and nothing listens on the port any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
