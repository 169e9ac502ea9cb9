"""Stages as a user runs them: `python -m stages.define` and `python -m stages.build` as processes.

define: 10,000 nodes over 20 nested profiles (bench_define's node file), `python -m stages.define --force`;
goal at most 1 s for the whole process.
build: 10,000 nodes with the default overlay lists (system: wwinit hostname hosts network ssh.host_keys issue
resolv fstab; runtime: hosts ssh.authorized_keys users) and the busybox demo image holding the Debian kernel;
`python -m stages.build` after define with STATE/build removed (a first build; the cluster's SSH keys, made
once, are kept); goal at most 10 s wall on 2 cores. Also measured: the compress stage's first publish of
that build (empty store), the no-change rerun and `--force` (every output rewritten over the previous one).
Secure mode is on (the default): each node's system overlay carries /etc/hosts for the whole cluster.

Each measure is a fresh process, timed from outside: wall seconds and the CPU seconds of the process and its
children (the fan-out's workers). Rounds interleave the measures, after a warm-up round. With --baseline DIR
(a checkout of earlier code, e.g. `git worktree add /tmp/base main`, its Cython modules built) the same
stages of that checkout run in the same rounds, on their own state, as the peer: before/after on one load.

    .venv/bin/python benchmarks/bench_stages.py [--nodes 10000] [--runs 3] [--warmup 1] [--baseline DIR] [--quick]
"""
import argparse
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import harness  # noqa: E402
from bench_define import make_conf as make_define_conf  # noqa: E402
from wwfast.builder import demo_image, images  # noqa: E402

SYSTEM = ["wwinit", "hostname", "hosts", "network", "ssh.host_keys", "issue", "resolv", "fstab"]
RUNTIME = ["hosts", "ssh.authorized_keys", "users"]


def make_build_conf(conf, count):
    """nodes.yaml: one profile with the default lists, `count` nodes with one NIC each; wwfast.yaml."""
    lines = ["nodeprofiles:", "  default:", "    image name: demo", "    kernel:",
             "      args: [console=ttyS0, quiet]", f"    system overlay: [{', '.join(SYSTEM)}]",
             f"    runtime overlay: [{', '.join(RUNTIME)}]", "    network devices:",
             "      default: {device: eth0, netmask: 255.255.0.0, gateway: 10.100.0.1}", "nodes:"]
    for i in range(count):
        lines += [f"  n{i:05d}:", "    profiles: [default]", "    network devices:", "      default:",
                  f"        hwaddr: \"52:54:00:{i >> 16 & 255:02x}:{i >> 8 & 255:02x}:{i & 255:02x}\"",
                  f"        ipaddr: 10.{100 + (i >> 16)}.{i >> 8 & 255}.{i & 255}"]
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "nodes.yaml").write_text("\n".join(lines) + "\n")
    (conf / "wwfast.yaml").write_text("ipaddr: 10.100.0.1\nnetmask: 255.255.0.0\nwarewulf:\n  port: 9873\n")


def stage(name, conf, state, *extra, tree=ROOT):
    """A stage of the checkout `tree` as a process (its output checked); returns the harness sample of it."""
    cmd = [sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state), *extra]

    def run():
        out = subprocess.run(cmd, cwd=tree, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
        return {"lines": out.stdout.count("\n")}
    return harness.timed(run)


def measure_round(tree, define_conf, define_state, conf, state):
    # The last round's outputs are moved aside, not deleted: for about 30 s after a mass delete ext4 skips
    # the recently freed inodes when it allocates new ones (recently_deleted() in perf), which doubled the
    # first build's time here. A first build on a real server does not follow the deletion of 30,000 files.
    # (ext4 makes that check only without a journal, as this machine's root file system is mounted; with
    # BENCH_TMP on a journaled ext4 the build's system time here was 3.6 s against 12 s.)
    trash = state.parent / "trash"
    trash.mkdir(exist_ok=True)
    for name in ("build", "store", "publish"):
        if (state / name).exists():
            os.rename(state / name, trash / f"{state.name}-{name}-{len(os.listdir(trash))}")
    subprocess.run(["sync"], check=True)     # no writeback left over from the round before
    return {"define": stage("define", define_conf, define_state, "--force", tree=tree),
            "build": stage("build", conf, state, tree=tree),
            "compress": stage("compress", conf, state, "--force", tree=tree),
            "rerun": stage("build", conf, state, tree=tree),
            "force": stage("build", conf, state, "--force", tree=tree)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="default 10000; quick 2000")
    parser.add_argument("--baseline", type=pathlib.Path, help="a checkout of earlier code, measured as the peer")
    harness.add_arguments(parser, runs=3, warmup=1)
    args = harness.settle(parser.parse_args(), nodes=(10_000, 2_000))
    trees = {"wwfast": ROOT}
    if args.baseline:
        trees["baseline"] = args.baseline.resolve()
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-stages-", dir=os.environ.get("BENCH_TMP", "/var/tmp")))
    try:
        define_conf, conf = base / "define-conf", base / "conf"
        define_conf.mkdir()
        make_define_conf(str(define_conf), args.nodes)
        make_build_conf(conf, args.nodes)
        version = demo_image.make_demo_image(base / "tree")
        dirs = {}
        for who, tree in trees.items():
            state = base / f"var-{who}"
            images.import_image(base / "tree", "demo", state, log=lambda *_: None)
            stage("define", conf, state, tree=tree)   # the build's node database
            dirs[who] = (tree, define_conf, base / f"define-var-{who}", conf, state)
        print(f"bench_stages: {args.nodes} nodes; demo image with kernel {version}; state in {base}; "
              f"{', '.join(f'{k} = {v}' for k, v in trees.items())}", flush=True)
        samples = {who: {k: [] for k in ("define", "build", "compress", "rerun", "force")} for who in trees}
        for round_no in range(args.warmup + args.runs):
            order = list(trees)[round_no % len(trees):] + list(trees)[:round_no % len(trees)]
            for who in order:
                got = measure_round(*dirs[who])
                tag = "warm-up" if round_no < args.warmup else f"run {round_no - args.warmup + 1}"
                print(f"  {tag:8s} {who:9s} " + "  ".join(f"{k} {s['wall']:.2f} s ({s['cpu']:.2f} cpu)"
                                                     for k, s in got.items()), flush=True)
                if round_no >= args.warmup:
                    for k, s in got.items():
                        samples[who][k].append(s)
        outputs = sum(1 for p in (dirs["wwfast"][4] / "build").rglob("*") if p.is_file())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    full = args.nodes >= 10_000
    result = harness.Result("bench_stages", f"define and build as processes, {args.nodes} nodes (build: default "
                            "overlay lists, busybox demo image with the Debian kernel)",
                            params=harness.params_of(args), quick=args.quick)
    peer = samples.get("baseline")
    peer_name = f"baseline {describe(args.baseline)}" if args.baseline else None
    for key, measure, limit in (
            ("define", f"python -m stages.define --force, {args.nodes} nodes / 20 nested profiles", 1.0),
            ("build", f"python -m stages.build, first build, {args.nodes} nodes", 10.0),
            ("compress", "python -m stages.compress, first publish of that build (empty store)", None),
            ("rerun", "python -m stages.build, no change", None),
            ("force", "python -m stages.build --force", None)):
        result.add(measure, samples["wwfast"][key], peer[key] if peer else None, peer_name=peer_name,
                   limit=limit if full and limit else None)
    result.detail("build_outputs", outputs)
    result.detail("load_note", "measured on a shared machine (several agents); wall stretches with its load, "
                  "CPU seconds less so")
    result.write(args.results)


def describe(tree):
    out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True)
    return out.stdout.strip() or str(tree)


if __name__ == "__main__":
    main()
