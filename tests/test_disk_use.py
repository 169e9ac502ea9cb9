"""No raw copy at rest: after `make all` the disk holds the image tree and the published files, once.

The build packs each image straight into zstd (and gzip): there is no raw `<image>.cpio`, and the
compress stage hard-links the build's compressed archives and kernel into its store, so each is on disk
once. A second `make all` finds both stages current: the links do not look like changed outputs.
"""
import json
import os
import pathlib
import subprocess
import sys

import zstandard

from helpers.newc import read_newc
from wwfast.builder import images

NODES = """\
nodeprofiles:
  default:
    image name: img
    system overlay: [hostname]
    runtime overlay: [hosts]
nodes:
  n1:
    profiles: [default]
    network devices: {default: {device: eth0, hwaddr: "52:54:00:00:09:01", ipaddr: 10.0.2.31}}
  n2:
    profiles: [default]
    network devices: {default: {device: eth0, hwaddr: "52:54:00:00:09:02", ipaddr: 10.0.2.32}}
"""


ENV = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")


def make_all(project_root, conf, state):
    run = subprocess.run(["make", "-s", "all", f"PY={sys.executable}", f"CONF={conf}", f"STATE={state}"],
                         cwd=project_root, capture_output=True, text=True, timeout=300, env=ENV)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


def test_no_raw_archive_or_second_kernel_after_make_all(tmp_path, project_root):
    conf, state, src = tmp_path / "conf", tmp_path / "state", tmp_path / "src"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(NODES)
    (conf / "wwfast.yaml").write_text("compression:\n  zstd level: 3\n  gzip: true\n")
    for d in ("boot", "sbin", "usr/lib"):
        (src / d).mkdir(parents=True)
    (src / "boot/vmlinuz-6.1.0-21-amd64").write_bytes(os.urandom(300_000))
    (src / "sbin/init").write_bytes(b"#!/bin/sh\n")
    (src / "usr/lib/blob").write_bytes(os.urandom(1 << 20) + b"\0" * (2 << 20))
    images.import_image(src, "img", state, log=lambda *_: None)
    make_all(project_root, conf, state)

    out, store = state / "build" / "images", state / "store"
    assert sorted(p.name for p in out.iterdir()) == ["img.cpio.gz", "img.cpio.zst", "img.kernel"]
    build = json.loads((state / "build" / "build.json").read_text())
    packed = build["packed"]["images/img.cpio"]
    with open(out / "img.cpio.zst", "rb") as f:
        archive = zstandard.ZstdDecompressor().stream_reader(f).read()
    assert len(archive) == packed["size"]
    assert b"usr/lib/blob" in {m.name for m in read_newc(archive)}

    manifest = json.loads((state / "publish" / "manifest.json").read_text())
    artifacts = manifest["nodes"]["n1"]["artifacts"]
    # the published image and kernel are the build's files themselves (one inode each), not copies
    for artifact, enc, built in (("image", "zst", "img.cpio.zst"), ("image", "gz", "img.cpio.gz"),
                                 ("kernel", "raw", "img.kernel")):
        stored = store / artifacts[artifact][enc]["file"]
        assert stored.stat().st_ino == (out / built).stat().st_ino, (artifact, enc)
        assert stored.stat().st_nlink == 2
    assert artifacts["image"]["zst"]["file"] == packed["sha256"] + ".cpio.zst"
    assert artifacts["image"]["zst"]["sha256"] == packed["zst"]["sha256"]

    # what the disk holds for the image beyond its tree: the compressed archives and the kernel, once
    inodes = {}
    for path in list(out.iterdir()) + list(store.iterdir()):
        st = path.stat()
        inodes[st.st_ino] = st.st_size
    image_files = {(out / n).stat().st_ino for n in ("img.cpio.gz", "img.cpio.zst", "img.kernel")}
    expected = sum((out / n).stat().st_size for n in ("img.cpio.gz", "img.cpio.zst", "img.kernel"))
    assert sum(inodes[i] for i in image_files) == expected
    assert not [p for p in pathlib.Path(state).rglob("*.cpio") if "images" in p.parts]   # no raw image archive

    again = make_all(project_root, conf, state)
    assert "build: current" in again or again.strip() == "", again
    stamp = json.loads((state / "stages" / "build.stamp").read_text())
    assert stamp["ok"]
    rerun = subprocess.run([sys.executable, "-m", "stages.build", "--conf", str(conf), "--state", str(state)],
                           cwd=project_root, capture_output=True, text=True, timeout=120, env=ENV)
    assert "build: current (inputs unchanged)" in rerun.stdout, rerun.stdout
    rerun = subprocess.run([sys.executable, "-m", "stages.compress", "--conf", str(conf), "--state", str(state),
                            "-v"], cwd=project_root, capture_output=True, text=True, timeout=120, env=ENV)
    assert "compress: current (inputs unchanged)" in rerun.stdout, rerun.stdout
