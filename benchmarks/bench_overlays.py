"""Overlays: 10,000 nodes, the demo's overlay lists (system and runtime), rendered and packed.

Goal: the whole 10,000 in at most 10 s on the 2-core machine, and at least 50x Warewulf's algorithm.
Compared in the same run with Warewulf's algorithm (reference A5) on a sample of the same nodes, scaled
to 10,000: per node and context, a fresh temp dir; overlay files copied in and each template parsed and
rendered into it (with its own copy of the node data, as InitStruct does per template); then an external
`cpio -o -H newc` and `pigz` per archive (Warewulf writes both .img and .img.gz), with as many workers
as cores (its --workers default).

wwfast: `wwfast.builder.overlay_build.build_overlays` (templates compiled once, node-independent ones rendered
once, archives packed in memory with the newc writer, identical archives hard-linked, 2 processes).
Also measured: the no-change rerun and a one-node change (incremental).

    .venv/bin/python benchmarks/bench_overlays.py [--nodes 10000] [--runs 3] [--sample 40] [--lists demo] [--quick]
"""
import argparse
import multiprocessing
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import harness  # noqa: E402
from harness import cpu_seconds  # noqa: E402

from helpers.overlay_fixtures import edit_node, fake_ssh_keys, make_images, make_node, netdev  # noqa: E402
from wwfast import cpio  # noqa: E402
from wwfast.define import nodefile, nodes as nodedb  # noqa: E402
from wwfast.builder import overlays  # noqa: E402
from wwfast.builder.overlay_build import build_overlays  # noqa: E402
from wwfast.builder.render import Renderer  # noqa: E402
from wwfast.builder.template_views import node_view  # noqa: E402
from wwfast.define.settings import Settings  # noqa: E402


# The default lists (the demo profile's, without its demo-marker overlay, which gives every node its own
# runtime archive just to print a line on the console).
DEFAULT_SYSTEM = ["wwinit", "hostname", "hosts", "network", "ssh.host_keys", "issue", "resolv", "fstab"]
DEFAULT_RUNTIME = ["hosts", "ssh.authorized_keys", "users"]


def demo_lists(conf):
    """The overlay lists of the demo's default profile (conf/nodes.yaml)."""
    config = nodefile.read_config(str(conf))
    resolved = nodedb.resolve(config)
    first = resolved[sorted(resolved)[0]]
    return first["system overlay"], first["runtime overlay"]


def make_nodes(count, system, runtime):
    out = {}
    for i in range(count):
        node_id = f"n{i:05d}"
        mac = f"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}"
        out[node_id] = make_node(node_id, **{
            "image name": "busybox", "system overlay": list(system), "runtime overlay": list(runtime),
            "network devices": {"default": netdev(device="eth0", hwaddr=mac, ipaddr=f"10.{100 + (i >> 16)}."
                                                  f"{i >> 8 & 255}.{i & 255}", netmask="255.255.0.0",
                                                  gateway="10.100.0.1")}})
    return out


def fresh_state(base, name):
    state = pathlib.Path(base) / name
    make_images(state)
    fake_ssh_keys(state)
    return state


# ------------------------------------------------------------------------------- Warewulf's algorithm

_WW = {}


def _warewulf_node(node_id):
    """One node, both contexts: temp dir per context, copy + render each template, cpio | pigz."""
    conf, state, settings, all_nodes, lists = _WW["args"]
    renderer = _WW.get("renderer")
    if renderer is None:
        renderer = _WW["renderer"] = Renderer(settings, all_nodes, conf, state)
    out_dir = pathlib.Path(state) / "ww-provision" / node_id
    out_dir.mkdir(parents=True, exist_ok=True)
    for context, names in zip(("system", "runtime"), lists):
        with tempfile.TemporaryDirectory(prefix=".wwctl-overlay-", dir=state) as tmp:
            for name in names:
                for e in overlays.walk(overlays.overlay_tree(conf, name)):
                    dest = os.path.join(tmp, e.rel)
                    if e.kind == "dir":
                        os.makedirs(dest, exist_ok=True)
                        os.chmod(dest, e.mode)
                    elif e.kind == "symlink":
                        if os.path.lexists(dest):
                            os.unlink(dest)
                        os.symlink(e.target, dest)
                    elif e.kind == "file":
                        shutil.copy2(e.source, dest)
                    else:
                        # InitStruct per template: its own copy of the node; ParseGlob per template file
                        view = node_view(edit_node(all_nodes[node_id], lambda doc: None))
                        renderer._compiled.pop(e.source, None)
                        renderer.env.cache.clear()
                        outs, _ = renderer.render(e.source, e.rel, view, name, e.mode, e.uid, e.gid)
                        for o in outs:
                            path = os.path.join(tmp, o.rel)
                            os.makedirs(os.path.dirname(path), exist_ok=True)
                            if o.target is not None:
                                if os.path.lexists(path):
                                    os.unlink(path)
                                os.symlink(o.target, path)
                            elif o.data is None:
                                os.makedirs(path, exist_ok=True)
                            else:
                                with open(path, "wb") as f:
                                    f.write(o.data)
                                os.chmod(path, o.mode)
            img = out_dir / f"__{context.upper()}__.img"
            subprocess.run(f"find . | cpio --quiet -o -H newc > {img} && pigz -c {img} > {img}.gz",
                           shell=True, cwd=tmp, check=True)
    return node_id


def warewulf_style(conf, state, settings, all_nodes, lists, sample_ids, workers):
    _WW["args"] = (str(conf), str(state), settings, all_nodes, lists)
    _WW.pop("renderer", None)
    started = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_warewulf_node, sample_ids, chunksize=1)
    return time.perf_counter() - started


# ------------------------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="default 10000; quick 2000")
    parser.add_argument("--sample", type=int, default=40, help="nodes built the Warewulf way (scaled up)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--lists", choices=("default", "demo"), default="default",
                        help="overlay lists: the default ones, or conf/nodes.yaml's (adds demo-marker)")
    harness.add_arguments(parser, runs=3, warmup=0)
    args = harness.settle(parser.parse_args(), nodes=(10000, 2000))

    conf = ROOT / "conf"
    system, runtime = demo_lists(conf) if args.lists == "demo" else (DEFAULT_SYSTEM, DEFAULT_RUNTIME)
    all_nodes = make_nodes(args.nodes, system, runtime)
    settings = Settings(address="10.100.0.1", netmask="255.255.0.0", http_port=9873, secure=False,
                        update_interval=60, digest="bench")
    print(f"bench_overlays: {args.nodes} nodes, system {system}, runtime {runtime}, "
          f"{args.workers} workers, cpio writer {'compiled' if cpio.COMPILED else 'pure'}")
    base = tempfile.mkdtemp(prefix="bench-overlays-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    try:
        ours, ours_cpu, rerun, one = [], [], [], []
        for run in range(args.runs):
            state = fresh_state(base, f"ours{run}")
            cpu0, started = cpu_seconds(), time.perf_counter()
            memory = {}    # the build stage keeps it in its stamp between runs
            result = build_overlays(conf, state, settings, all_nodes, workers=args.workers, memory=memory)
            ours.append(time.perf_counter() - started)
            ours_cpu.append(cpu_seconds() - cpu0)
            assert len(result.rebuilt) == args.nodes
            started = time.perf_counter()
            again = build_overlays(conf, state, settings, all_nodes, workers=args.workers, memory=memory)
            rerun.append(time.perf_counter() - started)
            assert not again.rebuilt
            all_nodes["n00007"] = edit_node(all_nodes["n00007"], lambda doc: doc["tags"].update(bench=str(run)))
            started = time.perf_counter()
            changed = build_overlays(conf, state, settings, all_nodes, workers=args.workers, memory=memory)
            one.append(time.perf_counter() - started)
            assert changed.rebuilt == ["n00007"], changed.rebuilt[:5]
            size = sum(f.stat().st_size for f in (state / "build" / "overlays").glob("n0000*/*.cpio"))
            shutil.rmtree(state)
            print(f"  run {run + 1}: full {ours[-1]:.2f} s ({ours_cpu[-1]:.1f} CPU s), no-change {rerun[-1]:.2f} s, "
                  f"one node {one[-1]:.2f} s")
        ww_times, ww_cpu = [], []
        sample = sorted(all_nodes)[:: max(1, args.nodes // args.sample)][: args.sample]
        for run in range(max(1, args.runs - 1)):
            state = fresh_state(base, f"ww{run}")
            cpu0 = cpu_seconds()
            ww_times.append(warewulf_style(conf, state, settings, all_nodes, (system, runtime), sample,
                                           args.workers) * args.nodes / len(sample))
            ww_cpu.append((cpu_seconds() - cpu0) * args.nodes / len(sample))
            shutil.rmtree(state)
            print(f"  warewulf-style run {run + 1}: {len(sample)} nodes, scaled to {args.nodes}: {ww_times[-1]:.1f} s "
                  f"({ww_cpu[-1]:.0f} CPU s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)

    full, ww = statistics.median(ours), statistics.median(ww_times)
    full_cpu, ww_cpu_m = statistics.median(ours_cpu), statistics.median(ww_cpu)
    load = os.getloadavg()[0]
    print(f"\nper-node archive sizes (10 nodes): {size / 10 / 1024:.0f} KiB (system + runtime)")
    print(f"load average now {load:.1f} on {os.cpu_count()} cores (wall times stretch with it; CPU seconds less so)")
    print(f"{'':32} {'median':>10} {'CPU s':>10}")
    print(f"{'wwfast full build':32} {full:>9.2f}s {full_cpu:>9.1f}s   ({args.nodes / full:,.0f} nodes/s; "
          f"CPU / {args.workers} workers = {full_cpu / args.workers:.1f} s)")
    print(f"{'wwfast no-change rerun':32} {statistics.median(rerun):>9.2f}s")
    print(f"{'wwfast one node changed':32} {statistics.median(one):>9.2f}s")
    print(f"{'Warewulf-style (scaled)':32} {ww:>9.1f}s {ww_cpu_m:>9.0f}s   ({args.nodes / ww:,.1f} nodes/s)")
    print(f"ratio Warewulf-style / wwfast: {ww / full:.0f}x wall, {ww_cpu_m / full_cpu:.0f}x CPU (goal >= 50x); "
          f"full build {full:.1f} s wall {'meets' if full <= 10 else 'misses'} the 10 s goal")
    result = harness.Result("bench_overlays", f"render and pack the overlays of {args.nodes} nodes vs Warewulf's "
                            f"algorithm (a sample of {len(sample)} nodes, scaled)", params=harness.params_of(args),
                            quick=args.quick, tools=("cpio", "pigz"))
    ours_samples = [harness.Sample(wall=w, cpu=c) for w, c in zip(ours, ours_cpu)]
    result.add(f"full build, {args.nodes} nodes", ours_samples, [harness.Sample(wall=w, cpu=c) for w, c in
                                                               zip(ww_times, ww_cpu)],
               peer_name="Warewulf-style (scaled)", goal=50, limit=10 if args.nodes >= 10000 else None)
    result.add("no-change rerun", rerun)
    result.add("one node changed", one)
    result.write(args.results)


if __name__ == "__main__":
    main()
