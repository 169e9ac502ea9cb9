"""A private L2 network for boots that QEMU's user-mode net cannot do (firmware PXE, secure mode).

Inside a network namespace the test creates: a bridge br0 (192.168.77.1/24), tap devices enslaved to it
for QEMU, and a DHCP server on br0: either dnsmasq with fixed options (`dhcp="builtin"`: iPXE clients get
the per-node HTTP URL, fixed leases from `hosts`), or none at first, and then the configuration
`wwfast configure dhcp` wrote, run by dnsmasq (`start_dnsmasq`) or ISC dhcpd (`start_dhcpd`), DHCP only.
`dhcp_client()` asks that server from a second namespace through a veth port, as a firmware would
(option 93, vendor and user class), with busybox udhcpc. Nothing leaves the namespaces, and
`PrivateNet.close()` deletes all of it (killing the DHCP server first).
"""
import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

BRIDGE = "br0"
SERVER_ADDRESS = "192.168.77.1"
PREFIX = 24
DHCP_RANGE = ("192.168.77.100", "192.168.77.200")
BUSYBOX = "/bin/busybox"
UDHCPC_SCRIPT = '#!/bin/sh\n[ "$1" = bound ] && env > "$WWFAST_DHCP_OUT"\nexit 0\n'
ACK_LINES = {"dnsmasq": re.compile(r"DHCPACK\(\S+\) (\S+) (\S+)"),
             "dhcpd": re.compile(r"DHCPACK on (\S+) to (\S+)")}


def _ip(*args, netns=None):
    cmd = ["ip"] + (["-n", netns] if netns else []) + list(args)
    subprocess.run(cmd, check=True, capture_output=True, text=True)


class PrivateNet:
    """netns + bridge + taps + a DHCP server. Use as a context manager; root only."""

    def __init__(self, work_dir, http_port=None, taps=("tap0",), hosts=(), name=None, dhcp="builtin"):
        """`hosts`: (mac, address) pairs for fixed leases and `http_port` (where serve listens in the netns)
        for the built-in dnsmasq; `dhcp=None`: no DHCP server until start_dnsmasq/start_dhcpd."""
        self.name = name or f"wwfe2e{os.getpid()}"
        self.client_ns = self.name + "c"
        self.work_dir = pathlib.Path(work_dir)
        self.http_port = http_port
        self.taps = list(taps)
        self.hosts = list(hosts)
        self.dhcp = dhcp
        self.dhcp_proc = None
        self.dhcp_kind = None
        self.dhcp_log = None
        self.clients = 0
        self.client_ns_made = False
        self.sniffer = None
        self.tftp_log = self.work_dir / "tftp-requests.jsonl"

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
        if self.dhcp == "builtin":
            self._start_builtin_dnsmasq()

    # -- DHCP servers -------------------------------------------------------------------------------
    def _start_builtin_dnsmasq(self):
        url = f"http://{SERVER_ADDRESS}:{self.http_port}/ipxe/${{mac:hexhyp}}?assetkey=${{asset}}"
        args = ["--conf-file=/dev/null", f"--interface={BRIDGE}", "--bind-interfaces",
                f"--dhcp-range={DHCP_RANGE[0]},{DHCP_RANGE[1]},255.255.255.0,1h",
                "--dhcp-userclass=set:ipxe,iPXE", f"--dhcp-boot=tag:ipxe,{url}", "--dhcp-boot=tag:!ipxe,undionly.kpxe"]
        args += [f"--dhcp-host={mac},{addr}" for mac, addr in self.hosts]
        self._start_dnsmasq_with(args)

    def start_dnsmasq(self, conf_file):
        """dnsmasq with a generated configuration file: DHCP only (no DNS; the file enables no TFTP)."""
        self._start_dnsmasq_with([f"--conf-file={conf_file}"])

    def _start_dnsmasq_with(self, args):
        work = self.work_dir
        self._start("dnsmasq", ["dnsmasq", "--no-daemon", "--port=0", "--log-dhcp", *args,
                                f"--dhcp-leasefile={work / 'dnsmasq.leases'}", f"--pid-file={work / 'dnsmasq.pid'}"])

    def start_dhcpd(self, conf_file):
        """ISC dhcpd in the foreground on br0 with a generated dhcpd.conf."""
        self.stop_dhcp()
        leases = self.work_dir / "dhcpd.leases"
        leases.write_text("")
        # A copy of the binary: Debian's AppArmor profile for /usr/sbin/dhcpd (where the kernel enforces one)
        # confines it to /etc/dhcp and /var/lib/dhcp, and the test's files live elsewhere.
        binary = self.work_dir / "dhcpd"
        if not binary.exists():
            shutil.copy2("/usr/sbin/dhcpd", binary)
        self._start("dhcpd", [str(binary), "-4", "-f", "-d", "-cf", str(conf_file), "-lf", str(leases),
                              "-pf", str(self.work_dir / "dhcpd.pid"), BRIDGE])

    def _start(self, kind, cmd):
        self.stop_dhcp()
        self.dhcp_kind = kind
        self.dhcp_log = self.work_dir / f"{kind}.log"
        log = open(self.dhcp_log, "wb")
        try:
            self.dhcp_proc = subprocess.Popen(self.exec_args() + cmd, stdin=subprocess.DEVNULL, stdout=log,
                                              stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        # Ready when it bound the DHCP port; it exits at once on a bad option or configuration.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.dhcp_proc.poll() is not None:
                raise RuntimeError(f"{kind} exited ({self.dhcp_proc.returncode}): {self.dhcp_output()}")
            out = subprocess.run(self.exec_args() + ["ss", "-lunp"], capture_output=True, text=True)
            if ":67 " in out.stdout:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{kind} did not bind port 67: {self.dhcp_output()}")

    def stop_dhcp(self):
        proc, self.dhcp_proc = self.dhcp_proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
                proc.wait(5)
                return
            except ProcessLookupError:
                return
            except subprocess.TimeoutExpired:
                continue

    def dhcp_output(self):
        try:
            return self.dhcp_log.read_text(errors="replace") if self.dhcp_log else ""
        except FileNotFoundError:
            return ""

    dnsmasq_output = dhcp_output

    def acks(self):
        """[(address, mac)] of every DHCPACK the running server logged, in order."""
        pattern = ACK_LINES[self.dhcp_kind]
        return [(m.group(1), m.group(2).lower()) for m in pattern.finditer(self.dhcp_output())]

    # -- what firmware asked the TFTP server -------------------------------------------------------
    def record_tftp_requests(self):
        """From now on, record every TFTP read request on br0 (helpers/tftp_sniffer.py)."""
        if self.sniffer is not None:
            return
        script = pathlib.Path(__file__).with_name("tftp_sniffer.py")
        self.sniffer = subprocess.Popen(self.exec_args() + [sys.executable, str(script), BRIDGE, str(self.tftp_log)],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
                                        start_new_session=True)
        if self.sniffer.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the TFTP request recorder did not start (exit {self.sniffer.wait()})")

    def tftp_requests(self):
        """[{"client", "mac", "file", "mode", "options"}] recorded so far."""
        try:
            return [json.loads(line) for line in self.tftp_log.read_text().splitlines() if line.strip()]
        except FileNotFoundError:
            return []

    # -- a DHCP client in its own namespace ----------------------------------------------------------
    def dhcp_client(self, mac, arch=None, user_class=None, vendor=None, timeout=60):
        """Ask the DHCP server for a lease as MAC, sending option 93 = `arch` (int), option 77 = `user_class`
        and option 60 = `vendor` (default PXEClient:Arch:<arch> when arch is given). Returns what udhcpc
        was given ({"ip", "boot_file", "siaddr", "hostname", ...}); {} when no lease came."""
        if not self.client_ns_made:
            _ip("netns", "add", self.client_ns)
            self.client_ns_made = True
            _ip("link", "add", "vb0", "type", "veth", "peer", "name", "vc0", "netns", self.client_ns, netns=self.name)
            _ip("link", "set", "vb0", "master", BRIDGE, "up", netns=self.name)
        self.clients += 1
        _ip("link", "set", "vc0", "down", netns=self.client_ns)
        _ip("link", "set", "vc0", "address", mac, netns=self.client_ns)
        _ip("link", "set", "vc0", "up", netns=self.client_ns)
        script = self.work_dir / "udhcpc.script"
        script.write_text(UDHCPC_SCRIPT)
        script.chmod(0o755)
        out = self.work_dir / f"dhcp-client-{self.clients}.env"
        cmd = ["ip", "netns", "exec", self.client_ns, "env", f"WWFAST_DHCP_OUT={out}", BUSYBOX, "udhcpc",
               "-i", "vc0", "-f", "-q", "-n", "-R", "-t", "5", "-T", "2", "-s", str(script)]
        if arch is not None:
            cmd += ["-x", f"0x5d:{arch:04x}", "-V", vendor or f"PXEClient:Arch:{arch:05d}:UNDI:003016"]
        elif vendor:
            cmd += ["-V", vendor]
        if user_class:
            cmd += ["-x", f"0x4d:{user_class.encode().hex()}"]
        subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if not out.exists():
            return {}
        values = {}
        for line in out.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value
        return values

    def exec_args(self):
        """Prefix for commands that must run inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def close(self):
        self.stop_dhcp()
        if self.sniffer is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.sniffer.pid, signal.SIGKILL)
            self.sniffer.wait()
            self.sniffer.stdout.close()
        # Deleting a namespace removes its bridge, taps and veth ends with it.
        if self.client_ns_made:
            subprocess.run(["ip", "netns", "delete", self.client_ns], capture_output=True)
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)
