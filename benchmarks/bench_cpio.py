"""Packing an image tree into a newc archive: GNU cpio as Warewulf calls it, bsdtar, and our two writers.

The tree is a copy of parts of /usr (hard links kept), at least 1 GB and tens of thousands of
entries, made once under /tmp. Each round packs it, in the same run and to a file in the same
directory, with:
  gnu-cpio  cpio --quiet --create --directory TREE --format newc --renumber-inodes --file=OUT,
            file list on stdin (Warewulf's CpioCreate; the list is made beforehand, not timed)
  bsdtar    bsdtar --format newc -cf OUT -C TREE .
  pure      wwfast._cpio_py.NewcWriter (add_tree + close)
  compiled  wwfast._cpio.NewcWriter
The page cache is written back (sync) before every run and outputs are deleted after it, so no
run pays for another's dirty pages. Prints every time, the medians and the ratios; goal:
compiled >= 5x GNU cpio and >= 2x bsdtar. Finally checks that both writers wrote the same bytes.

    .venv/bin/python benchmarks/bench_cpio.py [--runs 3] [--tree DIR] [--out-dir DIR] [--quick]

--out-dir /dev/shm writes the archives to tmpfs: no disk write-back in the timings (on a shared
machine other people's writes throttle everyone's dirty pages). CPU seconds are printed beside
wall time: when the machine is shared, they are the steadier measure.
"""
import argparse
import importlib
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import harness  # noqa: E402
from harness import cpu_seconds as _cpu_seconds  # noqa: E402

WORK = pathlib.Path("/tmp/wwfast-bench-cpio")
USR_PARTS = ("bin", "sbin", "libexec", "lib/x86_64-linux-gnu", "lib/python3", "lib/python3.11",
             "share/doc", "share/man", "share/locale")
MIN_BYTES = 1_000_000_000
MIN_ENTRIES = 20_000


def tree_stats(tree):
    entries = size = links = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        entries += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                size += st.st_size
                links += st.st_nlink > 1
    return entries, size, links


def make_tree(tree):
    if tree.exists():
        return
    tmp = tree.with_name(tree.name + ".partial")
    subprocess.run(["rm", "-rf", str(tmp)], check=True)
    (tmp / "usr").mkdir(parents=True)
    parts = [p for p in USR_PARTS if os.path.exists(os.path.join("/usr", p))]
    print(f"making the test tree: cp -a of /usr/{{{','.join(parts)}}} into {tree}", flush=True)
    subprocess.run(["cp", "-a", "--parents", *parts, str(tmp / "usr")], cwd="/usr", check=True)
    tmp.rename(tree)


def file_list(tree):
    """Warewulf's FindFilterFiles order: a lexical walk, root-relative, without '.'."""
    names = []
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = os.path.relpath(dirpath, tree)
        for name in sorted(dirnames + filenames):
            names.append(name if rel == "." else os.path.join(rel, name))
    return ("\n".join(names) + "\n").encode()


def run_gnu(tree, out, listing):
    subprocess.run(["cpio", "--quiet", "--create", "--directory", str(tree), "--format", "newc",
                    "--renumber-inodes", f"--file={out}"], input=listing, check=True)


def run_bsdtar(tree, out, _listing):
    subprocess.run(["bsdtar", "--format", "newc", "-cf", str(out), "-C", str(tree), "."], check=True)


def writer_runner(module_name):
    module = importlib.import_module(module_name)

    def run(tree, out, _listing):
        with open(out, "wb") as f:
            w = module.NewcWriter(f)
            w.add_tree(tree)
            w.close()
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=pathlib.Path, default=WORK / "tree")
    parser.add_argument("--out-dir", type=pathlib.Path, default=WORK, help="where the archives go")
    harness.add_arguments(parser, runs=3, warmup=0)
    args = harness.settle(parser.parse_args())
    make_tree(args.tree)
    entries, size, links = tree_stats(args.tree)
    print(f"tree {args.tree}: {entries} entries, {size / 1e9:.2f} GB in files, {links} hard-linked files")
    if size < MIN_BYTES or entries < MIN_ENTRIES:
        sys.exit(f"the tree is too small for this benchmark (want >= {MIN_BYTES} bytes, {MIN_ENTRIES} entries)")
    listing = file_list(args.tree)
    tools = {
        "gnu-cpio": run_gnu,
        "bsdtar": run_bsdtar,
        "pure": writer_runner("wwfast._cpio_py"),
        "compiled": writer_runner("wwfast._cpio"),
    }
    out = args.out_dir / "wwfast-bench-out.cpio"
    print(f"archives written to {out}")
    times = {name: [] for name in tools}
    cpu = {name: [] for name in tools}
    sizes = {}
    for round_no in range(args.runs):
        for name, run in tools.items():
            out.unlink(missing_ok=True)
            subprocess.run(["sync"], check=True)
            before = _cpu_seconds()
            started = time.perf_counter()
            run(args.tree, out, listing)
            elapsed = time.perf_counter() - started
            used = _cpu_seconds() - before
            times[name].append(elapsed)
            cpu[name].append(used)
            sizes[name] = out.stat().st_size
            print(f"round {round_no + 1} {name:9s} {elapsed:6.2f} s wall {used:6.2f} s cpu  {sizes[name]} bytes",
                  flush=True)
    out.unlink(missing_ok=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    mcpu = {name: statistics.median(t) for name, t in cpu.items()}
    archive = sizes["compiled"]
    print()
    print(f"load average now: {os.getloadavg()[0]:.1f} (cpu s = user+sys of the packer, threads included)")
    print(f"{'writer':10s} {'wall s':>7s} {'cpu s':>6s} {'GB/s':>6s}  wall per run")
    for name, m in med.items():
        print(f"{name:10s} {m:7.2f} {mcpu[name]:6.2f} {archive / m / 1e9:6.2f}  "
              f"{' '.join(f'{t:.2f}' for t in times[name])}")
    print()
    for a, b, goal in (("compiled", "gnu-cpio", " (goal 5x)"), ("compiled", "bsdtar", " (goal 2x)"),
                       ("pure", "gnu-cpio", ""), ("pure", "bsdtar", ""), ("compiled", "pure", "")):
        print(f"{a:8s} vs {b:8s}: {med[b] / med[a]:5.1f}x faster wall, {mcpu[b] / mcpu[a]:5.1f}x less cpu{goal}")
    # Same bytes from both twins on the big tree (not timed).
    digests = {}
    for name in ("pure", "compiled"):
        tools[name](args.tree, out, listing)
        digests[name] = harness.file_sha256(out)
        out.unlink()
    same = digests["pure"] == digests["compiled"]
    print(f"pure and compiled archives identical: {same}")
    result = harness.Result("bench_cpio", f"pack a {size / 1e9:.2f} GB, {entries}-entry tree into newc",
                            params=harness.params_of(args), quick=args.quick, tools=("cpio", "bsdtar"))
    samples = {name: [harness.Sample(wall=w, cpu=c) for w, c in zip(times[name], cpu[name])] for name in tools}
    for ours, peer, goal in (("compiled", "gnu-cpio", 5), ("compiled", "bsdtar", 2), ("pure", "gnu-cpio", None),
                             ("pure", "bsdtar", None)):
        result.add(f"{ours} writer vs {peer}", samples[ours], samples[peer], ours_name=ours, peer_name=peer,
                   goal=goal)
    result.detail("twins_identical", same)
    result.write(args.results)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
