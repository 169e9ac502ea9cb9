"""A private L2 network for boots that QEMU's user-mode net cannot do (secure mode: source ports < 1024).

Inside a network namespace the test creates: a bridge br0 (192.168.77.1/24), a tap device enslaved to it
for QEMU, and dnsmasq on br0 as the DHCP server (no DNS: port=0). iPXE clients (user class "iPXE") get
the per-node HTTP URL; anything else would get the NBP name. Nothing leaves the namespace, and
`PrivateNet.close()` deletes all of it (killing dnsmasq first).
"""
import os
import pathlib
import signal
import subprocess
import time

BRIDGE = "br0"
SERVER_ADDRESS = "192.168.77.1"
PREFIX = 24
DHCP_RANGE = ("192.168.77.100", "192.168.77.200")


def _ip(*args, netns=None):
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class PrivateNet:
    """netns + bridge + taps + dnsmasq. Use as a context manager; root only."""

    def __init__(self, work_dir, http_port, taps=("tap0",), hosts=(), name=None):
        """`hosts`: (mac, address) pairs for fixed leases; `http_port`: where serve listens in the netns."""
        self.name = name or f"wwfe2e{os.getpid()}"
        self.work_dir = pathlib.Path(work_dir)
        self.http_port = http_port
        self.taps = list(taps)
        self.hosts = list(hosts)
        self.dnsmasq = None
        self.dnsmasq_log = self.work_dir / "dnsmasq.log"

    def __enter__(self):
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def create(self):
        self.work_dir.mkdir(parents=True, exist_ok=True)
        _ip("netns", "add", self.name)
        _ip("link", "set", "lo", "up", netns=self.name)
        _ip("link", "add", BRIDGE, "type", "bridge", netns=self.name)
        _ip("addr", "add", f"{SERVER_ADDRESS}/{PREFIX}", "dev", BRIDGE, netns=self.name)
        _ip("link", "set", BRIDGE, "up", netns=self.name)
        for tap in self.taps:
            _ip("tuntap", "add", "dev", tap, "mode", "tap", netns=self.name)
            _ip("link", "set", tap, "master", BRIDGE, "up", netns=self.name)
        self._start_dnsmasq()

    def _start_dnsmasq(self):
        url = f"http://{SERVER_ADDRESS}:{self.http_port}/ipxe/${{mac:hexhyp}}?assetkey=${{asset}}"
        args = ["ip", "netns", "exec", self.name, "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
                f"--interface={BRIDGE}", "--bind-interfaces", "--port=0", "--log-dhcp",
                f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,1h",
                f"--dhcp-leasefile={self.work_dir / 'dnsmasq.leases'}",
                f"--pid-file={self.work_dir / 'dnsmasq.pid'}",
                "--dhcp-userclass=set:ipxe,iPXE",
                f"--dhcp-boot=tag:ipxe,{url}",
                "--dhcp-boot=tag:!ipxe,undionly.kpxe"]
        args += [f"--dhcp-host={mac},{addr}" for mac, addr in self.hosts]
        log = open(self.dnsmasq_log, "wb")
        try:
            self.dnsmasq = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        finally:
            log.close()
        # Ready when it bound the DHCP port; it exits at once on a bad option.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.dnsmasq.poll() is not None:
                raise RuntimeError(f"dnsmasq exited: {self.dnsmasq_log.read_text()}")
            out = subprocess.run(["ip", "netns", "exec", self.name, "ss", "-lunp"], capture_output=True, text=True)
            if ":67 " in out.stdout:
                return
            time.sleep(0.1)
        raise RuntimeError(f"dnsmasq did not bind port 67: {self.dnsmasq_log.read_text()}")

    def exec_args(self):
        """Prefix for commands that must run inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def close(self):
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            try:
                os.killpg(self.dnsmasq.pid, signal.SIGTERM)
                self.dnsmasq.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.dnsmasq.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        # Deleting the namespace removes its bridge and taps with it.
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)

    def dnsmasq_output(self):
        try:
            return self.dnsmasq_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""
