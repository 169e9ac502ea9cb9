"""define stage: 10,000 nodes over 20 nested profiles, parsed, merged, validated and written.

Goal: under 1 s on the 2-core machine. There is no peer tool for this stage, so
each phase is compared in the same run with the obvious alternative:
  parse   our YAML 1.2 loader           vs yaml.load(CSafeLoader)  (PyYAML with libyaml)
  merge   one merge per profile chain    vs re-merging deep copies per node (Warewulf
                                           merges profiles per node, per request)
  write   canonjson (shared subtrees)    vs json.dumps(sort_keys, indent=1)
Prints medians of several runs and the ratios.

    .venv/bin/python benchmarks/bench_define.py [--nodes 10000] [--runs 5] [--quick]
"""
import argparse
import copy
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from wwfast import canonjson  # noqa: E402
from wwfast.builder import inventory  # noqa: E402
from wwfast.define import nodefile, nodes  # noqa: E402
from wwfast.fsutil import atomic_write  # noqa: E402
from wwfast.define.merge import expand_profiles, merge  # noqa: E402
from wwfast.define.schema import NODE, PROFILE  # noqa: E402

PROFILES = 20


def make_conf(directory, count):
    lines = ["nodeprofiles:"]
    for p in range(PROFILES):
        lines += [f"  p{p}:", f"    comment: level {p}"]
        if p:
            lines.append(f"    profiles: [p{p - 1}]")
        lines += ["    kernel:", f"      args: [arg{p}=1]", f"    system overlay: [ov{p}]",
                  "    tags:", f"      level{p}: \"{p}\""]
        if p == 0:
            lines += ["    image name: demo", "    runtime overlay: [hosts]", "    network devices:",
                      "      default: {device: eth0, netmask: 255.255.0.0, gateway: 10.0.0.1}"]
    lines.append("nodes:")
    for i in range(count):
        top = PROFILES - 1 - (i % 3)  # three different chains, as racks of different kinds would have
        lines += [f"  n{i:05d}:", f"    profiles: [p{top}]", "    network devices:", "      default:",
                  f"        hwaddr: \"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\"",
                  f"        ipaddr: 10.{100 + (i >> 16)}.{i >> 8 & 255}.{i & 255}"]
    for p in range(PROFILES):  # site overlays, so overlay names are checked as in real use
        os.makedirs(os.path.join(directory, "overlays", f"ov{p}", "rootfs"), exist_ok=True)
    path = os.path.join(directory, "nodes.yaml")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def naive_resolve(config):
    """Per node: deep copies of every profile merged afresh (no sharing, no cache)."""
    lists = {n: p.get("profiles", []) for n, p in config.profiles.items()}
    out = {}
    for node_id, partial in config.nodes.items():
        merged = {}
        for name in expand_profiles(partial.get("profiles", ()), lists):
            merged = merge(merged, copy.deepcopy(config.profiles[name]), PROFILE)
        merged.pop("comment", None)
        merged = merge(merged, copy.deepcopy(partial), NODE)
        out[node_id] = nodes.finalize(node_id, merged, [], merged.get("comment", ""))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, help="default 10000; quick 2000")
    harness.add_arguments(ap, runs=5, warmup=0)
    args = harness.settle(ap.parse_args(), nodes=(10_000, 2_000))
    with tempfile.TemporaryDirectory() as tmp:
        conf, state = os.path.join(tmp, "conf"), os.path.join(tmp, "var")
        os.makedirs(conf)
        path = make_conf(conf, args.nodes)
        text = open(path).read()
        phases = {k: [] for k in ("parse", "merge+validate", "write", "total", "cpu", "pyyaml", "naive merge",
                                  "json.dumps", "stage process")}
        for _ in range(args.runs):
            cpu = time.process_time()
            t_parse, config = timed(lambda: nodefile.read_config(conf))
            t_merge, db = timed(lambda: nodes.resolve(config, inventory.image_names(state),
                                                       inventory.overlay_names(conf)))
            t_write, _ = timed(lambda: nodes.write_db(state, db))
            phases["cpu"].append(time.process_time() - cpu)  # less disturbed by other loads than wall time
            phases["parse"].append(t_parse)
            phases["merge+validate"].append(t_merge)
            phases["write"].append(t_write)
            phases["total"].append(t_parse + t_merge + t_write)
            phases["pyyaml"].append(timed(lambda: yaml.load(text, Loader=yaml.CSafeLoader))[0])
            phases["naive merge"].append(timed(lambda: naive_resolve(config))[0])
            phases["json.dumps"].append(timed(lambda: atomic_write(
                os.path.join(tmp, "std.json"),
                json.dumps({"format": 1, "nodes": db}, sort_keys=True, indent=1) + "\n"))[0])
            phases["stage process"].append(timed(lambda: subprocess.run(
                [sys.executable, "-m", "stages.define", "--conf", conf, "--state", state, "--force"],
                cwd=ROOT, check=True, capture_output=True))[0])
        assert canonjson.dumps({"format": 1, "nodes": db}) + "\n" == open(os.path.join(tmp, "std.json")).read()
        med = {k: statistics.median(v) for k, v in phases.items()}
        size = os.path.getsize(nodes.db_path(state))
        print(f"bench_define: {args.nodes} nodes, {PROFILES} nested profiles, median of {args.runs} runs "
              f"(nodes.yaml {len(text) / 1e6:.1f} MB, nodes.json {size / 1e6:.1f} MB)")
        print(f"  parse           {med['parse']:.3f} s   PyYAML CSafeLoader {med['pyyaml']:.3f} s   "
              f"ratio {med['pyyaml'] / med['parse']:.2f}x")
        print(f"  merge+validate  {med['merge+validate']:.3f} s   naive per-node merge {med['naive merge']:.3f} s   "
              f"ratio {med['naive merge'] / med['merge+validate']:.2f}x")
        print(f"  write           {med['write']:.3f} s   json.dumps(indent=1) {med['json.dumps']:.3f} s   "
              f"ratio {med['json.dumps'] / med['write']:.2f}x")
        print(f"  total (in process)          {med['total']:.3f} s   goal < 1 s: "
              f"{'met' if med['total'] < 1 else 'NOT met'}")
        print(f"  total CPU time (in process) {med['cpu']:.3f} s   (load average now {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores: wall times grow with it)")
        print(f"  merge+write (parse aside)   {med['merge+validate'] + med['write']:.3f} s")
        print(f"  python -m stages.define --force (whole process) {med['stage process']:.3f} s")
    result = harness.Result("bench_define", f"define stage: {args.nodes} nodes over {PROFILES} nested profiles",
                            params=harness.params_of(args), quick=args.quick)
    for ours, peer, peer_name in (("parse", "pyyaml", "PyYAML CSafeLoader"), ("merge+validate", "naive merge",
                                                                              "naive per-node merge"),
                                  ("write", "json.dumps", "json.dumps(indent=1)")):
        result.add(ours, phases[ours], phases[peer], peer_name=peer_name)
    result.add("total in process", phases["total"], limit=1.0 if args.nodes >= 10_000 else None)
    result.add("total CPU in process", phases["cpu"])
    result.add("python -m stages.define --force", phases["stage process"])
    result.write(args.results)


if __name__ == "__main__":
    main()
