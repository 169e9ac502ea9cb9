"""kill -9 the compress (and build) stage inside a run: what is published must stay whole, and the next
run must recover on its own.

Each trial changes some build outputs (runtime overlays, sometimes the image), runs the stage and kills
its process group with SIGKILL when it reaches a named file-system commit, just before or just after it
(tests/helpers/killpoints.py), one trial per point (POINTS for compress alone, BUILD_POINTS for the
real build and compress stages). So every kill lands inside a run, at a named point, however loaded the
machine is (it used to sleep a random time and hope). Then the manifest must parse and every file it
names exist with the recorded size and sha256. A run to completion follows: it must succeed,
publish exactly the current build, and leave no temp files or unreferenced store files (grace 0).
"""
import hashlib
import os
import pathlib
import random
import subprocess

import zstandard

from wwfast import fsutil
from wwfast.publish import manifest as publish

from compress_support import ROOT, BuildTree, check_published, run_stage, write_settings
from helpers import killpoints

IMAGE_BYTES = 20 << 20      # above wwfast.publish.store.FUSE_MIN: kills also land in the hash-while-compressing path


def image_payload(seed):
    """Real binary content (shared libraries), so the codecs work as on an OS image."""
    out = bytearray()
    libs = sorted(pathlib.Path("/usr/lib/x86_64-linux-gnu").glob("*.so*"))
    for lib in libs:
        if lib.is_file() and not lib.is_symlink():
            out += lib.read_bytes()[:1 << 20]
        if len(out) >= IMAGE_BYTES:
            break
    return bytes(out[:IMAGE_BYTES]) + f"seed {seed}\n".encode()


def set_image(tree, seed):
    from compress_support import archive_bytes
    tree.image_bytes = archive_bytes({"usr/lib/blob": image_payload(seed)})
    tree.write_image()


def content_sha256(build_dir, build, rel):
    """sha256 of an archive's newc bytes: its file, or (packed by the build) its zstd copy decoded."""
    packed = build.get("packed", {}).get(rel)
    if packed is None:
        return fsutil.sha256_file(build_dir / rel)
    h = hashlib.sha256()
    with open(build_dir / packed["zst"]["file"], "rb") as f:
        for chunk in zstandard.ZstdDecompressor().read_to_iter(f):
            h.update(chunk)
    return h.hexdigest()


def assert_publishes_current_build(state, tree):
    manifest = check_published(state)
    import json
    build = json.loads((tree.build / "build.json").read_text())
    for node_id, b in build["nodes"].items():
        artifacts = manifest["nodes"][node_id]["artifacts"]
        for artifact, key in (("image", "image_cpio"), ("system", "system"), ("runtime", "runtime")):
            want = content_sha256(tree.build, build, b[key]) + ".cpio.zst"
            assert artifacts[artifact]["zst"]["file"] == want, (node_id, artifact)
    store = pathlib.Path(publish.store_dir(str(state)))
    on_disk = {p.name for p in store.iterdir()}
    assert on_disk == set(publish.manifest_files(manifest)), "temp or unreferenced files left in the store"
    assert not [p for p in pathlib.Path(publish.publish_dir(str(state))).iterdir() if p.name.endswith(".tmp")]
    # whole, not just consistent with the manifest: every compressed file decodes
    names = sorted(on_disk)
    zst = [str(store / n) for n in names if n.endswith(".zst")]
    gz = [str(store / n) for n in names if n.endswith(".gz")]
    assert subprocess.run(["zstd", "-tq", *zst], capture_output=True).returncode == 0
    assert subprocess.run(["gzip", "-t", *gz], capture_output=True).returncode == 0


# Where compress is killed: one trial per point, each a commit every run of that trial makes (new store
# files, the manifest, the removal of what it no longer names at grace 0, the stamp). Every trial gives some
# nodes a runtime overlay no run has seen (so there are new store files); with_image: it rebuilds the image
# too (its archive goes through the hash-while-compressing path, temp "unnamed", and the old image's store
# files are removed).
POINTS = [
    ("before", "replace", "*unnamed*>*.cpio.zst", True),
    ("after", "replace", "*unnamed*>*.cpio.zst", True),
    ("before", "replace", "*>*.cpio.zst", False),
    ("after", "replace", "*>*.cpio.zst", False),
    ("before", "replace", "*>*.cpio.gz", True),
    ("after", "replace", "*>*.cpio.gz", False),
    ("before", "replace", "*>manifest.json", True),
    ("after", "replace", "*>manifest.json", False),
    ("before", "unlink", "*.cpio.*", True),
    ("after", "unlink", "*.cpio.*", True),
    ("before", "replace", "*>compress.stamp", False),
    ("after", "replace", "*>compress.stamp", True),
]


def test_kill_9_inside_compress_runs_never_breaks_what_is_published(tmp_path):
    rng = random.Random(int(os.environ.get("WWFAST_FAULT_SEED", "5")))
    conf, state = tmp_path / "conf", tmp_path / "state"
    write_settings(conf)
    tree = BuildTree(state, count=40)
    tree.write_all()
    set_image(tree, 0)
    result = run_stage(conf, state, "--grace", "0")
    assert result.returncode == 0, result.stderr

    for trial, (when, op, pattern, with_image) in enumerate(POINTS):
        bumped = rng.sample(tree.ids, rng.randint(1, 8))
        for node_id in bumped:
            tree.runtime_revision[node_id] = 1000 + trial
        tree.write_overlays(bumped)
        if with_image:
            set_image(tree, trial + 1)
        at = killpoints.stop_at("stages.compress", ["--conf", conf, "--state", state, "--grace", "0"],
                                when, op, pattern)
        check_published(state)               # whole and consistent, wherever the run was stopped
        result = run_stage(conf, state, "--grace", "0")
        assert result.returncode == 0, f"trial {trial} (killed {when} {op} {at}): the next run failed: {result.stderr}"
        assert_publishes_current_build(state, tree)


# ---- the real build stage in the loop ----

NODES = 8


def demo_conf(conf):
    """The repo's demo configuration with NODES nodes."""
    import shutil
    shutil.copytree(ROOT / "conf", conf)
    text = (ROOT / "conf" / "nodes.yaml").read_text()
    lines = [text[:text.index("\nnodes:") + 1] + "nodes:"]
    for i in range(1, NODES + 1):
        lines += [f"  n{i:02d}:", "    profiles: [default]", "    network devices:", "      default:",
                  f"        hwaddr: \"52:54:00:00:01:{i:02x}\"", f"        ipaddr: 10.0.2.{100 + i}"]
    (conf / "nodes.yaml").write_text("\n".join(lines) + "\n")
    return conf / "overlays" / "demo-marker" / "etc" / "wwfast-markers" / "runtime.j2"


# Where the real stages are killed, trial by trial (build and compress alternate; --force every third):
# commits every such run makes, as each trial gives every node a new runtime overlay. (Not picked from a
# run on a copy of the state: the copy's new inodes and ctimes make the runner's stat fingerprints see
# changes the real state does not have, so the copy's run made calls the real one did not.)
BUILD_POINTS = [
    ("build", "before", "replace", "*>runtime.cpio"),
    ("compress", "before", "replace", "*>*.cpio.zst"),
    ("build", "after", "replace", "*>runtime.cpio"),
    ("compress", "after", "replace", "*>*.cpio.gz"),
    ("build", "before", "replace", "*>build.stamp"),
    ("compress", "before", "replace", "*>manifest.json"),
    ("build", "after", "replace", "*>build.stamp"),
    ("compress", "after", "replace", "*>manifest.json"),
    ("build", "before", "replace", "*>runtime.cpio"),
    ("compress", "before", "replace", "*>compress.stamp"),
]


def test_kill_9_of_build_or_compress_with_the_real_stages(tmp_path, kernel_path, kernel_modules):
    from helpers.cluster import Cluster
    from wwfast.builder import demo_image
    conf, state = tmp_path / "conf", tmp_path / "state"
    template = demo_conf(conf)
    demo_image.make_demo_image(tmp_path / "image", kernel_path, kernel_modules)
    cluster = Cluster(conf, state)
    cluster.import_image(tmp_path / "image", "demo")
    cluster.publish()
    build_tree = BuildTree(state, count=0)      # only for its paths in assert_publishes_current_build

    killed = []
    for trial, (victim, when, op, pattern) in enumerate(BUILD_POINTS):
        # a new runtime overlay for every node; every third trial everything is rebuilt (--force)
        template.write_text(f"runtime overlay of {{{{ node.id }}}}, trial {trial}\n")
        force = ["--force"] if trial % 3 == 0 else []
        if victim == "compress":
            cluster.stage("build", *force)
        at = killpoints.stop_at(f"stages.{victim}", ["--conf", conf, "--state", state, *force], when, op, pattern)
        killed.append((victim, when, op, at))

        check_published(state)
        cluster.publish()                      # define, build, compress: recover without help
        cluster.stage("compress", "--grace", "0")
        assert_publishes_current_build(state, build_tree)
    print("killed at:", *killed, sep="\n  ")
