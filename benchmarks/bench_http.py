"""Many concurrent downloads of a 100 MB image on loopback: the serve stage vs nginx (sendfile on).

Both servers get the same load from the same generator in the same run: a small multi-process
keep-alive HTTP client (non-blocking sockets, 4 MiB recv_into, no per-byte Python work), each
connection downloading the image again and again for a fixed time. Printed per server and
connection count (median of --repeat runs): throughput, server CPU seconds per GB served,
server peak RSS (VmHWM, reset before each run; nginx: master + workers), the kernel's receive-queue
prunes during the run (TCP memory pressure), and ours/nginx; nginx runs as shipped (a worker per
core) and, for reference, with one worker (our process count) and with a fixed send buffer
(`listen ... sndbuf=160k`, the kind of cap serve's send budget sets).

    .venv/bin/python benchmarks/bench_http.py [--conns 100,1000] [--seconds 6] [--runs 3] [--quick]
        [--size-mb 100] [--modes sendfile,mmap] [--client-procs 2] [--no-nginx-1worker] [--nginx-sndbuf ""]

Goals (issues 6 and 13): throughput >= 1.3x nginx as shipped at 1,000 connections; our RSS <= 200 MB.
"""
import argparse
import hashlib
import json
import multiprocessing
import os
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import harness  # noqa: E402
from wwfast import fsutil  # noqa: E402

MAC = "52:54:00:00:00:01"
CLK = os.sysconf("SC_CLK_TCK")


# -- the load generator ----------------------------------------------------------------------
def client_worker(port, path, nconns, seconds, out):
    """nconns keep-alive connections, each downloading `path` in a loop; returns bytes received."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    sel = selectors.DefaultSelector()
    buf = bytearray(4 << 20)
    view = memoryview(buf)
    state = {}
    errors = 0

    def connect():
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        state[s] = [b"", -1]        # header bytes so far, body bytes left (-1: in headers)
        sel.register(s, selectors.EVENT_WRITE)

    for _ in range(nconns):
        connect()
    total = responses = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for key, events in sel.select(0.2):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                try:
                    s.send(request)
                except OSError:
                    errors += 1
                    sel.unregister(s)
                    s.close()
                    connect()
                    continue
                sel.modify(s, selectors.EVENT_READ)
                continue
            st = state[s]
            try:
                n = s.recv_into(view)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            if n == 0:
                errors += 1
                sel.unregister(s)
                s.close()
                del state[s]
                connect()
                continue
            total += n
            if st[1] < 0:
                st[0] += bytes(view[:n])
                end = st[0].find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = st[0][:end].decode("latin-1")
                if not head.startswith("HTTP/1.1 200"):
                    raise SystemExit(f"bad response: {head[:200]}")
                length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
                st[1] = length - (len(st[0]) - end - 4)
                st[0] = b""
            else:
                st[1] -= n
            if st[1] == 0:
                responses += 1
                st[1] = -1
                try:
                    s.send(request)
                except OSError:
                    errors += 1
    for s in list(state):
        s.close()
    out.put((total, responses, errors))


def load(port, path, conns, seconds, procs):
    queue = multiprocessing.Queue()
    per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
    workers = [multiprocessing.Process(target=client_worker, args=(port, path, n, seconds, queue)) for n in per]
    start = time.monotonic()
    for w in workers:
        w.start()
    results = [queue.get() for _ in workers]
    elapsed = time.monotonic() - start
    for w in workers:
        w.join()
    return sum(r[0] for r in results), sum(r[1] for r in results), sum(r[2] for r in results), elapsed


# -- process accounting ---------------------------------------------------------------------
def family(pid):
    """pid and its children (nginx workers)."""
    pids = [pid]
    try:
        for child in open(f"/proc/{pid}/task/{pid}/children").read().split():
            pids.append(int(child))
    except OSError:
        pass
    return pids


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / CLK


def reset_peak(pids):
    for pid in pids:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")


def peak_rss_mb(pids):
    total = 0
    for pid in pids:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return total / 1024


def wait_listen(port, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def wait_workers(port, proc, timeout=60):
    """Until every worker of serve --workers N is up (its /status says so): the supervisor listens at once,
    and a worker's start-up (imports) must not count in the measured run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
                if all(w["ready"] for w in json.load(r).get("workers", [])):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("serve's workers did not start")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the servers ---------------------------------------------------------------------------------
def prepare(workdir, size_mb):
    """A store holding one 100 MB image (incompressible) and a manifest per docs/formats.md."""
    state = os.path.join(workdir, "var")
    data = os.urandom(size_mb << 20)
    digest = hashlib.sha256(data).hexdigest()
    name = digest + ".cpio.zst"
    fsutil.atomic_write(os.path.join(state, "store", name), data, fsync=False)
    entry = {"file": name, "size": len(data), "sha256": digest}
    manifest = {"format": 1, "generation": "bench", "settings": {"secure": False, "update_interval": 60},
                "nodes": {"n001": {"macs": [MAC], "addresses": [], "asset_key": "",
                                   "artifacts": {"image": {"zst": entry}}}}}
    fsutil.atomic_write(os.path.join(state, "publish", "manifest.json"), json.dumps(manifest), fsync=False)
    conf = os.path.join(workdir, "conf")
    fsutil.atomic_write(os.path.join(conf, "wwfast.yaml"), "warewulf:\n  secure: false\ntftp:\n  enabled: false\n",
                        fsync=False)
    return state, conf, name


def start_ours(workdir, state, conf, mode, workers=None):
    port = free_port()
    extra = ["--workers", str(workers)] if workers else []     # default: serve's own (one worker per core)
    proc = subprocess.Popen([sys.executable, "-m", "stages.serve", "--conf", conf, "--state", state,
                             "--bind", "127.0.0.1", "--http-port", str(port), "--no-tftp", "--quiet",
                             "--send-mode", mode, *extra], cwd=ROOT)
    wait_listen(port, proc)
    wait_workers(port, proc)
    return proc, port, f"/image/{MAC}"


def start_nginx(workdir, state, name, workers="auto", sndbuf=None):
    port = free_port()
    prefix = os.path.join(workdir, f"nginx-{workers}-{sndbuf or 'auto'}")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    fsutil.atomic_write(conf, f"""
user root;
worker_processes {workers};
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 8192; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096{f" sndbuf={sndbuf}" if sndbuf else ""};
        location / {{ root {os.path.join(state, 'store')}; }}
    }}
}}
""", fsync=False)
    proc = subprocess.Popen(["nginx", "-p", prefix, "-c", conf, "-g", "daemon off;"])
    wait_listen(port, proc)
    return proc, port, "/" + name


def stop(proc):
    proc.send_signal(signal.SIGTERM if proc.args[0] != "nginx" else signal.SIGQUIT)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def tcp_prunes():
    """The kernel's count of receive-queue prunes (TcpExt PruneCalled): TCP memory pressure at work."""
    with open("/proc/net/netstat") as f:
        lines = [line.split() for line in f if line.startswith("TcpExt:")]
    return int(dict(zip(lines[0][1:], lines[1][1:])).get("PruneCalled", 0))


def measure(proc, port, path, conns, seconds, procs, size):
    pids = family(proc.pid)
    load(port, path, min(conns, 20), 1.0, procs)        # warm the page cache and the server
    pids = family(proc.pid)
    reset_peak(pids)
    cpu0, prunes0 = cpu_seconds(pids), tcp_prunes()
    nbytes, responses, errors, elapsed = load(port, path, conns, seconds, procs)
    cpu = cpu_seconds(pids) - cpu0
    gb = nbytes / 1e9
    return {"gbps": gb / elapsed, "cpu_per_gb": cpu / gb if gb else float("nan"), "rss": peak_rss_mb(pids),
            "responses": responses, "errors": errors, "gb": gb, "prunes": tcp_prunes() - prunes0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", help="default 100,1000; quick 100")
    ap.add_argument("--seconds", type=float, help="per run (default 6; quick 3)")
    ap.add_argument("--repeat", dest="runs", type=int, help="same as --runs")
    ap.add_argument("--size-mb", type=int, help="image size (default 100; quick 50)")
    ap.add_argument("--modes", default="sendfile", help="our send modes to run: sendfile,mmap")
    ap.add_argument("--client-procs", type=int, default=2)
    ap.add_argument("--serve-workers", type=int, default=None,
                    help="serve --workers N (default: serve's default, one per core); peak RSS sums them all")
    ap.add_argument("--nginx-1worker", action=argparse.BooleanOptionalAction, default=True,
                    help="also run nginx with worker_processes 1")
    ap.add_argument("--nginx-sndbuf", default="160k", metavar="SIZE",
                    help="also run nginx with `listen ... sndbuf=SIZE`, a cap like serve's send budget "
                         "(default 160k; empty: not run)")
    harness.add_arguments(ap, runs=3, warmup=1)
    args = harness.settle(ap.parse_args(), conns=("100,1000", "100"), seconds=(6.0, 3.0), size_mb=(100, 50))
    if shutil.which("nginx") is None:
        raise SystemExit("nginx is not installed (Debian package nginx)")
    conns_list = [int(c) for c in args.conns.split(",")]
    modes = args.modes.split(",")
    # nginx as shipped (one worker per core) is the goal; nginx with one worker is the same process count
    # as ours, which tells CPU-share effects on a loaded machine apart from per-byte cost.
    # nginx with a fixed send buffer is what stock nginx lacks and serve's send budget does: it tells the
    # budget's effect apart from the rest of the send path.
    labels = (["nginx"] + [f"wwfast-{m}" for m in modes] + (["nginx-1worker"] if args.nginx_1worker else [])
              + (["nginx-sndbuf"] if args.nginx_sndbuf else []))
    workdir = tempfile.mkdtemp(prefix="bench_http.")
    try:
        state, conf, name = prepare(workdir, args.size_mb)
        size = args.size_mb << 20
        runs = {}
        for _ in range(args.runs):
            for label in labels:
                if label.startswith("nginx"):
                    proc, port, path = start_nginx(workdir, state, name, "1" if label == "nginx-1worker" else "auto",
                                                   args.nginx_sndbuf if label == "nginx-sndbuf" else None)
                else:
                    proc, port, path = start_ours(workdir, state, conf, label.split("-", 1)[1], args.serve_workers)
                try:
                    for conns in conns_list:
                        r = measure(proc, port, path, conns, args.seconds, args.client_procs, size)
                        runs.setdefault((label, conns), []).append(r)
                        print(f"  {label:16} {conns:5} conns: {r['gbps']:.2f} GB/s, {r['cpu_per_gb']:.3f} CPU-s/GB, "
                              f"peak RSS {r['rss']:.0f} MB, {r['responses']} complete, {r['errors']} errors, "
                              f"{r['prunes']} TCP prunes",
                              flush=True)
                finally:
                    stop(proc)
        print(f"\nmedian of {args.runs} runs, {args.size_mb} MB image, {args.seconds:g} s per run, "
              f"{args.client_procs} client processes, loopback, {os.cpu_count()} CPUs")
        print("(ratio: median over repeats of ours/nginx measured back to back, which cancels most of the\n"
              " noise from other load on the machine)")
        print(f"{'server':16} {'conns':>5} {'GB/s':>6} {'CPU-s/GB':>9} {'peak RSS MB':>12} {'ratio GB/s':>11} "
              f"{'ratio CPU/GB':>13}")
        for conns in conns_list:
            ref = runs[("nginx", conns)]
            for label in labels:
                rs = runs[(label, conns)]
                ratio = statistics.median(r["gbps"] / b["gbps"] for r, b in zip(rs, ref))
                cpu_ratio = statistics.median(r["cpu_per_gb"] / b["cpu_per_gb"] for r, b in zip(rs, ref))
                print(f"{label:16} {conns:5} {statistics.median(r['gbps'] for r in rs):6.2f} "
                      f"{statistics.median(r['cpu_per_gb'] for r in rs):9.3f} "
                      f"{statistics.median(r['rss'] for r in rs):12.0f} {ratio:11.2f} {cpu_ratio:13.2f}")
        record(args, runs, labels, conns_list)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def record(args, runs, labels, conns_list):
    result = harness.Result("bench_http", f"{args.size_mb} MB image downloaded over and over by N keep-alive "
                            "connections: serve vs nginx (sendfile)", params=harness.params_of(args),
                            quick=args.quick, tools=("nginx",))
    for conns in conns_list:
        peer = runs[("nginx", conns)]
        for label in labels:
            if label == "nginx":
                continue
            ours = runs[(label, conns)]
            name = label if label.startswith("wwfast") else (
                f"nginx sndbuf={args.nginx_sndbuf} (reference)" if label == "nginx-sndbuf" else f"{label} (reference)")
            result.add(f"{conns} connections: throughput", ours, peer, key="gbps", unit="GB/s", better="higher",
                       ours_name=name, peer_name="nginx", goal=1.3 if conns >= 1000 and label == "wwfast-sendfile"
                       else None)
            result.add(f"{conns} connections: CPU per GB", ours, peer, key="cpu_per_gb", unit="s/GB",
                       ours_name=name, peer_name="nginx")
            result.add(f"{conns} connections: peak RSS", ours, peer, key="rss", unit="MB", ours_name=name,
                       peer_name="nginx", limit=200 if conns >= 1000 and label.startswith("wwfast") else None)
            result.add(f"{conns} connections: TCP receive-queue prunes (memory pressure)", ours, peer, key="prunes",
                       unit="prunes", ours_name=name, peer_name="nginx", cpu=False)
    result.write(args.results)


if __name__ == "__main__":
    main()
