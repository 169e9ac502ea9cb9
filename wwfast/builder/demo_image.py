"""Make the small bootable demo image: busybox, a kernel with its NIC modules, and a talking /sbin/init.

The tree is what `wwfast image import DIR NAME` takes. A node booted from it prints, on its console,
lines starting with `WWFAST-NODE`: its hostname (from the system overlay), every marker file under
/etc/wwfast-markers/ (the image ships `image`; overlays may add `system` and `runtime`), and the kernel
command line; then it powers off. The runtime marker is waited for, because in secure mode only the
node agent can fetch the runtime overlay, some seconds after boot.

    python -m wwfast.builder.demo_image DIR [--kernel VMLINUZ] [--marker TEXT] [--import NAME --state STATE]
"""
import argparse
import os
import pathlib
import shutil
import stat
import subprocess
import sys

from wwfast import fsutil, layout
from wwfast.dirs import add_dir_arguments

BUSYBOX = "/bin/busybox"
CONSOLE_TAG = "WWFAST-NODE"
MARKER_DIR = "etc/wwfast-markers"
RUNTIME_MARKER = MARKER_DIR + "/runtime"
RUNTIME_WAIT_SECONDS = 120

# Modules a diskless node needs for its network: the NIC driver QEMU gives it (e1000; virtio-net, the NIC
# OVMF's own PXE drives, with the virtio PCI transport) and af_packet for DHCP clients such as udhcpc.
# Paths relative to lib/modules/<version>.
NETWORK_MODULES = (
    "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
    "kernel/net/packet/af_packet.ko",
    "kernel/drivers/net/virtio_net.ko",
    "kernel/drivers/virtio/virtio_pci.ko",
    "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
    "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
    "kernel/drivers/net/net_failover.ko",
    "kernel/net/core/failover.ko",
    "kernel/drivers/virtio/virtio.ko",
    "kernel/drivers/virtio/virtio_ring.ko",
)
MODULE_INDEX_FILES = ("modules.order", "modules.builtin", "modules.builtin.modinfo")

INIT_SCRIPT = f"""#!/bin/sh
# wwfast demo node: show on the console what this node received, then power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
[ -e /proc/self ] || mount -t proc proc /proc
[ -d /sys/class ] || mount -t sysfs sysfs /sys
say() {{ echo "{CONSOLE_TAG} $*"; }}
say "hostname $(hostname)"
waited=0
while [ ! -s /{RUNTIME_MARKER} ] && [ "$waited" -lt {RUNTIME_WAIT_SECONDS} ]; do
    sleep 1
    waited=$((waited + 1))
done
[ -s /{RUNTIME_MARKER} ] || say "runtime marker missing after {RUNTIME_WAIT_SECONDS}s"
for f in /{MARKER_DIR}/*; do
    [ -f "$f" ] && say "marker $(basename "$f") $(cat "$f")"
done
say "cmdline $(cat /proc/cmdline)"
say "uptime $(cut -d' ' -f1 /proc/uptime)"
say "done"
sync
poweroff -f
"""

BASE_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
    "etc/group": "root:x:0:\n",
    "etc/hostname": "demo-image\n",
    "etc/os-release": 'NAME="wwfast demo"\nID=wwfast-demo\nPRETTY_NAME="wwfast demo (busybox)"\n',
}
BASE_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "run", "tmp", "root",
             "var/log", "boot", "lib/modules", MARKER_DIR)


def kernel_version(vmlinuz):
    name = pathlib.Path(vmlinuz).name
    if not name.startswith("vmlinuz-"):
        raise ValueError(f"{vmlinuz}: expected a file named vmlinuz-<version>")
    return name[len("vmlinuz-"):]


def default_kernel():
    """The Debian kernel scripts/fetch-kernel.sh fetched (and unpacked with its modules)."""
    script = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "fetch-kernel.sh"
    out = subprocess.run([str(script)], capture_output=True, text=True, check=True)
    return pathlib.Path(out.stdout.strip().splitlines()[-1])


def _write(root, rel, text, mode=0o644):
    fsutil.atomic_write(root / rel, text, perms=mode, fsync=False)


def _make_device_nodes(root):
    """/dev/console lets the kernel give init a console before devtmpfs is mounted (root only)."""
    for rel, mode, major, minor in (("dev/console", 0o600, 5, 1), ("dev/null", 0o666, 1, 3)):
        try:
            os.mknod(root / rel, mode | stat.S_IFCHR, os.makedev(major, minor))
        except PermissionError:
            pass  # unprivileged: the kernel's built-in initramfs has /dev/console too


def _install_busybox(root):
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    os.chmod(root / "bin" / "busybox", 0o755)
    applets = subprocess.run([BUSYBOX, "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in applets.split():
        link = root / rel
        if rel == "bin/busybox" or link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(root / "bin" / "busybox", link.parent)
        os.symlink(target, link)


def _install_kernel(root, vmlinuz, modules_dir):
    version = kernel_version(vmlinuz)
    shutil.copy2(vmlinuz, root / "boot" / f"vmlinuz-{version}")
    dest = root / "lib" / "modules" / version
    for rel in NETWORK_MODULES + MODULE_INDEX_FILES:
        src = modules_dir / rel
        if not src.exists():
            continue  # another kernel build may have the driver built in
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    # modules.dep lets the node's modprobe resolve dependencies (virtio_net needs four others).
    subprocess.run([BUSYBOX, "depmod", "-b", str(root), version], check=True)
    return version


def make_demo_image(dest, vmlinuz=None, modules_dir=None, marker="demo image"):
    """Create the demo tree at `dest` (replaced if it exists); return the kernel version in it."""
    dest = pathlib.Path(dest)
    vmlinuz = pathlib.Path(vmlinuz) if vmlinuz else default_kernel()
    version = kernel_version(vmlinuz)
    if modules_dir is None:
        modules_dir = vmlinuz.parent.parent / "lib" / "modules" / version
    modules_dir = pathlib.Path(modules_dir)
    if not modules_dir.is_dir():
        raise FileNotFoundError(f"{modules_dir}: kernel modules not found (scripts/fetch-kernel.sh unpacks them)")
    # Build beside the destination and swap it in, so a half-made tree is never imported.
    work = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    for d in BASE_DIRS:
        (work / d).mkdir(parents=True, exist_ok=True)
    os.chmod(work / "tmp", 0o1777)
    _install_busybox(work)
    _make_device_nodes(work)
    for rel, text in BASE_FILES.items():
        _write(work, rel, text)
    _write(work, "sbin/init", INIT_SCRIPT, mode=0o755)
    _write(work, MARKER_DIR + "/image", marker + "\n")
    _install_kernel(work, vmlinuz, modules_dir)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(work, dest)
    return version


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m wwfast.builder.demo_image", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", help="where to create the image tree (replaced if it exists)")
    parser.add_argument("--kernel", help="vmlinuz-<version> to put in /boot (default: scripts/fetch-kernel.sh)")
    parser.add_argument("--modules", help="its lib/modules/<version> directory (default: beside the kernel)")
    parser.add_argument("--marker", default="demo image", help="text of /etc/wwfast-markers/image")
    parser.add_argument("--import", dest="import_name", metavar="NAME", help="then run `wwfast image import DIR NAME`")
    add_dir_arguments(parser)
    args = parser.parse_args(argv)
    version = make_demo_image(args.dir, args.kernel, args.modules, args.marker)
    print(f"demo image: {args.dir} (busybox, kernel {version})")
    if args.import_name:
        # The environment carries conf/state: every wwfast subcommand honours WWFAST_CONF / WWFAST_STATE.
        env = dict(os.environ, WWFAST_CONF=args.conf, WWFAST_STATE=args.state)
        update = ["--update"] if os.path.exists(layout.image_dir(args.state, args.import_name)) else []
        cmd = [sys.executable, "-m", "wwfast.cli", "image", "import", *update, args.dir, args.import_name]
        return subprocess.run(cmd, env=env).returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
