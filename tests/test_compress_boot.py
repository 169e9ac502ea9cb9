"""The real Debian kernel, in QEMU, boots what the compress stage published.

A busybox initramfs packed by our writer goes through the build-tree layout and the stage; the
store files named in the manifest are given to the kernel as one -initrd, the way iPXE hands several
initrds over: image + system + runtime concatenated, each starting on a 4 KiB boundary (iPXE's
INITRD_ALIGN; the zero fill between them is legal padding). The init prints the marker of each
part, so a boot proves the kernel unpacked every compressed archive in turn (performance.md 2.2).
"""
import os
import pathlib
import shutil
import subprocess

import pytest

from wwfast.publish import manifest as publish

from compress_support import BuildTree, check_published, run_stage, write_settings

QEMU = "qemu-system-x86_64"
BOOT_TIMEOUT = 150
INIT = """#!/bin/busybox sh
/bin/busybox mkdir -p /proc
/bin/busybox mount -t proc proc /proc
m() { /bin/busybox cat /etc/wwfast-markers/$1 2>/dev/null || echo none; }
echo "WWFAST-BOOT image=[$(m image)] system=[$(m system)] runtime=[$(m runtime)]"
/bin/busybox poweroff -f
"""


def busybox_tree(root):
    (root / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", root / "bin" / "busybox")
    (root / "etc" / "wwfast-markers").mkdir(parents=True)
    (root / "etc" / "wwfast-markers" / "image").write_text("busybox image\n")
    (root / "init").write_text(INIT)
    os.chmod(root / "init", 0o755)
    return root


@pytest.fixture(scope="module")
def published(tmp_path_factory, kernel_path):
    base = tmp_path_factory.mktemp("boot")
    conf, state = base / "conf", base / "state"
    write_settings(conf, gzip=True)
    BuildTree(state, count=1, image_tree=busybox_tree(base / "tree"), kernel=kernel_path).write_all()
    result = run_stage(conf, state)
    assert result.returncode == 0, result.stderr
    manifest = check_published(state)
    return base, pathlib.Path(publish.store_dir(str(state))), manifest["nodes"]["n0001"]["artifacts"]


def concatenated(store, artifacts, encodings, out, align=4096):
    """image, system, runtime in that order, as iPXE lays several initrds out in memory."""
    with open(out, "wb") as f:
        for part, enc in zip(("image", "system", "runtime"), encodings):
            if align and f.tell() % align:
                f.write(b"\0" * (align - f.tell() % align))
            f.write((store / artifacts[part][enc]["file"]).read_bytes())
    return out


def boot(kernel, initrd, log):
    cmd = [QEMU, "-m", "256", "-nographic", "-no-reboot", "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", "console=ttyS0 panic=-1 rdinit=/init", "-net", "none"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        # /init prints its line and powers off: QEMU's exit means the whole console is written
        # (the timeout is only a backstop; a node that never powers off fails on its console).
        proc.wait(BOOT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
        proc.wait()
    return pathlib.Path(log).read_bytes().decode("utf-8", "replace")


@pytest.mark.qemu
@pytest.mark.parametrize("encodings,align", [
    (("zst", "zst", "zst"), 4096),
    (("gz", "gz", "gz"), 4096),
    (("zst", "gz", "zst"), 0),           # mixed compressors, packed back to back
], ids=["zst", "gz", "mixed-unaligned"])
def test_kernel_boots_published_archives(published, kernel_path, encodings, align):
    base, store, artifacts = published
    name = "-".join(encodings) + f"-{align}"
    initrd = concatenated(store, artifacts, encodings, base / f"{name}.initrd", align)
    console = boot(kernel_path, initrd, base / f"{name}.console.log")
    tail = "\n".join(console.splitlines()[-25:])
    assert "Initramfs unpacking failed" not in console, tail
    assert "WWFAST-BOOT image=[busybox image] system=[system n0001] runtime=[runtime r0]" in console, tail
