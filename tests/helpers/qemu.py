"""Boot a kernel + initrd in QEMU (TCG, never KVM) and wait for a console marker.

    console = boot_until(kernel, initrd, "WWFAST-BOOT-MARKER", timeout=90)

Fails (AssertionError carrying the whole console log) when the marker does not appear in time or
QEMU exits first. The guest is always killed at the end.
"""
import os
import selectors
import subprocess
import time

QEMU = "qemu-system-x86_64"


def qemu_command(kernel, initrd, append="console=ttyS0 panic=-1", memory=256, extra=()):
    return [QEMU, "-m", str(memory), "-nographic", "-no-reboot", "-monitor", "none",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", append, *extra]


def boot_until(kernel, initrd, marker, timeout=90, append="console=ttyS0 panic=-1", memory=256, extra=(),
               wait_exit=10):
    """Return the console text once `marker` was printed (and QEMU exited or `wait_exit` s passed)."""
    proc = subprocess.Popen(qemu_command(kernel, initrd, append, memory, extra), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    console = bytearray()
    seen_at = None
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        while True:
            now = time.monotonic()
            if seen_at is None and marker.encode() in console:
                seen_at = now
            if seen_at is not None and (proc.poll() is not None or now - seen_at > wait_exit):
                return console.decode(errors="replace")
            if now > deadline:
                raise AssertionError(f"no {marker!r} on the console within {timeout} s:\n"
                                     f"{console.decode(errors='replace')}")
            if sel.select(timeout=0.5):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    proc.wait(timeout=5)
                    if marker.encode() in console:
                        return console.decode(errors="replace")
                    raise AssertionError(f"QEMU exited ({proc.returncode}) before {marker!r}:\n"
                                         f"{console.decode(errors='replace')}")
                console += chunk
    finally:
        sel.close()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()
