"""Boot several QEMU nodes at once from the network and read what their consoles say.

Each node is one `qemu-system-x86_64` (TCG unless a test asks for KVM, see kvm_works()), its serial
console written to a log file: BIOS nodes have an e1000 NIC whose iPXE ROM boots them; UEFI nodes run OVMF with a virtio NIC, so the
firmware's own PXE fetches the iPXE binary by TFTP first. `NodeGroup` starts them together, waits for console markers with one deadline and always kills
what it started; a node that misses its deadline fails the test with its console log.

The demo image's /sbin/init (wwfast.builder.demo_image) prints lines `WWFAST-NODE <key> <value>`;
`node_report()` turns them into a dict. (helpers.qemu boots one kernel + initrd directly, without
firmware or network; this module is its network-boot counterpart and shares its QEMU binary name.)
"""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

from helpers.qemu import QEMU

CONSOLE_TAG = "WWFAST-NODE"
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc")
DONE_LINE = CONSOLE_TAG + " done"
# UEFI firmware from Debian's ovmf package: code read-only, a writable copy of the variable store per node.
OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


def kvm_works(kernel, timeout=10):
    """Whether KVM runs a guest here: /dev/kvm is usable and a kernel booted with it prints its banner
    (on some nested hosts KVM exists but the guest hangs). WWFAST_ACCEL=tcg|kvm decides without asking."""
    forced = os.environ.get("WWFAST_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cmd = [QEMU, "-accel", "kvm", "-m", "256", "-nographic", "-no-reboot", "-monitor", "none",
           "-kernel", str(kernel), "-append", "console=ttyS0 panic=-1"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    out = b""
    try:
        deadline = time.monotonic() + timeout
        os.set_blocking(proc.stdout.fileno(), False)
        while time.monotonic() < deadline and b"Linux version" not in out and proc.poll() is None:
            out += proc.stdout.read() or b""
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return b"Linux version" in out


class NodeTimeout(AssertionError):
    """A node did not reach a console marker in time; the message carries its console log."""


def mac_for(index, prefix="52:54:00:00:00"):
    return f"{prefix}:{index:02x}"


def clean_console(raw):
    return ANSI_ESCAPE.sub("", raw.replace("\r", ""))


def node_report(console):
    """Parse the demo init's `WWFAST-NODE key value` lines: {"hostname": .., "markers": {..}, ...}."""
    report = {"markers": {}}
    for line in console.splitlines():
        idx = line.find(CONSOLE_TAG + " ")
        if idx < 0:
            continue
        key, _, value = line[idx + len(CONSOLE_TAG) + 1:].strip().partition(" ")
        if key == "marker":
            name, _, text = value.partition(" ")
            report["markers"][name] = text
        else:
            report[key] = value
    return report


class QemuNode:
    """One QEMU guest booting from the network. Use through NodeGroup (or call stop() yourself)."""

    def __init__(self, name, mac, log_dir, bootfile=None, asset=None, netns=None, tap=None,
                 memory=256, extra_args=(), firmware="bios", hostfwd=(), accel=None):
        """`firmware`: "bios" (SeaBIOS; the e1000's iPXE ROM boots it) or "uefi" (OVMF on q35; a virtio NIC
        without option ROM, so the firmware's own network stack and PXE start the boot).
        `hostfwd`: (host port on 127.0.0.1, guest address, guest port) TCP forwards of the user network;
        `accel`: "kvm" (see kvm_works()) or None for TCG."""
        if firmware not in ("bios", "uefi"):
            raise ValueError(f"firmware {firmware!r}: bios or uefi")
        self.firmware = firmware
        self.name = name
        self.mac = mac
        self.log_path = pathlib.Path(log_dir) / f"{name}.console.log"
        self.bootfile = bootfile
        self.asset = asset
        self.netns = netns
        self.tap = tap
        self.memory = memory
        self.extra_args = list(extra_args)
        self.hostfwd = list(hostfwd)
        self.accel = accel
        self.proc = None
        self.started_at = None
        self.finished_at = None

    def command(self):
        if self.tap:
            netdev = f"tap,id=n0,ifname={self.tap},script=no,downscript=no"
        else:
            netdev = "user,id=n0" + (f",bootfile={self.bootfile}" if self.bootfile else "")
            netdev += "".join(f",hostfwd=tcp:127.0.0.1:{h}-{g}:{p}" for h, g, p in self.hostfwd)
        cmd = [QEMU, "-m", str(self.memory), "-nographic", "-no-reboot", "-netdev", netdev]
        if self.accel == "kvm":
            cmd += ["-accel", "kvm", "-cpu", "host"]
        if self.firmware == "uefi":
            cmd += ["-machine", "q35",
                    "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                    "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_path}",
                    "-device", f"virtio-net-pci,netdev=n0,mac={self.mac},romfile=,bootindex=0"]
        else:
            cmd += ["-boot", "n", "-device", f"e1000,netdev=n0,mac={self.mac}"]
        if self.asset is not None:
            cmd += ["-smbios", f"type=3,asset={self.asset}"]
        cmd += self.extra_args
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd
        return cmd

    def start(self):
        if shutil.which(QEMU) is None:
            raise RuntimeError(f"{QEMU} not installed (Debian package qemu-system-x86)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.firmware == "uefi":
            if not os.path.exists(OVMF_CODE):
                raise RuntimeError(f"{OVMF_CODE} missing (Debian package ovmf)")
            shutil.copyfile(OVMF_VARS, self.vars_path)     # fresh NVRAM: boot order from bootindex
        log = open(self.log_path, "wb")
        try:
            # Own session: stop() kills QEMU (and `ip netns exec`) as a group, nothing else.
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        self.started_at = time.monotonic()
        return self

    @property
    def vars_path(self):
        return self.log_path.with_name(f"{self.name}.OVMF_VARS.fd")

    def console(self):
        try:
            return clean_console(self.log_path.read_bytes().decode("utf-8", "replace"))
        except FileNotFoundError:
            return ""

    def exited(self):
        return self.proc is not None and self.proc.poll() is not None

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def report(self):
        return node_report(self.console())

    def seconds(self):
        """Seconds from start to the `done` line (or to now / exit when not done)."""
        end = self.finished_at or time.monotonic()
        return end - self.started_at if self.started_at else 0.0

    def failure(self, what, timeout):
        tail = "\n".join(self.console().splitlines()[-60:])
        state = f"exited with {self.proc.returncode}" if self.exited() else "still running"
        return (f"node {self.name} ({self.mac}) did not show {what!r} within {timeout:.0f}s ({state}); "
                f"console log {self.log_path}, last lines:\n{tail}")


class NodeGroup:
    """Start nodes together; wait for their markers under one deadline; always stop them on exit."""

    def __init__(self, nodes):
        self.nodes = list(nodes)

    def __enter__(self):
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        for node in self.nodes:
            node.stop()

    def __iter__(self):
        return iter(self.nodes)

    def wait_for(self, text, timeout, nodes=None):
        """Wait until every node's console contains `text` (a str or a compiled regex).

        A node that exits without it, or is still missing it at the deadline, raises NodeTimeout with
        the console of every such node. Returns {name: seconds since its start}.
        """
        nodes = list(nodes or self.nodes)
        deadline = time.monotonic() + timeout
        pending = {n.name: n for n in nodes}
        seen = {}
        while pending:
            for name, node in list(pending.items()):
                console = node.console()
                found = text.search(console) if hasattr(text, "search") else text in console
                if found:
                    seen[name] = time.monotonic() - node.started_at
                    del pending[name]
                elif node.exited():
                    # One more read: QEMU may have written its last lines just before exiting.
                    console = node.console()
                    found = text.search(console) if hasattr(text, "search") else text in console
                    if found:
                        seen[name] = time.monotonic() - node.started_at
                        del pending[name]
                        continue
                    raise NodeTimeout(node.failure(getattr(text, "pattern", text), timeout))
            if pending and time.monotonic() > deadline:
                raise NodeTimeout("\n\n".join(n.failure(getattr(text, "pattern", text), timeout)
                                              for n in pending.values()))
            if pending:
                time.sleep(0.25)
        return seen

    def wait_booted(self, timeout, nodes=None):
        """Wait for the demo init's `WWFAST-NODE done`; return {name: report dict with "seconds"}."""
        seconds = self.wait_for(DONE_LINE, timeout, nodes)
        reports = {}
        for node in nodes or self.nodes:
            node.finished_at = node.started_at + seconds[node.name]
            reports[node.name] = dict(node.report(), seconds=seconds[node.name])
        return reports

    def assert_never_shows(self, text, seconds, nodes=None):
        """Watch for `seconds`: no node's console may contain `text` (e.g. a refused node booting)."""
        nodes = list(nodes or self.nodes)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for node in nodes:
                if text in node.console():
                    raise AssertionError(f"node {node.name} showed {text!r} but must not; console:\n"
                                         + node.console()[-4000:])
            time.sleep(0.5)
