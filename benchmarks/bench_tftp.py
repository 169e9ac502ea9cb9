"""TFTP boot storm: N clients fetch a 1 MiB NBP at once, ours vs tftp-hpa's in.tftpd (and dnsmasq).

Every server runs in the same private network namespace (its own loopback, so
dnsmasq can have port 69 and nothing clashes with other users of the machine),
and the same load generator drives them all: benchmarks/tftp_loadgen.c, compiled
here with gcc, run as two processes (one epoll loop each) so it is not the
bottleneck. Each client asks blksize 1432 + tsize as iPXE does ("lockstep"), or
adds windowsize 4 as EDK2 UEFI does ("ws4"; a server without RFC 7440 support
leaves it out of its OACK and the client falls back to lock-step). Every byte
is checked against the file. Runs are interleaved across servers and repeated;
medians are printed with the ratio to tftp-hpa.

    .venv/bin/python benchmarks/bench_tftp.py [--clients 200,1000] [--runs 3] [--quick]

Contenders: "serve" is the serve stage as a user runs it (`python -m stages.serve`, HTTP beside
TFTP) in one process (--workers 1); "serve-2w" with --workers 2 (a supervisor and two workers sharing
the ports; serve's default on a 2-core machine), "wwfast" the standalone TFTP server
(`python -m wwfast.server.tftp`, "wwfast-2w" two SO_REUSEPORT processes). Server CPU comes from
each server's control group (benchmarks/accounting.py), so in.tftpd's forked children count too.
Goal (issue 13), on the stage as a user runs it: serve >= 2.5x in.tftpd's aggregate at 200 and
1,000 concurrent lock-step clients, zero failures. Result: benchmarks/results/bench_tftp.json.
"""
import argparse
import os
import pathlib
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import harness
from accounting import ProcessGroup

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
FILE_SIZE = 1 << 20
MODES = {"lockstep": (1432, 1), "ws4": (1432, 4)}
NOFILE = "--nofile={0}:{0}".format(__import__("resource").getrlimit(__import__("resource").RLIMIT_NOFILE)[1])
PORTS = {"wwfast": 6901, "wwfast-2w": 6902, "tftp-hpa": 6903, "dnsmasq": 69, "serve": 6904, "serve-2w": 6906}


class Netns:
    """A throw-away network namespace with only `lo` up (deleted on exit)."""

    def __init__(self):
        self.name = f"wwfast-bench-tftp-{os.getpid()}"

    def __enter__(self):
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    # in.tftpd's address lookup (AI_ADDRCONFIG) wants a configured non-loopback
                    # interface: a veth pair that stays inside the namespace.
                    ["ip", "link", "add", "wwb0", "type", "veth", "peer", "name", "wwb1"],
                    ["ip", "addr", "add", "10.253.0.1/24", "dev", "wwb0"],
                    ["ip", "link", "set", "wwb0", "up"], ["ip", "link", "set", "wwb1", "up"]):
            subprocess.run(self.prefix + cmd, check=True)
        return self

    @property
    def prefix(self):
        return ["ip", "netns", "exec", self.name]

    def __exit__(self, *exc):
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


def start_servers(ns, tmp, root, wanted):
    """{name: (process, ProcessGroup)} for the servers that are installed."""
    servers = {}
    env = dict(os.environ)
    commands = {
        "wwfast": [str(PYTHON), "-m", "wwfast.server.tftp", "--root", str(root), "--bind", "127.0.0.1",
                   "--port", str(PORTS["wwfast"])],
        "wwfast-2w": [str(PYTHON), "-m", "wwfast.server.tftp", "--root", str(root), "--bind", "127.0.0.1",
                      "--port", str(PORTS["wwfast-2w"]), "--workers", "2"],
        # -L: stay in the foreground (standalone, one forked child per transfer).
        # the serve stage as a user runs it (HTTP beside TFTP in one process, or --workers N)
        "serve": [str(PYTHON), "-m", "stages.serve", "--conf", str(tmp / "conf"), "--state", str(tmp / "state"),
                  "--bind", "127.0.0.1", "--http-port", "6905", "--tftp-port", str(PORTS["serve"]),
                  "--tftp-root", str(root), "--quiet", "--workers", "1"],
        "serve-2w": [str(PYTHON), "-m", "stages.serve", "--conf", str(tmp / "conf"), "--state", str(tmp / "state-2w"),
                     "--bind", "127.0.0.1", "--http-port", "6907", "--tftp-port", str(PORTS["serve-2w"]),
                     "--tftp-root", str(root), "--quiet", "--workers", "2"],
        "tftp-hpa": ["in.tftpd", "-L", "-a", f"127.0.0.1:{PORTS['tftp-hpa']}", "-s", str(root), "-u", "root"],
        "dnsmasq": ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--enable-tftp",
                    f"--tftp-root={root}", "--listen-address=127.0.0.1", "--bind-interfaces",
                    "--tftp-max=5000", "--quiet-tftp", "--user=root", "--group=root",
                    f"--pid-file={tmp}/dnsmasq.pid"],
    }
    (tmp / "conf").mkdir(exist_ok=True)
    (tmp / "state").mkdir(exist_ok=True)
    (tmp / "state-2w").mkdir(exist_ok=True)
    serve_help = subprocess.run([str(PYTHON), "-m", "stages.serve", "--help"], cwd=ROOT, capture_output=True, text=True)
    for name in wanted:
        if name == "serve-2w" and "--workers" not in serve_help.stdout:
            print("# serve-2w: serve has no --workers yet; skipped")
            continue
        exe = commands[name][0]
        if not (os.path.exists(exe) or shutil.which(exe)):
            print(f"# {name}: {exe} not installed, skipped")
            continue
        log = open(tmp / f"{name}.log", "w")
        group = ProcessGroup(f"tftp-{name}")
        # the servers hold one socket per transfer: lift the fd limit for them
        proc = subprocess.Popen(ns.prefix + ["prlimit", NOFILE] + commands[name],
                                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True, preexec_fn=group.preexec)
        group.adopt(proc.pid)
        servers[name] = (proc, group)
    return servers


def run_load(ns, loadgen, port, root, clients, mode, processes=2):
    """All clients at once, split over `processes` loadgens; returns a dict of the results."""
    blksize, window = MODES[mode]
    shares = [clients // processes + (1 if i < clients % processes else 0) for i in range(processes)]
    procs = [subprocess.Popen(ns.prefix + ["prlimit", NOFILE, str(loadgen), "127.0.0.1",
                                           str(port), "nbp.efi", str(root / "nbp.efi"), str(n), str(blksize),
                                           str(window)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in shares]
    time.sleep(0.2 + clients / 5000)   # sockets created, every process waiting for "go"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        results.append(dict(kv.split("=") for kv in out.split()))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)    # the load generators, reaped just now
    return {
        "loadgen_cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "seconds": max(float(r["seconds"]) for r in results),
        "ok": sum(int(r["ok"]) for r in results),
        "failed": sum(int(r["failed"]) for r in results),
        "p50": statistics.median(float(r["p50"]) for r in results),
        "p99": max(float(r["p99"]) for r in results),
    }


def wait_ready(ns, loadgen, servers, root):
    for name in list(servers):
        deadline = time.monotonic() + 15
        while True:
            if servers[name][0].poll() is not None:
                print(f"# {name} exited early (see its log); skipped")
                del servers[name]
                break
            r = run_load(ns, loadgen, PORTS[name], root, 1, "lockstep", processes=1)
            if r["ok"] == 1:
                break
            if time.monotonic() > deadline:
                print(f"# {name} does not answer; skipped")
                servers.pop(name)[0].terminate()
                break
            time.sleep(0.3)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", help="concurrent clients, comma separated (default 200,1000; quick 200)")
    parser.add_argument("--modes", default="lockstep,ws4")
    parser.add_argument("--servers", default="serve,serve-2w,wwfast,wwfast-2w,tftp-hpa,dnsmasq",
                        help="serve = the serve stage; wwfast = the standalone TFTP server (python -m "
                             "wwfast.server.tftp); -2w = two worker processes")
    parser.add_argument("--repeat", dest="runs", type=int, help="same as --runs")
    harness.add_arguments(parser, runs=3, warmup=1)
    args = harness.settle(parser.parse_args(), clients=("200,1000", "200"))
    if os.geteuid() != 0:
        sys.exit("bench_tftp needs root (a private network namespace; dnsmasq on port 69)")
    clients_list = [int(c) for c in args.clients.split(",")]
    modes = args.modes.split(",")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-tftp-"))
    os.chmod(tmp, 0o755)
    root = tmp / "root"
    root.mkdir(mode=0o755)
    (root / "nbp.efi").write_bytes(os.urandom(FILE_SIZE))
    loadgen = tmp / "tftp_loadgen"
    subprocess.run(["gcc", "-O2", "-o", str(loadgen), str(HERE / "tftp_loadgen.c")], check=True)
    results = {}
    with Netns() as ns:
        servers = start_servers(ns, tmp, root, args.servers.split(","))
        try:
            wait_ready(ns, loadgen, servers, root)
            print(f"# {FILE_SIZE} B file, blksize 1432, servers: {', '.join(servers)}; load generator: "
                  f"2 processes; {args.warmup} warm-up + {args.runs} interleaved runs each")
            for clients in clients_list:
                for mode in modes:
                    contenders = {name: measure(ns, loadgen, name, proc_group, root, clients, mode)
                                  for name, proc_group in servers.items()}
                    samples = harness.interleave(contenders, args.runs, args.warmup)
                    for name, runs in samples.items():
                        results[(clients, mode, name)] = runs
        finally:
            for proc, _ in servers.values():
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc, group in servers.values():
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                group.close()
    shutil.rmtree(tmp, ignore_errors=True)
    report(results, clients_list, modes)
    record(args, results, clients_list, modes)


def measure(ns, loadgen, name, proc_group, root, clients, mode):
    """One storm of `clients` against server `name`: a harness Sample (wall = the storm's time)."""
    _, group = proc_group

    def run():
        cpu0 = group.cpu_seconds()
        r = run_load(ns, loadgen, PORTS[name], root, clients, mode)
        sample = harness.Sample(r, wall=r["seconds"], cpu=group.cpu_seconds() - cpu0)
        time.sleep(1.2)   # let abandoned retransmits settle before the next server's turn
        return sample
    return run


def report(results, clients_list, modes):
    print()
    print(f"{'clients':>7} {'mode':8} {'server':10} {'median s':>9} {'MB/s':>8} {'p50 s':>7} {'p99 s':>7} "
          f"{'failed':>6} {'cpu s':>6} {'gen cpu':>7} {'vs tftp-hpa':>11}")
    for clients in clients_list:
        for mode in modes:
            base = results.get((clients, mode, "tftp-hpa"))
            base_s = statistics.median(r["seconds"] for r in base) if base else None
            for (c, m, name), runs in results.items():
                if (c, m) != (clients, mode):
                    continue
                med = statistics.median(r["seconds"] for r in runs)
                mbps = clients * FILE_SIZE / med / 1e6
                ratio = f"{base_s / med:.2f}x" if base_s else "-"
                print(f"{clients:7d} {mode:8} {name:10} {med:9.3f} {mbps:8.1f} "
                      f"{statistics.median(r['p50'] for r in runs):7.3f} {max(r['p99'] for r in runs):7.3f} "
                      f"{sum(r['failed'] for r in runs):6d} {statistics.median(r['cpu'] for r in runs):6.2f} "
                      f"{statistics.median(r['loadgen_cpu'] for r in runs):7.2f} {ratio:>11}")


def record(args, results, clients_list, modes):
    result = harness.Result("bench_tftp", f"TFTP storm: N clients fetch a {FILE_SIZE >> 20} MiB NBP at once, "
                            "aggregate time vs tftp-hpa in.tftpd", params=harness.params_of(args), quick=args.quick,
                            tools=("in.tftpd", "dnsmasq", "gcc"))
    for clients in clients_list:
        for mode in modes:
            peer = results.get((clients, mode, "tftp-hpa"))
            for name in ("serve", "serve-2w", "wwfast", "wwfast-2w", "dnsmasq"):
                ours = results.get((clients, mode, name))
                if ours is None:
                    continue
                goal = 2.5 if mode == "lockstep" and name.startswith("serve") and peer else None
                result.add(f"{clients} clients {mode}: all done", ours, peer, peer_name="tftp-hpa",
                           ours_name=name, goal=goal)
                result.add(f"{clients} clients {mode}: failed transfers", [r["failed"] for r in ours],
                           [r["failed"] for r in peer] if peer else None, peer_name="tftp-hpa", ours_name=name,
                           unit="transfers", limit=0 if name != "dnsmasq" else None)
                result.add(f"{clients} clients {mode}: load generator CPU seconds", ours, peer,
                           peer_name="tftp-hpa", ours_name=name, key="loadgen_cpu",
                           note="the clients' own CPU, on the same cores as the server's")
    result.write(args.results)


if __name__ == "__main__":
    main()
