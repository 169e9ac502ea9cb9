"""The build stage's image step, run as a process like make does: outputs, skips with reasons, errors."""
import json
import os
import subprocess
import sys

import pytest
import zstandard

from helpers.newc import read_newc
from wwfast.builder import images

NODES = """\
nodeprofiles:
  default:
    image name: img
nodes:
  n1:
    profiles: [default]
  n2:
    profiles: [default]
    kernel:
      version: "6.1.0-13"
  n3:
    profiles: [default]
    image name: {third}
"""
SETTINGS = "image excludes: [/var/cache]\n"


@pytest.fixture
def site(tmp_path, project_root):
    conf, state, src = tmp_path / "conf", tmp_path / "state", tmp_path / "src"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(NODES.format(third="img"))
    (conf / "wwfast.yaml").write_text(SETTINGS)
    for d in ("boot", "etc/warewulf", "var/cache", "usr/share/GeoIP", "sbin"):
        (src / d).mkdir(parents=True)
    (src / "boot/vmlinuz-6.1.0-13-amd64").write_bytes(b"old kernel")
    (src / "boot/vmlinuz-6.1.0-21-amd64").write_bytes(b"new kernel")
    (src / "etc/warewulf/excludes").write_text("/usr/share/GeoIP/\n")
    (src / "usr/share/GeoIP/db").write_bytes(b"geo")
    (src / "var/cache/junk").write_bytes(b"junk")
    (src / "sbin/init").write_bytes(b"#!/bin/sh\n")
    images.import_image(src, "img", state, log=lambda *_: None)

    def stage(name, *extra):
        env = dict(os.environ, PYTHONPATH=str(project_root), SOURCE_DATE_EPOCH="1700000000")
        return subprocess.run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state),
                               *extra], capture_output=True, text=True, env=env, cwd=project_root)

    run = stage("define")
    assert run.returncode == 0, run.stderr
    return conf, state, stage


def newc_bytes(path):
    """The newc archive inside a zstd file."""
    with open(path, "rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


def test_outputs_and_build_json(site):
    conf, state, stage = site
    run = stage("build")
    assert run.returncode == 0, run.stderr
    assert "image img: rebuilding (no previous build)" in run.stdout
    out = state / "build"
    build = json.loads((out / "build.json").read_text())
    assert build["format"] == 1
    image_fields = {"image": "img", "image_cpio": "images/img.cpio", "kernel": "images/img.kernel",
                    "kernel_version": "6.1.0-21"}
    assert {k: build["nodes"]["n1"].get(k) for k in image_fields} == image_fields   # other steps add more
    assert build["nodes"]["n2"]["kernel"] == "images/img@6.1.0-13.kernel"
    assert (out / "images/img.kernel").read_bytes() == b"new kernel"
    assert (out / "images/img@6.1.0-13.kernel").read_bytes() == b"old kernel"
    assert not (out / "images/img.cpio").exists()     # packed straight into zstd: no raw archive
    archive = newc_bytes(out / "images/img.cpio.zst")
    names = {m.name for m in read_newc(archive)}
    assert b"sbin/init" in names and b"boot/vmlinuz-6.1.0-21-amd64" in names
    assert b"usr/share/GeoIP" not in names and b"var/cache" not in names    # both kinds of excludes
    assert {m.mtime for m in read_newc(archive)} == {1700000000, 0}
    meta = json.loads((state / "stages/build.stamp").read_text())["memory"]["images"]["img"]
    assert meta["cpio"]["size"] == len(archive)
    assert meta["cpio"]["packed"]["zst"]["size"] == (out / "images/img.cpio.zst").stat().st_size


def test_skip_when_unchanged_and_say_why(site):
    conf, state, stage = site
    assert stage("build").returncode == 0
    cpio_path = state / "build/images/img.cpio.zst"
    first = cpio_path.stat().st_ino
    again = stage("build")
    assert "build: current (inputs unchanged)" in again.stdout and cpio_path.stat().st_ino == first
    (state / "images/img/rootfs/sbin/init").write_bytes(b"#!/bin/sh\necho changed\n")
    changed = stage("build")
    assert "rebuilding (the image tree changed since the last build)" in changed.stdout
    (conf / "wwfast.yaml").write_text("image excludes: []\n")
    ex = stage("build")
    assert "rebuilding (the excludes changed)" in ex.stdout
    cpio_path.unlink()
    gone = stage("build")
    assert "output build/images/img.cpio.zst missing" in gone.stdout
    assert "rebuilding (output img.cpio.zst is missing)" in gone.stdout
    rebuilt = cpio_path.stat().st_ino
    (conf / "overlays" / "hostname" / "etc").mkdir(parents=True)    # a site overlay: the images stay
    (conf / "overlays" / "hostname" / "etc" / "hostname.j2").write_text("site-{{ node.id }}\n")
    site = stage("build")
    assert "build: running (1 tree(s) changed: overlays)" in site.stdout
    assert "image img: current (inputs unchanged)" in site.stdout and cpio_path.stat().st_ino == rebuilt
    (state / "build/overlays/n1/runtime.cpio").unlink()             # a per-node output gone
    again = stage("build")
    assert "build: running (1 build output(s) missing: overlays/n1/runtime.cpio)" in again.stdout
    assert "n1 (no archive yet)" in again.stdout and (state / "build/overlays/n1/runtime.cpio").is_file()
    shared = json.loads((state / "build/build.json").read_text())["nodes"]["n1"]["system_shared"]
    (state / "build" / shared).unlink()                           # secure mode: the shared part gone
    restored = stage("build")
    assert f"build: running (1 build output(s) missing: {shared})" in restored.stdout
    assert "0 node(s) rebuilt" in restored.stdout and (state / "build" / shared).is_file()


def test_missing_image_fails_and_keeps_previous_build_json(site):
    conf, state, stage = site
    assert stage("build").returncode == 0
    before = (state / "build/build.json").read_bytes()
    # The define stage refuses unknown image names; an image deleted after define is what build meets.
    db_path = state / "define/nodes.json"
    db = json.loads(db_path.read_text())
    db["nodes"]["n3"]["image name"] = "other"
    db_path.write_text(json.dumps(db))
    run = stage("build")
    assert run.returncode == 1
    assert "image 'other' is not imported" in run.stderr and "n3" in run.stderr
    assert "build.json not updated" in run.stderr
    assert (state / "build/build.json").read_bytes() == before


def test_unknown_kernel_version_names_the_node(site):
    conf, state, stage = site
    (conf / "nodes.yaml").write_text(NODES.format(third="img").replace('"6.1.0-13"', '"9.9"'))
    assert stage("define").returncode == 0
    run = stage("build")
    assert run.returncode == 1 and "node n2" in run.stderr and "'9.9'" in run.stderr
