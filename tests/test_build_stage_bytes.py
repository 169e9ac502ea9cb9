"""The build stage's outputs are byte for byte what they were before its speed-ups (golden digests).

A small cluster (two images, two NIC layouts, the default overlay lists incl. ssh.host_keys, users,
network, fstab) is built by `python -m stages.build` as a user runs it, and again in process through the
parallel fan-out (forced on for a few nodes): every archive, kernel and iPXE script has the sha256 in
tests/golden/build_stage.txt. Image archives are compared by their uncompressed newc bytes, whatever
encoding the build keeps them in. Regenerate after an intended change: WWFAST_UPDATE_GOLDEN=1.
"""
import hashlib
import os
import pathlib
import subprocess
import sys

import pytest
import zstandard

from helpers.overlay_fixtures import fake_ssh_keys
from wwfast.builder import images

GOLDEN = pathlib.Path(__file__).parent / "golden" / "build_stage.txt"
EPOCH = "1700000000"
NODES = 24
# Bookkeeping, not outputs: fingerprints and records that name the temp directories of the run.
SKIP = {"build.json", "state.json", ".lock"}


def _nodes_yaml():
    lines = ["nodeprofiles:", "  default:", "    image name: bb", "    kernel:", "      args: [console=ttyS0, quiet]",
             "    system overlay: [wwinit, hostname, hosts, network, ssh.host_keys, issue, resolv, fstab]",
             "    runtime overlay: [hosts, ssh.authorized_keys, users]",
             "    network devices:", "      default: {device: eth0, netmask: 255.255.0.0, gateway: 10.100.0.1}",
             "  sd:", "    profiles: [default]", "    image name: sd",
             "    resources:", "      fstab: [{spec: '10.100.0.1:/home', file: /home}]", "nodes:"]
    for i in range(NODES):
        lines += [f"  n{i:02d}:", f"    profiles: [{'sd' if i % 3 == 0 else 'default'}]", "    network devices:",
                  "      default:", f"        hwaddr: \"52:54:00:00:01:{i:02x}\"", f"        ipaddr: 10.100.1.{i + 10}"]
        if i % 4 == 1:
            lines += ["      data:", "        device: eth1", f"        hwaddr: \"52:54:00:00:02:{i:02x}\"",
                      f"        ipaddr: 10.200.0.{i + 10}", "        netmask: 255.255.255.0"]
    return "\n".join(lines) + "\n"


def _image(src, kernel, systemd):
    for d in ("boot", "etc", "bin", "sbin", "usr/sbin", "usr/lib/systemd"):
        (src / d).mkdir(parents=True, exist_ok=True)
    (src / f"boot/vmlinuz-{kernel}-amd64").write_bytes(f"kernel {kernel}\n".encode() * 100)
    (src / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    (src / "etc/group").write_text("root:x:0:\nusers:x:100:\n")
    (src / "bin/busybox").write_bytes(b"\x7fELF busybox")
    os.symlink("../bin/busybox", src / "sbin/ifup")
    if systemd:
        for rel in ("usr/lib/systemd/systemd", "usr/lib/systemd/systemd-networkd", "usr/sbin/NetworkManager"):
            (src / rel).write_bytes(b"\x7fELF")


@pytest.fixture
def site(tmp_path, project_root):
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    (conf / "nodes.yaml").write_text(_nodes_yaml())
    (conf / "wwfast.yaml").write_text("ipaddr: 10.100.0.1\nnetmask: 255.255.0.0\n")
    for name, kernel, systemd in (("bb", "6.1.0-13", False), ("sd", "6.1.0-21", True)):
        _image(tmp_path / name, kernel, systemd)
        images.import_image(tmp_path / name, name, state, log=lambda *_: None)
    fake_ssh_keys(state)
    env = dict(os.environ, PYTHONPATH=str(project_root), SOURCE_DATE_EPOCH=EPOCH)

    def stage(name):
        run = subprocess.run([sys.executable, "-m", f"stages.{name}", "--conf", str(conf), "--state", str(state)],
                             capture_output=True, text=True, env=env, cwd=project_root, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return run

    stage("define")
    return conf, state, stage


def digests(build):
    """{logical path: sha256} of every output under STATE/build (image archives by their newc bytes)."""
    out = {}
    for path in sorted(build.rglob("*")):
        rel = path.relative_to(build).as_posix()
        if not path.is_file() or path.name in SKIP or path.name.endswith(".meta.json"):
            continue
        data = path.read_bytes()
        if rel.endswith(".cpio.gz"):
            continue   # the same archive as .cpio.zst; its bytes are checked by the compress tests
        if rel.endswith(".cpio.zst"):
            rel, data = rel[:-len(".zst")], zstandard.ZstdDecompressor().decompressobj().decompress(data)
        out[rel] = hashlib.sha256(data).hexdigest()
    return out


def check_golden(found):
    text = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(found.items()))
    if os.environ.get("WWFAST_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    golden = dict(reversed(line.split("  ", 1)) for line in GOLDEN.read_text().splitlines())
    assert {rel: found.get(rel) for rel in golden} == golden
    assert sorted(found) == sorted(golden)


def test_build_stage_outputs_match_golden(site):
    conf, state, stage = site
    stage("build")
    check_golden(digests(state / "build"))


def test_parallel_fan_out_writes_the_same_bytes(site, monkeypatch):
    conf, state, stage = site
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    from stages import build as build_stage
    from wwfast.builder import overlay_build
    monkeypatch.setattr(overlay_build, "PARALLEL_MIN_NODES", 1)
    lines = []
    assert build_stage.run(str(conf), str(state), out=lines.append) == 0
    assert any("24 node(s) rebuilt" in line for line in lines), lines
    check_golden(digests(state / "build"))
