"""The real Debian kernel unpacks our archives: one boot, both twins, two concatenated archives."""
import importlib
import io

import pytest

from helpers.busybox_tree import make_busybox_tree
from helpers.qemu import boot_until

pytestmark = pytest.mark.twin   # rerun by the pure-Python pass (make test)

INIT = """#!/bin/sh
mount -t proc proc /proc
[ /bin/sh -ef /bin/busybox ] && echo "WWFAST-LINKS hard-link-kept"
[ -c /dev/null ] && echo "WWFAST-DEVICES char-device-kept"
echo "WWFAST-BOOT-MARKER $(cat /etc/marker) / $(cat /etc/overlay-note)"
poweroff -f
"""


@pytest.mark.qemu
@pytest.mark.timeout(150)
def test_kernel_boots_our_initramfs(tmp_path, kernel_path):
    root = make_busybox_tree(tmp_path / "root", init_script=INIT, marker="image from the compiled writer")
    compiled = importlib.import_module("wwfast._cpio")
    pure = importlib.import_module("wwfast._cpio_py")
    # Archive 1: the tree, by the compiled twin through a real file (copy_file_range path).
    initrd = tmp_path / "initrd.cpio"
    with open(initrd, "wb") as f:
        w = compiled.NewcWriter(f, mtime=0)
        w.add_tree(root)
        w.close()
    # Archive 2, concatenated: in-memory entries by the pure twin, as the overlays are built.
    buf = io.BytesIO()
    w = pure.NewcWriter(buf, mtime=0)
    w.add_dir("etc", mode=0o755)
    w.add_file("etc/overlay-note", b"overlay from the pure writer\n", mode=0o644)
    w.close()
    with open(initrd, "ab") as f:
        f.write(buf.getvalue())
    console = boot_until(kernel_path, initrd, "WWFAST-BOOT-MARKER", timeout=90)
    assert "WWFAST-BOOT-MARKER image from the compiled writer / overlay from the pure writer" in console
    assert "WWFAST-LINKS hard-link-kept" in console
    assert "WWFAST-DEVICES char-device-kept" in console
