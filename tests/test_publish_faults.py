"""kill -9 the compress stage at random moments: what is published must stay whole, and the next run
must recover on its own.

Each trial changes some build outputs (runtime overlays, sometimes the image), starts the stage, kills
it with SIGKILL after a random delay spread over a whole run, then checks that the manifest parses and
every file it names exists with the recorded size and sha256. A run to completion follows: it must
succeed, publish exactly the current build, and leave no temp files or unreferenced store files
(grace 0).
"""
import hashlib
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import zstandard

from wwfast import fsutil
from wwfast.publish import publisher as publish

from compress_support import ROOT, BuildTree, check_published, run_stage, write_settings

TRIALS = 24
IMAGE_BYTES = 20 << 20      # above publish.FUSE_MIN: kills also land in the hash-while-compressing path


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


def start_stage(conf, state):
    return subprocess.Popen([sys.executable, "-m", "stages.compress", "--conf", str(conf), "--state", str(state),
                             "--grace", "0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


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


def test_kill_9_at_random_moments_never_breaks_what_is_published(tmp_path):
    rng = random.Random(int(os.environ.get("WWFAST_FAULT_SEED", "5")))
    conf, state = tmp_path / "conf", tmp_path / "state"
    write_settings(conf)
    tree = BuildTree(state, count=40)
    tree.write_all()
    set_image(tree, 0)
    result = run_stage(conf, state, "--grace", "0")
    assert result.returncode == 0, result.stderr
    # How long each kind of run takes (with and without a new image): kill points are spread over that.
    durations = {}
    for with_image in (True, False):
        tree.bump_runtime(tree.ids[0])
        if with_image:
            set_image(tree, -1)
        started = time.monotonic()
        assert run_stage(conf, state, "--grace", "0").returncode == 0
        durations[with_image] = time.monotonic() - started

    killed_mid_run = 0
    for trial in range(TRIALS):
        for node_id in rng.sample(tree.ids, rng.randint(1, 8)):
            tree.bump_runtime(node_id)
        with_image = trial % 2 == 0
        if with_image:
            set_image(tree, trial + 1)
        proc = start_stage(conf, state)
        time.sleep(rng.uniform(0.0, 0.9 * durations[with_image]))
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        check_published(state)               # whole and consistent, whatever the moment
        result = run_stage(conf, state, "--grace", "0")
        assert result.returncode == 0, f"trial {trial}: the next run failed: {result.stderr}"
        assert_publishes_current_build(state, tree)

    print(f"{killed_mid_run} of {TRIALS} kills hit a running stage")
    # The kills must have landed inside runs, or this test proves nothing.
    assert killed_mid_run >= TRIALS // 2, f"only {killed_mid_run} of {TRIALS} kills hit a running stage"


# ---- the real build stage in the loop ----

BUILD_TRIALS = 10
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


def test_kill_9_of_build_or_compress_with_the_real_stages(tmp_path, kernel_path, kernel_modules):
    from helpers.cluster import Cluster
    from wwfast.build import demo_image
    rng = random.Random(int(os.environ.get("WWFAST_FAULT_SEED", "7")))
    conf, state = tmp_path / "conf", tmp_path / "state"
    template = demo_conf(conf)
    demo_image.make_demo_image(tmp_path / "image", kernel_path, kernel_modules)
    cluster = Cluster(conf, state)
    cluster.import_image(tmp_path / "image", "demo")
    cluster.publish()
    build_tree = BuildTree(state, count=0)      # only for its paths in assert_publishes_current_build

    def stage_seconds(name, *extra):
        started = time.monotonic()
        cluster.stage(name, *extra)
        return time.monotonic() - started

    killed_mid_run = 0
    for trial in range(BUILD_TRIALS):
        # a new runtime overlay for every node; every third trial the image archive is rebuilt too
        template.write_text(f"runtime overlay of {{{{ node.id }}}}, trial {trial}\n")
        victim = "build" if trial % 2 == 0 else "compress"
        force = ["--force"] if trial % 3 == 0 else []
        if victim == "compress":
            cluster.stage("build", *force)
        # how long the victim takes this time: measured on a copy of the state, then killed for real
        probe = tmp_path / f"probe{trial}"
        subprocess.run(["cp", "-a", str(state), str(probe)], check=True)
        started = time.monotonic()
        subprocess.run([sys.executable, "-m", f"stages.{victim}", "--conf", str(conf), "--state", str(probe),
                        *force], cwd=ROOT, capture_output=True, check=True)
        duration = time.monotonic() - started
        subprocess.run(["rm", "-rf", str(probe)], check=True)

        proc = subprocess.Popen([sys.executable, "-m", f"stages.{victim}", "--conf", str(conf), "--state",
                                 str(state), *force], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.9 * duration))
        if proc.poll() is None:
            killed_mid_run += 1
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

        check_published(state)
        cluster.publish()                      # define, build, compress: recover without help
        cluster.stage("compress", "--grace", "0")
        assert_publishes_current_build(state, build_tree)
    print(f"{killed_mid_run} of {BUILD_TRIALS} kills hit a running build or compress stage")
    assert killed_mid_run >= BUILD_TRIALS // 2, f"only {killed_mid_run} of {BUILD_TRIALS} kills hit a running stage"
