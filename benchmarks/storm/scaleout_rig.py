"""Three service hosts of a scale-out inside a storm Topology: on each, an etcd member, `wwfast serve` in
etcd mode and a stock nginx cache (`wwfast configure cache`, announced by `wwfast cluster announce-cache`).

    with Topology(tag, nodes=N, racks=R, servers=3, server_link=LinkShape(rate="100mbit")) as topo:
        rig = ScaleOutRig(topo, work, gen1_state, gen2_state).start()   # gen1 published through etcd
        rig.kill_cache(1) | rig.blackhole_cache(1) | rig.kill_server_and_etcd(0) | rig.publish_gen2()
        rig.stop()

Server 0 holds the published state (hard links of gen1's store); servers 1 and 2 start empty and pull it
through the etcd pointer, as servers of a real site do. Each cache's first origin is its own host's
server, the others are its backups. Every process runs inside its host's namespace; nothing else is
touched. Faults are recorded as (time, what) in `rig.events`.
"""
import contextlib
import ctypes
import hashlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time

from .cluster import ROOT

sys.path.insert(0, str(ROOT / "tests"))
from helpers.etcd_cluster import EtcdCluster  # noqa: E402
from helpers.nginx_cache import NginxCache  # noqa: E402
from wwfast import fsutil, layout  # noqa: E402
from wwfast.cluster import pointer  # noqa: E402
from wwfast.cluster.etcd import Etcd  # noqa: E402

SERVE_PORT, CACHE_PORT = 9873, 9874
PREFIX = "/wwstorm/"
HOSTS = ("svc0", "svc1", "svc2")
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@contextlib.contextmanager
def inside(ns):
    """This thread in namespace `ns` (as tests/helpers/hostnet.HostNet.inside)."""
    own = os.open(f"/proc/self/task/{threading.get_native_id()}/ns/net", os.O_RDONLY)
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        yield
    finally:
        os.close(fd)
        try:
            _libc.setns(own, CLONE_NEWNET)
        finally:
            os.close(own)


class _Hosts:
    """What EtcdCluster needs of a network: the service hosts of the topology."""

    def __init__(self, topo):
        self.topo, self.tag = topo, topo.tag

    def address(self, host):
        return self.topo.server_addresses(HOSTS.index(host))[0]

    def exec_args(self, host):
        return self.topo.exec_args(self.topo.server_ns(HOSTS.index(host)))


def link_tree(src_state, dst_state, manifest=True):
    """dst's store gets hard links of src's files (content-named: never rewritten); and its manifest."""
    store = pathlib.Path(layout.store_dir(str(dst_state)))
    store.mkdir(parents=True, exist_ok=True)
    for entry in os.scandir(layout.store_dir(str(src_state))):
        if not (store / entry.name).exists():
            os.link(entry.path, store / entry.name)
    if manifest:
        with open(layout.manifest(str(src_state)), "rb") as f:
            fsutil.atomic_write(layout.manifest(str(dst_state)), f.read())


def curl(ns, url, timeout=3):
    out = subprocess.run(["ip", "netns", "exec", ns, "curl", "-s", "-m", str(timeout), url], capture_output=True)
    return out.stdout if out.returncode == 0 else None


class ScaleOutRig:
    def __init__(self, topo, work, gen1_state, gen2_state=None, transfer_timeout=5, lease_ttl=3, slice_size="1m",
                 prestage_manifest=False, serve_workers=1):
        self.prestage_manifest, self.serve_workers = prestage_manifest, serve_workers
        self.topo, self.work = topo, pathlib.Path(work)
        self.gen1, self.gen2 = gen1_state, gen2_state
        self.transfer_timeout, self.lease_ttl, self.slice = transfer_timeout, lease_ttl, slice_size
        self.hosts = _Hosts(topo)
        self.etcd = None
        self.serves, self.caches, self.announcers = {}, {}, {}
        self.events = []
        self.blackholed = []

    # -- addresses ---------------------------------------------------------------------------------------
    def ns(self, k):
        return self.topo.server_ns(k)

    def address(self, k):
        return self.topo.server_addresses(k)[0]

    def server_url(self, k):
        return f"http://{self.address(k)}:{SERVE_PORT}"

    def cache_url(self, k):
        return f"http://{self.address(k)}:{CACHE_PORT}"

    def state(self, k):
        return self.work / HOSTS[k] / "state"

    def conf(self, k):
        return self.work / HOSTS[k] / "conf"

    # -- start -------------------------------------------------------------------------------------------
    def start(self, timeout=300):
        self.work.mkdir(parents=True, exist_ok=True)
        self.etcd = EtcdCluster(self.hosts, list(HOSTS), self.work).start(timeout=timeout)
        for k in range(3):
            self.state(k).mkdir(parents=True, exist_ok=True)
            self.write_conf(k)
        link_tree(self.gen1, self.state(0))
        with open(layout.manifest(str(self.state(0))), "rb") as f:
            self.generation1 = json.load(f)["generation"]
        for k in range(3):
            self.start_serve(k)
            self.caches[k] = NginxCache(self.work / f"cache{k}", [f"{self.address(j)}:{SERVE_PORT}"
                                                                  for j in (k, (k + 1) % 3, (k + 2) % 3)],
                                        host=self.address(k), port=CACHE_PORT, slice_size=self.slice,
                                        netns=self.ns(k)).start()
            self.announcers[k] = self.spawn(k, [sys.executable, "-m", "wwfast.cli", "--conf", str(self.conf(k)),
                                                "cluster", "announce-cache", "--url", self.cache_url(k),
                                                "--name", f"cache{k}"], f"announce{k}.log")
        self.published = self.publish(self.state(0))
        self.wait_ready(self.generation1, timeout)
        return self

    def write_conf(self, k):
        self.conf(k).mkdir(parents=True, exist_ok=True)
        endpoints = ", ".join(self.etcd.endpoints)
        (self.conf(k) / "wwfast.yaml").write_text(
            f"ipaddr: {self.address(k)}\nwarewulf:\n  port: {SERVE_PORT}\n  secure: false\n"
            f"cluster:\n  etcd: [{endpoints}]\n  etcd prefix: {PREFIX}\n  server name: {HOSTS[k]}\n"
            f"  server url: {self.server_url(k)}\n  lease ttl: {self.lease_ttl}\n"
            f"  transfer timeout: {self.transfer_timeout}\n")

    def spawn(self, k, args, log_name):
        log = open(self.work / log_name, "ab")
        try:
            return subprocess.Popen(self.topo.exec_args(self.ns(k)) + args, cwd=ROOT, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def start_serve(self, k):
        self.serves[k] = self.spawn(k, [sys.executable, "-m", "stages.serve", "--conf", str(self.conf(k)),
                                        "--state", str(self.state(k)), "--bind", self.address(k),
                                        "--http-port", str(SERVE_PORT), "--no-tftp",
                                        "--workers", str(self.serve_workers)], f"serve{k}.log")

    def publish(self, state):
        """The compress stage's last step in etcd mode: one transaction pointing the cluster at `state`."""
        with inside(self.ns(0)):
            return pointer.publish(Etcd(self.etcd.endpoints), PREFIX, str(state), [self.server_url(0)])

    def members(self):
        with inside(self.ns(0)):
            client = Etcd(self.etcd.endpoints)
            return {kind: sorted(client.get_prefix(f"{PREFIX}members/{kind}/")[0]) for kind in ("servers", "caches")}

    def wait_ready(self, generation, timeout):
        """Every server serves `generation`; three servers and three caches are members (a backstop
        deadline only: setup on a loaded machine takes what it takes)."""
        deadline = time.monotonic() + timeout
        want = f"ok generation={generation}".encode()      # then "\n", or " worker=N\n" with workers
        while time.monotonic() < deadline:
            for k, p in self.serves.items():
                if p.poll() is not None:
                    raise RuntimeError(f"serve on {HOSTS[k]} exited: {self.log(f'serve{k}.log')[-3000:]}")
            healthy = all((curl(self.ns(k), self.server_url(k) + "/healthz") or b"").split(b" worker=")[0].strip()
                          == want for k in range(3))
            if healthy:
                m = self.members()
                if len(m["servers"]) == 3 and len(m["caches"]) == 3:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"scale-out not ready in {timeout} s: {self.members()}")

    def log(self, name):
        try:
            return (self.work / name).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # -- faults ------------------------------------------------------------------------------------------
    def _event(self, what):
        self.events.append((time.time(), what))

    def kill_cache(self, k):
        """kill -9 of the cache's nginx, master and workers, as a crash; its announcer sees it go."""
        self._event(f"kill -9 cache{k}")
        self.caches[k].kill_all()

    def blackhole_cache(self, k):
        """100% loss for the cache's traffic on the wire (iptables DROP both ways on its port); the host
        itself still reaches it, so it stays announced: the worst case, nodes pay the timeout."""
        self._event(f"blackhole cache{k}")
        for rule in (["INPUT", "-i", "eth0", "-p", "tcp", "--dport", str(CACHE_PORT)],
                     ["OUTPUT", "-o", "eth0", "-p", "tcp", "--sport", str(CACHE_PORT)]):
            subprocess.run(["ip", "netns", "exec", self.ns(k), "iptables", "-I", *rule, "-j", "DROP"], check=True)
            self.blackholed.append((k, rule))

    def kill_server_and_etcd(self, k):
        self._event(f"kill -9 etcd member and wwfast server on {HOSTS[k]}")
        self.etcd.kill(HOSTS[k])
        p = self.serves[k]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(10)

    def publish_gen2(self):
        """A new generation mid-storm: its files are copied to every server beforehand (shared storage
        or a copy, as docs/deployment.md allows; with `prestage_manifest` the manifest too, where the
        follower looks for it: STATE/publish/incoming/<sha256>.json), server 0 installs its manifest, and
        one etcd transaction points the cluster at it. Returns the pointer."""
        with open(layout.manifest(str(self.gen2)), "rb") as f:
            data = f.read()
        for k in range(3):
            link_tree(self.gen2, self.state(k), manifest=False)
            if self.prestage_manifest and k:
                fsutil.atomic_write(str(self.state(k) / "publish" / "incoming" /
                                        f"{hashlib.sha256(data).hexdigest()}.json"), data)
        self._event("publish generation 2")
        link_tree(self.gen2, self.state(0), manifest=True)
        self.published2 = self.publish(self.state(0))
        return self.published2

    def switch_times(self, generation, needle="serving manifest generation {} "):
        """{server: time its log says it began serving `generation`} (log times are local, ms); with
        needle="pointer to generation {} seen": when the etcd pointer reached it."""
        out = {}
        needle = needle.format(generation)
        for k in range(3):
            for line in self.log(f"serve{k}.log").splitlines():
                if needle in line:
                    stamp, ms = line[:19], line[20:23]
                    out[HOSTS[k]] = time.mktime(time.strptime(stamp, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
                    break
        return out

    # -- figures -------------------------------------------------------------------------------------------
    def cache_cpu(self):
        """{cache: CPU seconds of its nginx master and workers so far} (the dead ones left out)."""
        from accounting import proc_cpu_seconds
        out = {}
        for k, cache in self.caches.items():
            if cache.proc is not None and cache.proc.poll() is None:
                out[f"cache{k}"] = sum(proc_cpu_seconds(pid, children=False) for pid in cache.pids())
        return out

    def origin_blob_bytes(self):
        """{server: blob bytes its /metrics counted so far} (a dead server: missing)."""
        out = {}
        for k in range(3):
            text = curl(self.ns(k), self.server_url(k) + "/metrics")
            if text is None:
                continue
            out[HOSTS[k]] = sum(int(line.rsplit(None, 1)[1]) for line in text.decode().splitlines()
                                if line.startswith("wwfast_http_sent_bytes_total{") and 'stage="blob"' in line)
        return out

    def stop(self):
        for k, rule in self.blackholed:
            subprocess.run(["ip", "netns", "exec", self.ns(k), "iptables", "-D", *rule, "-j", "DROP"],
                           capture_output=True)
        self.blackholed = []
        for p in list(self.announcers.values()) + list(self.serves.values()):
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in list(self.announcers.values()) + list(self.serves.values()):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        for cache in self.caches.values():
            cache.stop()
        if self.etcd is not None:
            self.etcd.stop()

    def remove(self):
        shutil.rmtree(self.work, ignore_errors=True)
