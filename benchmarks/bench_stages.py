"""Stages as a user runs them: `python -m stages.define` and `python -m stages.build` as processes.

define: 10,000 nodes over 20 nested profiles (bench_define's node file), `python -m stages.define --force`;
goal at most 1 s for the whole process.
build: 10,000 nodes with the default overlay lists (system: wwinit hostname hosts network ssh.host_keys issue
resolv fstab; runtime: hosts ssh.authorized_keys users) and the busybox demo image holding the Debian kernel;
`python -m stages.build` after define with STATE/build removed (a first build; the cluster's SSH keys, made
once, are kept); goal at most 10 s wall on 2 cores. Also measured: the no-change rerun and `--force` (every
output rewritten over the previous one).

Each measure is a fresh process, timed from outside: wall seconds and the CPU seconds of the process and its
children (the fan-out's workers). Rounds interleave the measures, after a warm-up round.

    .venv/bin/python benchmarks/bench_stages.py [--nodes 10000] [--runs 3] [--warmup 1] [--quick]
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
from wwfast.build import demo_image, images  # noqa: E402

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


def stage(name, conf, state, *extra):
    """A stage as a process (its output checked); returns the harness sample of it."""
    cmd = [sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state), *extra]

    def run():
        out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout}{out.stderr}")
        return {"lines": out.stdout.count("\n")}
    return harness.timed(run)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, help="default 10000; quick 2000")
    harness.add_arguments(parser, runs=3, warmup=1)
    args = harness.settle(parser.parse_args(), nodes=(10_000, 2_000))
    base = pathlib.Path(tempfile.mkdtemp(prefix="bench-stages-", dir=os.environ.get("BENCH_TMP", "/var/tmp")))
    try:
        define_conf, define_state = base / "define-conf", base / "define-var"
        define_conf.mkdir()
        make_define_conf(str(define_conf), args.nodes)
        conf, state = base / "conf", base / "var"
        make_build_conf(conf, args.nodes)
        version = demo_image.make_demo_image(base / "tree")
        images.import_image(base / "tree", "demo", state, log=lambda *_: None)
        print(f"bench_stages: {args.nodes} nodes; demo image with kernel {version}; state in {base}", flush=True)
        stage("define", conf, state)   # the build's node database (define's own measure uses its own conf)
        samples = {k: [] for k in ("define", "build", "rerun", "force")}
        for round_no in range(args.warmup + args.runs):
            shutil.rmtree(state / "build", ignore_errors=True)
            subprocess.run(["sync"], check=True)     # no writeback left over from the round before
            got = {"define": stage("define", define_conf, define_state, "--force"),
                   "build": stage("build", conf, state),
                   "rerun": stage("build", conf, state),
                   "force": stage("build", conf, state, "--force")}
            tag = "warm-up" if round_no < args.warmup else f"run {round_no - args.warmup + 1}"
            print(f"  {tag:8s} " + "  ".join(f"{k} {s['wall']:.2f} s ({s['cpu']:.2f} cpu)" for k, s in got.items()),
                  flush=True)
            if round_no >= args.warmup:
                for k, s in got.items():
                    samples[k].append(s)
        outputs = sum(1 for _ in (state / "build").rglob("*") if _.is_file())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    full = args.nodes >= 10_000
    result = harness.Result("bench_stages", f"define and build as processes, {args.nodes} nodes (build: default "
                            "overlay lists, busybox demo image with the Debian kernel)",
                            params=harness.params_of(args), quick=args.quick)
    result.add(f"python -m stages.define --force, {args.nodes} nodes / 20 nested profiles", samples["define"],
               limit=1.0 if full else None)
    result.add(f"python -m stages.build, first build, {args.nodes} nodes", samples["build"],
               limit=10.0 if full else None)
    result.add("python -m stages.build, no change", samples["rerun"])
    result.add("python -m stages.build --force", samples["force"])
    result.detail("build_outputs", outputs)
    result.detail("load_note", "measured on a shared machine (several agents); wall stretches with its load, "
                  "CPU seconds less so")
    result.write(args.results)


if __name__ == "__main__":
    main()
