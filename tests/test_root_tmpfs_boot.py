"""`root: tmpfs` and `root: ramfs` on the small busybox image (the Debian boot test checks tmpfs with systemd).

The Debian kernel boots the demo image + the node's system overlay directly in QEMU; wwinit's /init moves
the tree into a new tmpfs / ramfs and switch_roots into it; a hook of a site overlay, run by /init after
the switch, records the mounts of / and whether pivot_root works (in a new mount namespace), and the demo
image's init prints the record (busybox's tar and switch_root do the move here; GNU tar and util-linux's
switch_root in the Debian test).
"""
import pathlib

import pytest

from helpers.overlay_fixtures import make_node
from helpers.qemu import boot_until
from wwfast import cpio
from wwfast.builder import demo_image
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.define.settings import Settings

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(400)]

# Runs after the switch (wwinit runs /wwinit/init.d/* in its second pass); the demo init prints markers.
HOOK = """#!/bin/sh
m=/etc/wwfast-markers
echo "$(grep -E '^[^ ]+ / ' /proc/mounts | cut -d' ' -f1,3 | tr '\\n' ';')" > $m/rootfs
if unshare -m sh -c 'mount --make-rprivate / && mkdir -p /tmp/pv && mount -t tmpfs pv /tmp/pv &&
        mkdir /tmp/pv/old && cd /tmp/pv && pivot_root . old' 2>/dev/null; then
    echo ok > $m/pivot
else
    echo failed > $m/pivot
fi
echo "no agent needed" > $m/runtime
"""


@pytest.fixture(scope="module")
def image_cpio(tmp_path_factory, kernel_path, kernel_modules):
    base = tmp_path_factory.mktemp("rootfs-image")
    root = base / "rootfs"
    demo_image.make_demo_image(root, kernel_path, kernel_modules, marker="demo image")
    out = base / "image.cpio"
    cpio.pack_tree(root, out)
    return out


# root: initramfs (rootfs, pivot_root fails) is checked by the Debian boot test's second node.
@pytest.mark.parametrize("root, on_root, pivot", [("tmpfs", "wwroot tmpfs", "ok"),
                                                  ("ramfs", "wwroot ramfs", "ok")])
def test_root_kind(tmp_path, kernel_path, image_cpio, root, on_root, pivot):
    conf = tmp_path / "conf"
    hook = conf / "overlays" / "rootcheck" / "wwinit" / "init.d" / "90-rootcheck"
    hook.parent.mkdir(parents=True)
    hook.write_text(HOOK)
    hook.chmod(0o755)
    settings = Settings(address="10.0.2.2", netmask="255.255.255.0", http_port=9, secure=False,
                        update_interval=60, digest="qemu-root")
    node = make_node("rnode", **{"image name": "demo", "root": root,
                                 "system overlay": ["wwinit", "hostname", "rootcheck"], "runtime overlay": []})
    build_overlays(conf, tmp_path, settings, {"rnode": node})
    initrd = tmp_path / "initrd.cpio"
    initrd.write_bytes(image_cpio.read_bytes() + pathlib.Path(archive_path(tmp_path, "rnode", "system")).read_bytes())
    console = boot_until(kernel_path, initrd, "WWFAST-NODE done", timeout=240, memory=512,
                         append="console=ttyS0 panic=-1")
    print(console)
    assert "WWFAST-NODE hostname rnode" in console
    assert f"WWFAST-NODE marker rootfs {on_root};" in console
    assert f"WWFAST-NODE marker pivot {pivot}" in console
    assert f"wwinit: root moved into {root}" in console
