"""Scale-out storm (issue 16): N simulated nodes boot through 3 nginx caches in front of 3 wwfast servers that
share etcd, with the service hosts' links capped (tc tbf) so the run is bound by the network; one storm
fault-free, then one per fault injected at 40% of the fault-free time.

    .venv/bin/python benchmarks/bench_scaleout.py [--nodes 300] [--racks 3] [--image-mb 4] [--rate 200mbit]
        [--timeout 5] [--stagger 0] [--faults none,kill-cache,blackhole-cache,kill-server-etcd,publish]
        [--serve-workers 1] [--quick] [--runs 1]

The published states are built as a user builds them (benchmarks/storm/cluster.py: image import, define,
build, compress; the scripts from default.ipxe's cache-tier branch), two generations (the second for the
publish fault). Per storm a fresh rig (benchmarks/storm/scaleout_rig.py: etcd member, `wwfast serve`,
nginx cache and `wwfast cluster announce-cache` on each service host; caches start cold) and the node
simulator (benchmarks/storm/cachenode.py, which checks every body's sha256). Records in
benchmarks/results/bench_scaleout.json (harness format) the issue's figures: failed nodes and files
verified per run; cache byte balance; share of blob bytes from caches and origin egress; goodput against
the capped capacity; completion with a cache lost against fault-free; p99/p50; publish propagation;
cache tier CPU; nodes per cache host per minute; extrapolation to 10,000 and 100,000 nodes on 25 GbE.
"""
import argparse
import json
import os
import pathlib
import shutil
import signal
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import harness  # noqa: E402
from storm import cluster  # noqa: E402
from storm.scaleout_rig import ScaleOutRig  # noqa: E402
from storm.scaleout_storm import FAULTS, blob_bytes, run_storm, runtime_shas, summarise  # noqa: E402
from storm.topology import LinkShape, Topology, _rate_bytes  # noqa: E402
from wwfast import layout  # noqa: E402

WORK = pathlib.Path(os.environ.get("WWFAST_BOOTSTORM_DIR", "/var/tmp/wwfast-bootstorm"))
GBE25 = 25e9 / 8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nodes", type=int, help="simulated nodes (default 300; quick 60)")
    p.add_argument("--racks", type=int, default=3)
    p.add_argument("--image-mb", type=float, help="image size in MiB (default 4; quick 2); the kernel is extra")
    p.add_argument("--rate", default="200mbit", help="each service host's link cap (tbf)")
    p.add_argument("--timeout", type=int, default=5, help="transfer timeout (settings cluster: transfer timeout)")
    p.add_argument("--stagger", type=float, default=0.0, help="power nodes on evenly over this many seconds")
    p.add_argument("--faults", default=",".join(FAULTS), help="storms to run, in order (the first: none)")
    p.add_argument("--prestage-manifest", action="store_true",
                   help="publish fault: the new manifest is copied to every server beforehand (as its files are), "
                        "rather than pulled from the publishing server through its loaded link")
    p.add_argument("--serve-workers", type=int, default=1,
                   help="`wwfast serve --workers N` on each service host (default 1: the machine has few cores)")
    p.add_argument("--work", type=pathlib.Path, default=WORK)
    harness.add_arguments(p, runs=1, warmup=0)
    args = p.parse_args(argv)
    harness.settle(args, nodes=(300, 60), image_mb=(4, 2))
    return args


def prepare(args, topo, say=print):
    """Two published generations of the same nodes (the second one's image differs)."""
    block = f"cluster:\n  caches: [http://{topo.server_addresses(0)[0]}:9874]\n  transfer timeout: {args.timeout}\n"
    addresses = [topo.node_address(i) for i in range(args.nodes)]
    out = []
    for mb in (args.image_mb, args.image_mb + 0.25):
        spec = cluster.ClusterSpec(args.nodes, mb, False, addresses, topo.server_addresses(0)[0], "ipxe.efi",
                                   cluster_block=block)
        started = time.monotonic()
        base, _, state, _, _ = cluster.prepare(args.work, spec, say=say)
        with open(layout.manifest(str(state))) as f:
            out.append((state, json.load(f)))
        say(f"# generation {out[-1][1]['generation']} under {base} ({time.monotonic() - started:.0f} s)")
    return out


def publish_latency(rig, needle="serving manifest generation {} "):
    """Seconds from the publish transaction to each server serving the new generation (or, with the other
    needle, to the pointer reaching it)."""
    pointer = getattr(rig, "published2", None)
    if pointer is None:
        return None
    times = rig.switch_times(pointer["generation"], needle)
    return {server: t - pointer["published"] for server, t in sorted(times.items())}


def main(argv=None):
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if os.geteuid() != 0:
        sys.exit("bench_scaleout needs root (network namespaces, tc, iptables)")
    tag = f"wwx{os.getpid()}"
    rate = _rate_bytes(args.rate)
    topo = Topology(tag, nodes=args.nodes, racks=args.racks, servers=3, server_link=LinkShape(rate=args.rate))
    (state1, man1), (state2, man2) = prepare(args, topo)
    runtime = {man1["generation"]: runtime_shas(man1), man2["generation"]: runtime_shas(man2)}
    artifacts = blob_bytes(man1)
    nodes = [(i, cluster.node_id(i), cluster.node_mac(i)) for i in range(args.nodes)]
    run_dir = args.work / f"scaleout-{os.getpid()}"
    samples, details = {}, {}
    print(f"# {args.nodes} nodes in {args.racks} racks; 3 service hosts, links {args.rate}; "
          f"{artifacts / 1e6:.1f} MB of distinct blobs per generation")
    try:
        with topo:
            fault_free = None
            for run in range(args.runs):
                for name in args.faults.split(","):
                    fault = FAULTS[name]
                    if fault is not None and fault_free is None:
                        raise SystemExit("the fault-free storm comes first (--faults none,...)")
                    rig = ScaleOutRig(topo, run_dir / f"{name}-{run}", state1, state2, transfer_timeout=args.timeout,
                                      prestage_manifest=args.prestage_manifest, serve_workers=args.serve_workers)
                    try:
                        rig.start()
                        out = run_storm(rig, topo, nodes, runtime, run_dir / f"{name}-{run}" / "nodes",
                                        timeout=args.timeout, stagger=args.stagger, fault=fault,
                                        fault_at=0.4 * fault_free if fault else None)
                    finally:
                        rig.stop()
                    f = summarise(out, rate, artifacts)
                    f["publish_latency_s"] = publish_latency(rig)
                    f["pointer_latency_s"] = publish_latency(rig, "pointer to generation {} seen")
                    f["members_at_start"] = "3 servers, 3 caches"
                    if fault is None:
                        fault_free = f["wall_s"] if fault_free is None else fault_free
                    f["wall_over_fault_free"] = f["wall_s"] / fault_free
                    samples.setdefault(name, []).append(harness.Sample(f, wall=f["wall_s"], cpu=f["sim_cpu_s"]))
                    details.setdefault(name, []).append(f)
                    print_run(name, f)
                    if f["failed"]:
                        print(json.dumps([r for r in out["records"] if not r["ok"]][:2], indent=1)[:6000])
                    if "keep" not in os.environ.get("WWFAST_BOOTSTORM", ""):
                        shutil.rmtree(run_dir / f"{name}-{run}", ignore_errors=True)
    finally:
        if "keep" not in os.environ.get("WWFAST_BOOTSTORM", ""):
            shutil.rmtree(run_dir, ignore_errors=True)
    return record(args, samples, details, rate, artifacts)


def _n(value, fmt=".2f", scale=1.0):
    return "-" if value is None else format(value * scale, fmt)


def print_run(name, f):
    booted = f"{f['all_booted_s']:.1f} s" if f["all_booted_s"] is not None else "NOT ALL BOOTED"
    print(f"  {name:17s} all booted {booted} ({_n(f['wall_over_fault_free'])}x fault-free); failed {f['failed']} "
          f"{f['failed_nodes'][:3]}; files verified {f['files_verified']}; failed fetches {f['fetch_failures']}; "
          f"p50 {_n(f['p50_s'], '.1f')} p99 {_n(f['p99_s'], '.1f')} s (p99/p50 {_n(f['p99_over_p50'])}); goodput "
          f"{f['goodput_MBps']:.1f} MB/s = {_n(f['goodput_of_capacity'], '.0f', 100)}% of {f['capacity_MBps']:.1f}; "
          f"cache balance ±{_n(f['cache_balance_max_dev'], '.1f', 100)}%; from caches "
          f"{_n(f['blob_bytes_from_caches_share'], '.2f', 100)}%; origin egress "
          f"{_n(f['origin_egress_over_caches_x_artifacts'])} x caches x artifacts; cache cores "
          f"{ {c: round(v, 3) for c, v in f['cache_cores_busy'].items()} }; publish {f['publish_latency_s']} "
          f"(pointer seen {f.get('pointer_latency_s')})",
          flush=True)


def record(args, samples, details, rate, artifacts):
    result = harness.Result("bench_scaleout", "boot storm through 3 nginx caches + 3 wwfast servers on etcd, "
                            "capped links, one fault per storm", params=harness.params_of(args), quick=args.quick,
                            tools=("nginx", "etcd"))
    free = samples.get("none", [])
    for name, runs in samples.items():
        result.add(f"all booted ({name})", runs, free if name != "none" else None, ours_name=name,
                   peer_name="fault-free", key="wall_s", cpu=True,
                   limit=None if name == "none" else None)
        result.add(f"failed nodes ({name})", runs, key="failed", unit="nodes", limit=0, ours_name=name)
        result.add(f"p99/p50 completion ({name})", runs, key="p99_over_p50", unit="x", limit=2, ours_name=name)
    for name in ("kill-cache", "blackhole-cache"):
        if name in samples:
            result.add(f"completion with one cache lost ({name}) / fault-free", samples[name],
                       key="wall_over_fault_free", unit="x", limit=1.7, ours_name=name)
    if free:
        result.add("cache byte balance: largest deviation from the mean", free, key="cache_balance_max_dev",
                   unit="fraction", limit=0.10)
        result.add("blob bytes from caches", free, key="blob_bytes_from_caches_share", unit="fraction",
                   better="higher", limit=0.99)
        result.add("origin egress / (caches x artifact bytes)", free, key="origin_egress_over_caches_x_artifacts",
                   unit="x", limit=1.05)
        result.add("goodput / capped capacity", free, key="goodput_of_capacity", unit="fraction", better="higher",
                   limit=0.90)
        result.add("nodes per cache host per minute", free, key="nodes_per_cache_host_per_min", unit="nodes/min",
                   better="higher")
        f = details["none"][len(details["none"]) // 2]
        per_node = f["node_bytes"] / f["nodes"]
        cores_per_Bps = max(f["cache_cores_busy"].values()) / (f["goodput_MBps"] * 1e6 / 3)
        extrapolation = {
            "bytes_per_node": per_node,
            "goodput_fraction_used": f["goodput_of_capacity"],
            "cache_cores_at_25GbE": cores_per_Bps * GBE25,
            "nodes_per_cache_host_per_min_at_25GbE": GBE25 * f["goodput_of_capacity"] / per_node * 60,
        }
        for n in (10_000, 100_000):
            for hosts in (3, 10):
                extrapolation[f"{n}_nodes_{hosts}_cache_hosts_s"] = n * per_node / (hosts * GBE25 * f["goodput_of_capacity"])
        result.detail("extrapolation_25GbE", extrapolation)
        print(f"extrapolation to 25 GbE cache hosts: {json.dumps(extrapolation, indent=1)}")
    if "publish" in details:
        lat = [max(d["publish_latency_s"].values()) for d in details["publish"] if d["publish_latency_s"]]
        if lat:
            result.add("publish reaches all servers (serving it)", lat, unit="s", limit=2.0, ours_name="publish",
                       note="the new manifest comes from etcd with the pointer (zstd); its store files were "
                            "copied to every server beforehand")
        seen = [max(d["pointer_latency_s"].values()) for d in details["publish"] if d.get("pointer_latency_s")]
        if seen:
            result.add("publish pointer reaches all servers (etcd watch)", seen, unit="s", limit=2.0,
                       ours_name="publish")
    result.detail("runs", details)
    result.detail("capacity_MBps", 3 * rate / 1e6)
    result.detail("distinct_blob_bytes", artifacts)
    path = result.write(args.results)
    failed = sum(d["failed"] for runs in details.values() for d in runs)
    print(f"failed nodes in all storms: {failed}; results: {path}")
    return {"path": str(path), "failed": failed}


if __name__ == "__main__":
    sys.exit(1 if main()["failed"] else 0)
