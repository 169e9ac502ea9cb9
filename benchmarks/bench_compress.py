"""Compression of an OS image archive: ours against pigz -6 (Warewulf's default) and the zstd CLI,
and the whole tree -> compressed image path against Warewulf's `cpio | pigz`, in the same run.

The tree is a copy of parts of this machine's /usr and /etc (>= 1 GB, tens of thousands of files),
made once under $WWFAST_BENCH_DIR (default /tmp/wwfast-bench-compress). Contenders run interleaved,
round after round, so the load of a shared machine falls on all of them alike; medians are printed.

    .venv/bin/python benchmarks/bench_compress.py [--runs 3] [--skip-gzip] [--quick]

Goals (issue 5): ours >= 0.95x the zstd CLI's speed at its size; the whole path >= 6x Warewulf's with
a smaller result.
"""
import argparse
import hashlib
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
import harness  # noqa: E402
from harness import cpu_seconds  # noqa: E402
from wwfast.publish import compress  # noqa: E402
from wwfast import cpio  # noqa: E402

WORK = pathlib.Path(os.environ.get("WWFAST_BENCH_DIR", "/tmp/wwfast-bench-compress"))
TREE_PARTS = ["usr/bin", "usr/sbin", "usr/libexec", "usr/lib/x86_64-linux-gnu", "usr/lib/python3.11",
              "usr/share/doc", "usr/share/man", "usr/share/locale", "etc"]
MIN_TREE_BYTES = 1 << 30


def ensure_tree():
    tree = WORK / "tree"
    if not (tree / ".complete").exists():
        shutil.rmtree(tree, ignore_errors=True)
        for part in TREE_PARTS:
            src = pathlib.Path("/") / part
            if src.exists():
                (tree / part).parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "-a", str(src), str(tree / part)], check=False, stderr=subprocess.DEVNULL)
        (tree / ".complete").write_text("")
    return tree


def tree_stats(tree):
    size = count = 0
    for dirpath, dirnames, filenames in os.walk(tree):
        count += len(dirnames) + len(filenames)
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                size += st.st_size
    return size, count


def timed(fn):
    started, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - started, cpu_seconds() - cpu


# ---- contenders: archive -> compressed ----

def ours_zstd(src, dst):
    with open(src, "rb", buffering=0) as f, open(dst, "wb") as o:
        compress.ZstdEncoder(3, 0).compress(f, o, os.path.getsize(src))


def ours_gzip(src, dst):
    with open(src, "rb", buffering=0) as f, open(dst, "wb") as o:
        compress.GzipEncoder(6, 0).compress(f, o)


def zstd_cli(src, dst):
    subprocess.run(["zstd", "-q", "-3", "-T0", "-f", str(src), "-o", str(dst)], check=True)


def pigz6(src, dst):
    with open(dst, "wb") as o:
        subprocess.run(["pigz", "-6", "-c", str(src)], stdout=o, check=True)


# ---- contenders: tree -> compressed image ----

def warewulf_path(tree, dst):
    """As Warewulf: find's file list on stdin of GNU cpio (newc, renumbered inodes), piped to pigz -6."""
    with open(dst, "wb") as o:
        find = subprocess.Popen(["find", "."], cwd=tree, stdout=subprocess.PIPE)
        cp = subprocess.Popen(["cpio", "--quiet", "--create", "--format", "newc", "--renumber-inodes"],
                              cwd=tree, stdin=find.stdout, stdout=subprocess.PIPE)
        find.stdout.close()
        gz = subprocess.Popen(["pigz", "-6"], stdin=cp.stdout, stdout=o)
        cp.stdout.close()
        assert gz.wait() == 0 and cp.wait() == 0 and find.wait() == 0


def ours_stages_path(tree, dst):
    """What the build and compress stages do with a changed image: pack the tree to a file, then
    compress it while hashing it (publish names the result by that hash)."""
    archive = dst.with_suffix(".cpio")
    cpio.pack_tree(str(tree), str(archive))
    digest = hashlib.sha256()
    with open(archive, "rb", buffering=0) as f, open(dst, "wb") as o:
        compress.ZstdEncoder(3, 0).compress(f, o, os.path.getsize(archive), tap=digest.update)
    archive.unlink()


class _WriteOnly:
    """Only write(): the cpio writer must not find the zstd writer's fileno() (that of the raw
    output file) and write archive bytes past the compressor."""

    def __init__(self, sink):
        self.write = sink.write


def ours_streaming_path(tree, dst):
    """The writer streaming straight into zstd: one pass, no archive on disk."""
    import zstandard
    cctx = zstandard.ZstdCompressor(compression_params=compress.zstd_params(3, 0))
    with open(dst, "wb") as o, cctx.stream_writer(o, write_size=compress.WRITE_SIZE, closefd=False) as z:
        writer = cpio.NewcWriter(_WriteOnly(z))
        writer.add_tree(str(tree))
        writer.close()


def run_round_robin(contenders, rounds, make_input, out_dir, samples):
    """Every contender once per round (the harness rotates the order); fills `samples` by name."""
    sizes = {}

    def runner(name, fn):
        def run():
            dst = out_dir / f"{name.replace(' ', '_')}.out"
            os.sync()      # start each one with no writeback pending from the one before
            wall, cpu = timed(lambda: fn(make_input(), dst))
            sizes[name] = dst.stat().st_size
            dst.unlink()
            return harness.Sample(wall=wall, cpu=cpu, bytes=sizes[name])
        return run
    got = harness.interleave({name: runner(name, fn) for name, fn in contenders}, rounds, warmup=0)
    samples.update(got)
    med = {name: (statistics.median(r["wall"] for r in runs), statistics.median(r["cpu"] for r in runs))
           for name, runs in got.items()}
    return med, sizes


def report(title, medians, sizes, input_bytes, reference, baseline):
    print(f"\n{title} (input {input_bytes:,} B, medians; speed ratios = their time / ours, wall and cpu)")
    print(f"  {'contender':28s} {'wall s':>7s} {'MB/s':>6s} {'cpu s':>7s} {'bytes':>14s} {'ratio':>6s} "
          f"{'vs ' + reference + ' wall/cpu':>32s} {'vs ' + baseline + ' wall/cpu':>34s}")
    for name, (wall, cpu) in medians.items():
        ref, base = medians[reference], medians[baseline]
        print(f"  {name:28s} {wall:7.2f} {input_bytes / wall / 1e6:6.0f} {cpu:7.2f} {sizes[name]:>14,} "
              f"{input_bytes / sizes[name]:6.3f} {ref[0] / wall:22.2f}x /{ref[1] / cpu:5.2f}x "
              f"{base[0] / wall:24.2f}x /{base[1] / cpu:5.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", dest="runs", type=int, help="same as --runs")
    parser.add_argument("--skip-gzip", action="store_true", help="leave out the gzip contenders (slowest)")
    parser.add_argument("--skip-path", action="store_true", help="leave out the whole-path comparison")
    harness.add_arguments(parser, runs=3, warmup=0)
    args = harness.settle(parser.parse_args())
    WORK.mkdir(parents=True, exist_ok=True)
    tree = ensure_tree()
    tree_bytes, entries = tree_stats(tree)
    print(f"tree {tree}: {tree_bytes:,} B in {entries:,} entries; cpio compiled: {cpio.COMPILED}; "
          f"cores: {compress.resolve_threads(0)}")
    if tree_bytes < MIN_TREE_BYTES:
        sys.exit(f"the tree holds only {tree_bytes:,} B; need >= 1 GB")
    archive = WORK / "image.cpio"
    cpio.pack_tree(str(tree), str(archive))
    size = archive.stat().st_size
    out_dir = WORK / "out"
    out_dir.mkdir(exist_ok=True)
    subprocess.run(["cat", str(archive)], stdout=subprocess.DEVNULL, check=True)   # warm the page cache

    contenders = [("ours zstd -3", ours_zstd), ("zstd CLI -3 -T0", zstd_cli)]
    if not args.skip_gzip:
        contenders += [("pigz -6 (Warewulf)", pigz6), ("ours gzip -6", ours_gzip)]
    print(f"\narchive -> compressed, {args.runs} rounds")
    samples = {}
    medians, sizes = run_round_robin(contenders, args.runs, lambda: archive, out_dir, samples)
    report("archive -> compressed", medians, sizes, size, "zstd CLI -3 -T0",
           "pigz -6 (Warewulf)" if not args.skip_gzip else "zstd CLI -3 -T0")
    goal = medians["zstd CLI -3 -T0"][0] / medians["ours zstd -3"][0]
    goal_cpu = medians["zstd CLI -3 -T0"][1] / medians["ours zstd -3"][1]
    print(f"  goal ours >= 0.95x zstd CLI speed: {goal:.2f}x wall, {goal_cpu:.2f}x cpu "
          f"(sizes {sizes['ours zstd -3']:,} vs {sizes['zstd CLI -3 -T0']:,} B) -> "
          f"{'MET' if goal >= 0.95 and sizes['ours zstd -3'] <= sizes['zstd CLI -3 -T0'] * 1.01 else 'NOT MET'}")

    if not args.skip_path:
        archive.unlink()       # the path contenders make their own
        path = [("Warewulf find|cpio|pigz -6", warewulf_path), ("ours pack, hash+zstd", ours_stages_path),
                ("ours streaming pack->zstd", ours_streaming_path)]
        print(f"\ntree -> compressed image, {args.runs} rounds")
        medians, sizes = run_round_robin(path, args.runs, lambda: tree, out_dir, samples)
        report("tree -> compressed image", medians, sizes, size, "Warewulf find|cpio|pigz -6",
               "Warewulf find|cpio|pigz -6")
        for name in ("ours pack, hash+zstd", "ours streaming pack->zstd"):
            speedup = medians["Warewulf find|cpio|pigz -6"][0] / medians[name][0]
            speedup_cpu = medians["Warewulf find|cpio|pigz -6"][1] / medians[name][1]
            smaller = sizes[name] < sizes["Warewulf find|cpio|pigz -6"]
            print(f"  goal {name} >= 6x Warewulf and smaller: {speedup:.2f}x wall ({speedup_cpu:.2f}x cpu), "
                  f"{'smaller' if smaller else 'NOT smaller'} -> {'MET' if speedup >= 6 and smaller else 'NOT MET'}")
    shutil.rmtree(out_dir, ignore_errors=True)
    archive.unlink(missing_ok=True)
    record(args, samples, size)


def record(args, samples, size):
    result = harness.Result("bench_compress", f"compress a {size / 1e9:.2f} GB image archive, and tree -> compressed "
                            "image, vs the zstd CLI, pigz and Warewulf's cpio|pigz", params=harness.params_of(args),
                            quick=args.quick, tools=("zstd", "pigz", "cpio"))
    pairs = [("ours zstd -3", "zstd CLI -3 -T0", 0.95), ("ours gzip -6", "pigz -6 (Warewulf)", None),
             ("ours zstd -3", "pigz -6 (Warewulf)", None),
             ("ours pack, hash+zstd", "Warewulf find|cpio|pigz -6", 6), ("ours streaming pack->zstd",
                                                                        "Warewulf find|cpio|pigz -6", 6)]
    for ours, peer, goal in pairs:
        if ours in samples and peer in samples:
            result.add(f"{ours} vs {peer}", samples[ours], samples[peer], ours_name=ours, peer_name=peer, goal=goal)
            result.add(f"{ours} vs {peer}: output size", [r["bytes"] for r in samples[ours]],
                       [r["bytes"] for r in samples[peer]], ours_name=ours, peer_name=peer, unit="bytes")
    result.write(args.results)


if __name__ == "__main__":
    main()
