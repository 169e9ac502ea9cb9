"""Tree -> published compressed image, on disk, and what stays on disk per image.

wwfast: `python -m stages.build` then `python -m stages.compress` on a fresh state holding one imported
image (one node): the build packs the tree straight into zstd (and gzip with `--gzip`), compress links the
result into its store; nothing raw is written. Peers, in the same rounds (interleaved, each after a sync,
outputs on the same disk): Warewulf's way, `find | cpio -o -H newc` to a file then `pigz -6` of it (both
stay on disk, as Warewulf keeps them), and `bsdtar --format newc | zstd -3 -T0`. Published means durable:
the stages fsync what they publish, so each peer ends with `sync FILE...` (fsync of its outputs) too.
Goals (issue 12): >= 5x Warewulf's way and >= 1.3x bsdtar|zstd. Disk use: the bytes each way leaves
beside the tree.

The tree is a copy of this machine's /usr/bin and /usr/share/doc (about 0.5 GB, tens of thousands of
files) plus the demo kernel, made once under $BENCH_TMP (default /var/tmp).

    .venv/bin/python benchmarks/bench_image_publish.py [--runs 3] [--gzip] [--quick]
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
from wwfast.builder import demo_image, images  # noqa: E402

PARTS = {"full": ["usr/bin", "usr/share/doc"], "quick": ["usr/share/doc"]}


def make_tree(tree, parts):
    if (tree / ".complete").exists():
        return
    shutil.rmtree(tree, ignore_errors=True)
    for part in parts:
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-a", f"/{part}", str(tree / part)], check=True, stderr=subprocess.DEVNULL)
    kernel = demo_image.default_kernel()
    (tree / "boot").mkdir(exist_ok=True)
    shutil.copy2(kernel, tree / "boot" / kernel.name)
    (tree / ".complete").write_text("")


def disk_bytes(paths):
    """Bytes allocated on disk by these files, each inode once (hard links count once)."""
    seen, total = set(), 0
    for p in paths:
        st = os.stat(p)
        if st.st_ino not in seen:
            seen.add(st.st_ino)
            total += st.st_blocks * 512
    return total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gzip", action="store_true", help="wwfast publishes gzip beside zstd (settings gzip: true)")
    harness.add_arguments(parser, runs=3, warmup=0)
    args = harness.settle(parser.parse_args())
    base = pathlib.Path(os.environ.get("BENCH_TMP", "/var/tmp")) / "bench-image-publish"
    base.mkdir(parents=True, exist_ok=True)
    tree = base / ("tree-quick" if args.quick else "tree")
    make_tree(tree, PARTS["quick" if args.quick else "full"])
    work = pathlib.Path(tempfile.mkdtemp(prefix="run-", dir=base))
    conf, state = work / "conf", work / "var"
    conf.mkdir()
    (conf / "nodes.yaml").write_text("nodeprofiles:\n  default:\n    image name: img\n    system overlay: [hostname]\n"
                                     "    runtime overlay: [hosts]\nnodes:\n  n1:\n    profiles: [default]\n")
    (conf / "wwfast.yaml").write_text(f"compression:\n  zstd level: 3\n  gzip: {str(args.gzip).lower()}\n")
    images.import_image(tree, "img", state, log=lambda *_: None)
    rootfs = pathlib.Path(images.image_root(state, "img"))
    py = [sys.executable, "-m"]
    subprocess.run(py + ["stages.define", "--conf", str(conf), "--state", str(state)], cwd=ROOT, check=True,
                   capture_output=True)
    sizes = {}

    def fresh(*dirs):
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        subprocess.run(["sync"], check=True)

    def ours():
        fresh(state / "build", state / "store", state / "publish", state / "stages")
        with harness_timer() as t:
            for stage in ("build", "compress"):
                subprocess.run(py + [f"stages.{stage}", "--conf", str(conf), "--state", str(state)], cwd=ROOT,
                               check=True, capture_output=True)
        files = [p for d in ("build/images", "store") for p in (state / d).iterdir()
                 if ".cpio" in p.name or p.name.endswith(".kernel")]
        sizes["wwfast"] = disk_bytes(files)
        return t.sample

    def warewulf():
        out = work / "ww"
        fresh(out)
        out.mkdir()
        with harness_timer() as t:
            subprocess.run(f"find . | cpio --quiet -o -H newc > {out}/image.img && pigz -6 -c {out}/image.img "
                           f"> {out}/image.img.gz && sync {out}/image.img {out}/image.img.gz", shell=True, cwd=rootfs,
                           check=True)
        sizes["warewulf"] = disk_bytes(out.iterdir())
        return t.sample

    def bsdtar_zstd():
        out = work / "bz"
        fresh(out)
        out.mkdir()
        with harness_timer() as t:
            subprocess.run(f"bsdtar --format newc -cf - -C {rootfs} . | zstd -q -3 -T0 -o {out}/image.cpio.zst "
                           f"&& sync {out}/image.cpio.zst", shell=True, check=True)
        sizes["bsdtar"] = disk_bytes(out.iterdir())
        return t.sample

    try:
        tree_bytes = disk_bytes(p for p in rootfs.rglob("*") if p.is_file() and not p.is_symlink())
        print(f"bench_image_publish: tree {tree_bytes / 1e6:.0f} MB on disk; wwfast publishes "
              f"{'zstd + gzip' if args.gzip else 'zstd'}; {args.runs} runs", flush=True)
        samples = harness.interleave({"wwfast": ours, "warewulf": warewulf, "bsdtar": bsdtar_zstd},
                                     runs=args.runs, warmup=args.warmup)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    what = "zstd + gzip" if args.gzip else "zstd"
    result = harness.Result("bench_image_publish" + ("_gzip" if args.gzip else ""),
                            f"tree ({tree_bytes / 1e6:.0f} MB) -> published compressed image on disk; wwfast "
                            f"publishes {what}", params=harness.params_of(args), quick=args.quick,
                            tools=("cpio", "pigz", "bsdtar", "zstd"))
    ww_name = "Warewulf: cpio > file; pigz -6"
    result.add(f"tree -> published image ({what}) vs Warewulf's way", samples["wwfast"], samples["warewulf"],
               peer_name=ww_name, goal=5)
    result.add(f"tree -> published image ({what}) vs bsdtar|zstd", samples["wwfast"], samples["bsdtar"],
               peer_name="bsdtar --format newc | zstd -3 -T0", goal=1.3)
    result.add("disk use beside the tree", [sizes["wwfast"]], [sizes["warewulf"]], unit="bytes", peer_name=ww_name,
               key=None, cpu=False)
    result.add("disk use beside the tree", [sizes["wwfast"]], [sizes["bsdtar"]], unit="bytes",
               peer_name="bsdtar|zstd", key=None, cpu=False)
    result.detail("tree_bytes_on_disk", tree_bytes)
    result.detail("disk_use_beside_tree", sizes)
    result.detail("load_note", "measured on a shared loaded machine (several agents); medians")
    result.write(args.results)


class harness_timer:
    """with harness_timer() as t: ... -> t.sample (wall and CPU of this process and its children)."""

    def __enter__(self):
        import time
        self._time = time
        self.cpu, self.started = harness.cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.sample = harness.Sample(wall=self._time.perf_counter() - self.started,
                                     cpu=harness.cpu_seconds() - self.cpu)


if __name__ == "__main__":
    main()
