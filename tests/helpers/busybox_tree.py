"""A tiny bootable root tree: busybox-static, device nodes, and an /init you choose.

    root = make_busybox_tree(tmp_path / "root", init_script=INIT)   # INIT: a shell script for /init

The kernel runs /init from the initramfs; it prints to /dev/console (ttyS0 with console=ttyS0), so
the tree ships dev/console itself. `poweroff -f` ends the guest (QEMU exits with -no-reboot).
"""
import os
import shutil
import stat

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "mount", "echo", "cat", "poweroff", "test", "ls", "sync")

DEFAULT_INIT = """#!/bin/sh
mount -t proc proc /proc
echo "WWFAST-BOOT-MARKER $(cat /etc/marker 2>/dev/null)"
poweroff -f
"""


def make_busybox_tree(dest, init_script=DEFAULT_INIT, marker="hello from the initramfs", hardlink_sh=True):
    """Create the tree at `dest` (bin/ with busybox, applets as symlinks, sh as a hard link)."""
    if not os.path.exists(BUSYBOX):
        raise FileNotFoundError(f"{BUSYBOX} is missing: apt-get install busybox-static")
    for d in ("bin", "sbin", "etc", "proc", "sys", "dev", "tmp", "root"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    os.chmod(os.path.join(dest, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(dest, "bin", "busybox"))
    for applet in APPLETS:
        path = os.path.join(dest, "bin", applet)
        if applet == "sh" and hardlink_sh:
            os.link(os.path.join(dest, "bin", "busybox"), path)   # the kernel must restore hard links
        else:
            os.symlink("busybox", path)
    os.symlink("../bin/busybox", os.path.join(dest, "sbin", "poweroff"))
    os.mknod(os.path.join(dest, "dev", "console"), 0o600 | stat.S_IFCHR, os.makedev(5, 1))
    os.mknod(os.path.join(dest, "dev", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    with open(os.path.join(dest, "etc", "marker"), "w") as f:
        f.write(marker + "\n")
    init = os.path.join(dest, "init")
    with open(init, "w") as f:
        f.write(init_script)
    os.chmod(init, 0o755)
    return dest
