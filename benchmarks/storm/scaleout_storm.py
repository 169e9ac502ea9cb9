"""One boot storm through the scale-out rig, and its figures (issue 16).

    nodes = storm_nodes(topo, manifest)                # [(index, id, mac)] in topology order
    out = run_storm(rig, topo, nodes, runtime, timeout=5, fault=("kill_cache", 1), fault_at=12.0)
    figures = summarise(out, rig, capacity_Bps, artifact_bytes)

A rack namespace runs one simulated-node process (storm.cachenode) for its nodes; all start together at
a shared T0. A fault (a rig method and its argument) is injected `fault_at` seconds after T0, or once the
nodes have received `fault_at_bytes` (a point in the storm's progress: the CI test's choice, since a run
faster than the fault-free one could otherwise end before its fault).
"""
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

from .cluster import ROOT
from .scaleout_rig import CACHE_PORT, HOSTS

HERE = ROOT / "benchmarks"
FAULTS = {
    "none": None,
    "kill-cache": ("kill_cache", 1),
    "blackhole-cache": ("blackhole_cache", 1),
    "kill-server-etcd": ("kill_server_and_etcd", 0),
    "publish": ("publish_gen2", None),
}


def runtime_shas(manifest_doc):
    """{node id: sha256 of the runtime overlay iPXE fetches} (zst, else raw, else gz: serve's default)."""
    out = {}
    for node_id, entry in manifest_doc["nodes"].items():
        encodings = entry["artifacts"]["runtime"]
        enc = next(e for e in ("zst", "raw", "gz") if e in encodings)
        out[node_id] = encodings[enc]["sha256"]
    return out


def blob_bytes(manifest_doc):
    """Bytes of the distinct kernel, image and system files the nodes fetch (what each cache holds)."""
    seen = {}
    for entry in manifest_doc["nodes"].values():
        for stage in ("kernel", "image", "system"):
            encodings = entry["artifacts"][stage]
            e = encodings[next(x for x in ("zst", "raw", "gz") if x in encodings)]
            seen[e["sha256"]] = e["size"]
    return sum(seen.values())


def _follow_progress(procs, fault_at_bytes):
    """Read every simulator's `bytes N` lines (also so their pipes never fill); the returned event is set
    once they add up to `fault_at_bytes`, or every simulator has ended."""
    received = [0] * len(procs)
    reached = threading.Event()
    lock = threading.Lock()
    open_readers = [len(procs)]

    def read(k, stream):
        for line in stream:
            if line.startswith("bytes "):
                with lock:
                    received[k] = int(line.split()[1])
                    if fault_at_bytes is not None and sum(received) >= fault_at_bytes:
                        reached.set()
        with lock:
            open_readers[0] -= 1
            if not open_readers[0]:
                reached.set()
    for k, (p, _) in enumerate(procs):
        threading.Thread(target=read, args=(k, p.stdout), daemon=True).start()
    return reached


def run_storm(rig, topo, nodes, runtime, work, timeout=5, rounds=3, stagger=0.0, fault=None, fault_at=None,
              backstop=900, fault_at_bytes=None):
    """Boot every node once; returns {"records", "t0", "fault_time", "sim_cpu_s", "cache_cpu_s", ...}."""
    work.mkdir(parents=True, exist_ok=True)
    procs = []
    for k in range(topo.racks):
        members = [n for n in nodes if topo.rack_of(n[0]) == k]
        if not members:
            continue
        order = [rig.server_url((k + j) % 3) for j in range(3)]      # the rack's DHCP server first
        plan = {"nodes": [{"id": node_id, "mac": mac, "ip": topo.node_address(i),
                           "start": stagger * i / max(1, len(nodes) - 1)} for i, node_id, mac in members],
                "servers": order, "timeout": timeout, "rounds": rounds, "attempts": 3, "retry_s": 10,
                "runtime": runtime}
        path = work / f"plan{k}.json"
        path.write_text(json.dumps(plan))
        out = work / f"out{k}.json"
        if out.exists():
            out.unlink()
        procs.append((subprocess.Popen(topo.exec_args(topo.rack_ns(k)) + [
            sys.executable, "-m", "storm.cachenode", str(path), str(out)], cwd=HERE, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=f"{HERE}:{ROOT}")), out))
    try:
        for p, _ in procs:
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a node simulator did not start")
        cpu0, origin0 = rig.cache_cpu(), rig.origin_blob_bytes()
        t0 = time.time() + 0.5
        for p, _ in procs:
            p.stdin.write(f"go {t0}\n")
            p.stdin.flush()
        progress = _follow_progress(procs, fault_at_bytes)
        fault_time = None
        if fault is not None and fault_at_bytes is not None:
            progress.wait(backstop)
        elif fault is not None:
            time.sleep(max(0.0, t0 + fault_at - time.time()))
        if fault is not None:
            fault_time = time.time()
            method, arg = fault
            getattr(rig, method)(*(() if arg is None else (arg,)))
        deadline = time.monotonic() + backstop
        for p, _ in procs:
            p.wait(max(1, deadline - time.monotonic()))
    finally:
        for p, _ in procs:            # an error or SIGTERM: no simulator outlives its storm
            if p.poll() is None:
                p.kill()
                p.wait()
    cpu1, origin1 = rig.cache_cpu(), rig.origin_blob_bytes()
    records, sim_cpu = [], 0.0
    for p, out in procs:
        doc = json.loads(out.read_text())
        records += doc["nodes"]
        sim_cpu += doc["cpu_s"]
    return {"records": records, "t0": t0, "fault_time": fault_time, "sim_cpu_s": sim_cpu,
            "cache_cpu_s": {c: cpu1[c] - cpu0.get(c, 0.0) for c in cpu1},
            "origin_blob_bytes": {s: origin1[s] - origin0.get(s, 0) for s in origin1 if s in origin0},
            "events": list(rig.events)}


def _pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * len(values) + 0.5) - 1))] if values else None


def summarise(out, rate_Bps, artifact_bytes):
    """The issue's figures of one storm. `rate_Bps`: one service host's capped link rate (bytes/s)."""
    recs = out["records"]
    t0 = out["t0"]
    failed = [r["id"] for r in recs if not r["ok"]]
    durations = [r["end"] - r["start"] for r in recs if r["ok"]]
    wall = max(r["end"] for r in recs) - t0
    per_cache, from_servers, verified, failures = {}, 0, 0, 0
    node_bytes = 0
    for r in recs:
        for stage, url, _, _, n, result in r["fetches"]:
            node_bytes += n
            if result != "ok":
                failures += 1
                continue
            verified += 1
            if stage in ("kernel", "image", "system"):
                u = urllib.parse.urlsplit(url)
                if u.port == CACHE_PORT:
                    per_cache[u.hostname] = per_cache.get(u.hostname, 0) + n
                else:
                    from_servers += n
    blob_total = sum(per_cache.values()) + from_servers
    mean = statistics.mean(per_cache.values()) if per_cache else 0
    p50, p99 = _pct(durations, 50), _pct(durations, 99)
    figures = {
        "nodes": len(recs), "failed": len(failed), "failed_nodes": failed[:20],
        "files_verified": verified, "fetch_failures": failures,
        "retried_boots": sum(1 for r in recs if r["attempts"] > 1),
        "all_booted_s": wall if not failed else None, "wall_s": wall,
        "p50_s": p50, "p99_s": p99, "max_s": max(durations) if durations else None,
        "p99_over_p50": (p99 / p50) if p50 else None,
        "bytes_per_cache": per_cache,
        "cache_balance_max_dev": (max(abs(v - mean) for v in per_cache.values()) / mean) if mean else None,
        "blob_bytes_from_caches_share": (sum(per_cache.values()) / blob_total) if blob_total else None,
        "node_bytes": node_bytes,
        "goodput_MBps": node_bytes / wall / 1e6,
        "capacity_MBps": 3 * rate_Bps / 1e6,
        "goodput_of_capacity": node_bytes / wall / (3 * rate_Bps),
        "origin_blob_bytes": out["origin_blob_bytes"],
        "origin_egress_over_caches_x_artifacts": (sum(out["origin_blob_bytes"].values()) / (3 * artifact_bytes))
        if len(out["origin_blob_bytes"]) == 3 else None,
        "cache_cpu_s": out["cache_cpu_s"],
        "cache_cores_busy": {c: s / wall for c, s in out["cache_cpu_s"].items()},
        "sim_cpu_s": out["sim_cpu_s"],
        "nodes_per_cache_host_per_min": len(recs) / 3 / (wall / 60),
        "fault": [e[1] for e in out["events"]], "fault_at_s": (out["fault_time"] - t0) if out["fault_time"] else None,
        "generations": sorted({r["generation"] for r in recs}),
    }
    return figures
