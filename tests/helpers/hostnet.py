"""Hosts on one private switch, each in its own network namespace, for multi-server tests.

    with HostNet(f"wwc{os.getpid()}", ["svc1", "svc2", "svc3", "adm"]) as net:
        net.address("svc2")                    # 198.18.0.2
        net.exec_args("svc2") + ["etcd", ...]  # run a command on that host
        with net.inside("adm"): ...            # this thread (and threads it starts) on host adm

A namespace `<tag>sw` holds the bridge; host i (`<tag>h<i>`) has eth0 = 198.18.0.<i+1>/24 on it. Nothing
routes out. `close()` deletes every namespace, which takes the links along.
"""
import contextlib
import ctypes
import os
import subprocess
import threading

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def _ip(*args, netns=None, check=True):
    cmd = ["ip"] + (["-n", netns] if netns else []) + [str(a) for a in args]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out


def _setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


class HostNet:
    def __init__(self, tag, hosts):
        self.tag = tag
        self.hosts = list(hosts)
        self.switch = f"{tag}sw"
        self.created = []

    def ns(self, host):
        return f"{self.tag}h{self.hosts.index(host)}"

    def address(self, host):
        return f"198.18.0.{self.hosts.index(host) + 1}"

    def port_name(self, host):
        return f"p{self.hosts.index(host)}"

    def exec_args(self, host):
        return ["ip", "netns", "exec", self.ns(host)]

    def create(self):
        _ip("netns", "add", self.switch)
        self.created.append(self.switch)
        _ip("link", "add", "br0", "type", "bridge", netns=self.switch)
        _ip("link", "set", "br0", "up", netns=self.switch)
        for host in self.hosts:
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self.created.append(ns)
            _ip("link", "set", "lo", "up", netns=ns)
            _ip("link", "add", "eth0", "type", "veth", "peer", "name", self.port_name(host), "netns", self.switch,
                netns=ns)
            _ip("addr", "add", f"{self.address(host)}/24", "dev", "eth0", netns=ns)
            _ip("link", "set", "eth0", "up", netns=ns)
            _ip("link", "set", self.port_name(host), "master", "br0", "up", netns=self.switch)
        return self

    def blackhole(self, host):
        """100% loss on the host's link, both ways (tc netem on its switch port and its eth0)."""
        _ip("link", "show", "eth0", netns=self.ns(host))
        for ns, dev in ((self.ns(host), "eth0"), (self.switch, self.port_name(host))):
            subprocess.run(["tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "netem", "loss", "100%"],
                           check=True, capture_output=True)

    @contextlib.contextmanager
    def inside(self, host):
        """Run the calling thread in the host's namespace (threads it starts meanwhile stay there)."""
        own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
        try:
            _setns(f"/run/netns/{self.ns(host)}")
            yield
        finally:
            try:
                if _libc.setns(own, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), "setns back")
            finally:
                os.close(own)

    def close(self):
        for ns in reversed(self.created):
            _ip("netns", "delete", ns, check=False)
        self.created = []

    def __enter__(self):
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()
