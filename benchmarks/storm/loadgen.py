"""Drive benchmarks/storm_client.c: compile it, start its processes in the rack namespaces, start
them together, and read back what every node did.

Several processes (default: one per core, per rack) share the nodes; each loads its plan, says
"ready", and all get the same start time T0 (wall clock, ns), so power-on offsets line up across
processes and with the servers' own timestamps. Each process reports its own CPU seconds: the
run compares them with the servers' to show whether the load generator could have been the limit.
"""
import hashlib
import os
import pathlib
import subprocess
import time

from .cluster import ROOT

SOURCE = ROOT / "benchmarks" / "storm_client.c"


def build(work):
    """Compile the client once per source version (gcc -O2)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    binary = pathlib.Path(work) / f"storm_client-{digest}"
    if not binary.exists():
        tmp = binary.with_suffix(".tmp")
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(tmp), str(SOURCE)], check=True)
        os.replace(tmp, binary)
    return binary


class Attempt:
    __slots__ = ("node", "label", "start", "end", "bytes", "result", "srcport", "extra")

    def __init__(self, line):
        f = line.split()
        self.node, self.label = int(f[0]), f[1]
        self.start, self.end, self.bytes = int(f[2]) / 1e9, int(f[3]) / 1e9, int(f[4])
        self.result, self.srcport, self.extra = f[5], int(f[6]), int(f[7])


class LoadResult:
    def __init__(self, t0, attempts, summaries, wall):
        self.t0, self.attempts, self.summaries, self.wall = t0, attempts, summaries, wall
        self.tcp = {}                 # kernel TCP counters over the run (set by the caller)

    def by_node(self):
        out = {}
        for a in self.attempts:
            out.setdefault(a.node, []).append(a)
        return out

    @property
    def cpu_seconds(self):
        return sum(float(s["cpu_user"]) + float(s["cpu_sys"]) for s in self.summaries)

    @property
    def failed(self):
        return sum(int(s["failed"]) for s in self.summaries)


def run(binary, shards, work, timeout=3600):
    """`shards`: [(namespace, plan path)]. Returns a LoadResult."""
    procs = []
    for i, (ns, plan) in enumerate(shards):
        out = pathlib.Path(work) / f"attempts-{i}.txt"
        procs.append((subprocess.Popen(["ip", "netns", "exec", ns, str(binary), str(plan), str(out)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True), out))
    for proc, _ in procs:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise SystemExit(f"storm_client did not start: {line!r}")
    t0 = time.time_ns() + 200_000_000
    started = time.monotonic()
    for proc, _ in procs:
        proc.stdin.write(f"go {t0}\n")
        proc.stdin.flush()
    summaries, attempts = [], []
    for proc, out in procs:
        text, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            raise SystemExit(f"storm_client failed ({proc.returncode}): {text}")
        summaries.append(dict(kv.split("=") for kv in text.split()[1:]))
        attempts += [Attempt(line) for line in out.read_text().splitlines()]
        out.unlink()
    return LoadResult(t0 / 1e9, attempts, summaries, time.monotonic() - started)
