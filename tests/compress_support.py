"""Build trees for the compress stage tests, laid out exactly as docs/formats.md says the build stage does.

Archives are packed by our newc writer (wwfast.cpio); every file is written atomically, as the build
stage writes them, so a rebuilt file gets a new inode like in real runs.
"""
import io
import json
import os
import pathlib
import subprocess
import sys

from wwfast import cpio, fsutil, records
from wwfast.define import nodes

ROOT = pathlib.Path(__file__).resolve().parent.parent


def node_ids(count):
    return [f"n{i:04d}" for i in range(1, count + 1)]


def node_record(node_id, index):
    mac = f"52:54:00:{index >> 16 & 0xff:02x}:{index >> 8 & 0xff:02x}:{index & 0xff:02x}"
    return {
        "id": node_id, "profiles": ["default"], "comment": "", "cluster name": "", "image name": "demo",
        "ipxe template": "default", "system overlay": ["wwinit"], "runtime overlay": ["hosts"],
        "kernel": {"version": "", "args": ["console=ttyS0"]}, "init": "/init", "root": "initramfs",
        "asset key": "", "discoverable": False, "primary network": "default",
        "network devices": {"default": {
            "device": "eth0", "hwaddr": mac, "ipaddr": f"10.0.{index >> 8 & 0xff}.{index & 0xff}",
            "netmask": "255.255.0.0", "gateway": "", "ipaddr6": "", "prefixlen6": "", "gateway6": "",
            "mtu": "", "type": "ethernet", "onboot": True, "primary": True, "tags": {}}},
        "ipmi": {}, "tags": {}, "resources": {}, "disks": {}, "filesystems": {},
    }


def archive_bytes(files):
    """A newc archive of {name: bytes} (directories made for nested names)."""
    buf = io.BytesIO()
    writer = cpio.NewcWriter(buf, mtime=0)
    dirs = set()
    for name in sorted(files):
        parts = name.split("/")
        for i in range(1, len(parts)):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                writer.add_dir(d, mtime=0)
        data = files[name]
        mode = 0o100755 if data.startswith(b"#!") else 0o100644
        writer.add_file(name, data, mode=mode, mtime=0)
    writer.close()
    return buf.getvalue()


def system_files(node_id):
    return {"etc/hostname": f"{node_id}\n".encode(), "etc/wwfast-markers/system": f"system {node_id}\n".encode()}


def runtime_files(node_id, revision=0):
    return {"etc/wwfast-markers/runtime": f"runtime r{revision}\n".encode()}


class BuildTree:
    """STATE/define/nodes.json plus STATE/build/* for `count` nodes sharing one image."""

    def __init__(self, state, count=3, image_tree=None, kernel=None, image_bytes=None):
        self.state = pathlib.Path(state)
        self.build = self.state / "build"
        self.ids = node_ids(count)
        self.image_tree = image_tree
        self.kernel = kernel
        self.image_bytes = image_bytes
        self.runtime_revision = {n: 0 for n in self.ids}

    def write_nodes(self):
        db = {n: node_record(n, i + 1) for i, n in enumerate(self.ids)}
        fsutil.atomic_write(nodes.db_path(str(self.state)), nodes.render_db(db), fsync=False)

    def write_image(self):
        path = self.build / "images" / "demo.cpio"
        if self.image_tree is not None:
            cpio.pack_tree(str(self.image_tree), str(path), mtime=0)
        else:
            data = self.image_bytes or archive_bytes({"bin/hello": b"#!/bin/sh\necho hello\n" * 500})
            fsutil.atomic_write(path, data, fsync=False)
        kernel = pathlib.Path(self.kernel).read_bytes() if self.kernel else b"not a kernel, " * 1000
        fsutil.atomic_write(self.build / "images" / "demo.kernel", kernel, fsync=False)

    def write_overlays(self, ids=None):
        for n in ids or self.ids:
            base = self.build / "overlays" / n
            fsutil.atomic_write(base / "system.cpio", archive_bytes(system_files(n)), fsync=False)
            fsutil.atomic_write(base / "runtime.cpio",
                                archive_bytes(runtime_files(n, self.runtime_revision[n])), fsync=False)
            fsutil.atomic_write(self.build / "ipxe" / f"{n}.ipxe", f"#!ipxe\necho {n}\n", fsync=False)
        fsutil.atomic_write(self.build / "ipxe" / "unknown.ipxe", "#!ipxe\necho unknown\n", fsync=False)

    def write_build_json(self):
        def node_fields(i, n):   # what the build stage copies from nodes.json for the manifest
            node = records.Node.from_json(node_record(n, i + 1))
            return {"macs": list(node.macs), "addresses": list(node.addresses), "asset_key": node.asset_key}
        doc = {"format": 1, "unknown_ipxe": "ipxe/unknown.ipxe", "nodes": {
            n: {"image": "demo", "kernel": "images/demo.kernel", "image_cpio": "images/demo.cpio",
                "system": f"overlays/{n}/system.cpio", "runtime": f"overlays/{n}/runtime.cpio",
                "ipxe": f"ipxe/{n}.ipxe", **node_fields(i, n)} for i, n in enumerate(self.ids)}}
        fsutil.atomic_write(self.build / "build.json", json.dumps(doc, indent=1, sort_keys=True) + "\n",
                            fsync=False)

    def write_all(self):
        self.write_nodes()
        self.write_image()
        self.write_overlays()
        self.write_build_json()
        return self

    def bump_runtime(self, node_id):
        """A new runtime overlay for one node (what a changed runtime template does)."""
        self.runtime_revision[node_id] += 1
        self.write_overlays([node_id])


def run_stage(conf, state, *args, timeout=300, env=None):
    """python -m stages.compress as a process; returns CompletedProcess (text)."""
    cmd = [sys.executable, "-m", "stages.compress", "--conf", str(conf), "--state", str(state), *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))


def write_settings(conf, zstd_level=3, gzip=True):
    conf = pathlib.Path(conf)
    conf.mkdir(parents=True, exist_ok=True)
    (conf / "wwfast.yaml").write_text(
        f"compression:\n  zstd level: {zstd_level}\n  gzip: {'true' if gzip else 'false'}\n  threads: 0\n")


def check_published(state):
    """Assert the manifest parses and every file it names is whole; return the manifest."""
    from wwfast.publish import manifest as publish
    manifest = publish.load_manifest(str(state))
    assert manifest is not None and manifest["format"] == 1
    store = pathlib.Path(publish.store_dir(str(state)))
    for name, (size, sha) in publish.manifest_files(manifest).items():
        path = store / name
        assert path.is_file(), f"manifest names {name}, missing from the store"
        assert path.stat().st_size == size, f"{name}: size {path.stat().st_size} != recorded {size}"
        assert fsutil.sha256_file(path) == sha, f"{name}: sha256 differs from the manifest"
    return manifest
