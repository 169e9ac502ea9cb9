"""Shared state on a real 3-member etcd cluster (Debian's etcd-server), each member on its own host in
network namespaces this test creates: cache membership under leases, the published-generation pointer
followed by every server, boot records in batched transactions, and no error with one member killed."""
import hashlib
import http.server
import json
import os
import re
import threading
import time

import pytest

from helpers.etcd_cluster import EtcdCluster
from helpers.hostnet import HostNet
from wwfast.cluster import boot_mirror, pointer
from wwfast.cluster.etcd import Etcd
from wwfast.cluster.membership import Announcer, MemberView
from wwfast.cluster.placement import Member
from wwfast.publish.manifest import manifest_path, store_dir

pytestmark = pytest.mark.slow
PREFIX = "/wwtest/"
HOSTS = ["svc1", "svc2", "svc3", "adm"]


def wait_for(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    work = tmp_path_factory.mktemp("etcd")
    with HostNet(f"wwe{os.getpid()}", HOSTS) as net, EtcdCluster(net, HOSTS[:3], work) as etcd:
        with net.inside("adm"):
            yield net, etcd, work


def _client(etcd, first=0):
    endpoints = etcd.endpoints[first:] + etcd.endpoints[:first]
    return Etcd(endpoints, timeout=2.0)


def _publish_state(root, generation, blobs):
    """A publishing server's state: store files and a manifest naming them."""
    store = root / "store"
    store.mkdir(parents=True, exist_ok=True)
    artifacts = {}
    for stage, data in blobs.items():
        name = hashlib.sha256(data + stage.encode()).hexdigest() + (".kernel" if stage == "kernel" else ".cpio.zst")
        (store / name).write_bytes(data)
        enc = "raw" if stage == "kernel" else "zst"
        artifacts[stage] = {enc: {"file": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}}
    manifest = {"format": 1, "generation": generation, "settings": {"secure": False},
                "nodes": {"n1": {"macs": ["52:54:00:00:00:01"], "addresses": [], "asset_key": "",
                                 "artifacts": artifacts}}}
    (root / "publish").mkdir(parents=True, exist_ok=True)
    (root / "publish" / "manifest.json").write_bytes(json.dumps(manifest, sort_keys=True).encode())
    return manifest


class BlobOrigin:
    """Stand-in for a publishing wwfast server's /blob/sha256/<digest> (its store and its manifest)."""

    def __init__(self, state, host):
        self.state = state
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                m = re.fullmatch(r"/blob/sha256/([0-9a-f]{64})", self.path)
                body = origin.find(m.group(1)) if m else None
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

        self.server = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def find(self, digest):
        for path in [manifest_path(self.state)] + [os.path.join(store_dir(self.state), n)
                                                   for n in os.listdir(store_dir(self.state))]:
            data = open(path, "rb").read()
            if hashlib.sha256(data).hexdigest() == digest:
                return data
        return None

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_cache_membership_under_leases(cluster):
    net, etcd, _ = cluster
    client = _client(etcd)
    healthy = {"c1": True, "c2": True, "c3": True}
    announcers = {name: Announcer(_client(etcd, i), PREFIX, "caches",
                                  Member(name, f"http://198.18.0.{i + 1}:9874"), ttl=3,
                                  healthy=lambda name=name: healthy[name]).start()
                  for i, name in enumerate(healthy)}
    view = MemberView(client, PREFIX, "caches").start()
    try:
        wait_for(lambda: [m.name for m in view.current()] == ["c1", "c2", "c3"], "three caches announced")
        healthy["c2"] = False                              # its nginx is gone: it leaves at once
        wait_for(lambda: [m.name for m in view.current()] == ["c1", "c3"], "c2 left")
        # the announcer records its leave after the delete the view already saw: wait for the record
        wait_for(lambda: [e[1] for e in announcers["c2"].events] == ["joined", "left"], "c2 recorded leaving")
        announcers["c3"].stop(leave=False)                 # the host dies: nobody refreshes its lease
        stopped = time.time()
        wait_for(lambda: [m.name for m in view.current()] == ["c1"], "c3's lease expired")
        assert "left" not in [e[1] for e in announcers["c3"].events]    # the lease expiry removed it
        deleted = [t for t, kind, name in view.history if kind == "DELETE" and name == "c3"]
        assert len(deleted) == 1 and deleted[0] >= stopped
        healthy["c2"] = True                               # back: it joins again under a new lease
        wait_for(lambda: [m.name for m in view.current()] == ["c1", "c2"], "c2 rejoined")
    finally:
        view.stop()
        for a in announcers.values():
            a.stop()


def test_publish_pointer_followed_by_every_server_and_files_pulled(cluster, tmp_path):
    net, etcd, _ = cluster
    publisher = tmp_path / "publisher"
    manifest = _publish_state(publisher, "g1", {"kernel": os.urandom(70000), "image": os.urandom(300000)})
    origin = BlobOrigin(publisher, net.address("adm"))
    prefix = PREFIX + "ptr1/"
    followers = []
    try:
        staged = tmp_path / "s1"                          # this one already holds the store (a shared copy)
        (staged / "store").mkdir(parents=True)
        for name in os.listdir(publisher / "store"):
            (staged / "store" / name).write_bytes((publisher / "store" / name).read_bytes())
        for i, state in enumerate([staged, tmp_path / "s2", tmp_path / "s3"]):
            followers.append(pointer.PointerFollower(_client(etcd, i), prefix, str(state), name=f"s{i + 1}").start())
        published = pointer.publish(_client(etcd), prefix, str(publisher), [origin.url])
        assert published["generation"] == "g1"
        wait_for(lambda: all(f.switches for f in followers), "every server switched to g1")
        want = (publisher / "publish" / "manifest.json").read_bytes()
        for f in followers:
            assert open(manifest_path(f.state_dir), "rb").read() == want and f.errors == []
            for entry in manifest["nodes"]["n1"]["artifacts"].values():
                e = next(iter(entry.values()))
                assert hashlib.sha256(open(os.path.join(store_dir(f.state_dir), e["file"]), "rb").read()
                                      ).hexdigest() == e["sha256"]
        assert [f.switches[0][4] for f in followers] == [0, 2, 2]     # store files pulled
        assert [f.switches[0][5] for f in followers] == ["etcd"] * 3   # the manifest came with the pointer
        # publishing the same manifest again is no new generation; a stale publisher loses the race
        assert pointer.publish(_client(etcd), prefix, str(publisher), [origin.url]) == published
        assert all(len(f.switches) == 1 for f in followers)
    finally:
        for f in followers:
            f.stop()
        origin.close()


def test_the_manifest_travels_in_etcd_with_its_pointer_in_parts_or_over_http(cluster, tmp_path):
    """A small manifest is in the pointer's own transaction; one over etcd's request limit goes in parts
    first (real etcd: 1.5 MiB per request by default); past the etcd cap it is pulled over HTTP. Parts no
    pointer names any more are removed."""
    import base64
    net, etcd, _ = cluster
    prefix = PREFIX + "parts/"
    publisher = tmp_path / "publisher"
    origin = BlobOrigin(publisher, net.address("adm"))
    client = _client(etcd)
    follower = None

    def data_shas():
        return sorted({k.split("/")[-2] for k in client.keys(pointer.data_key(prefix))})

    def installed():
        return open(manifest_path(str(tmp_path / "f")), "rb").read()
    try:
        _publish_state(publisher, "g1", {"kernel": os.urandom(5000)})
        follower = pointer.PointerFollower(_client(etcd, 1), prefix, str(tmp_path / "f"), name="f").start()
        p1 = pointer.publish(client, prefix, str(publisher), [origin.url])
        assert p1["parts"] == 1 and p1["encoding"] == "zstd"
        _, pointer_revision = client.get(pointer.pointer_key(prefix))
        _, part_revision = client.get(pointer.data_key(prefix, p1["sha256"], 0))
        assert part_revision == pointer_revision            # one transaction: the pointer and the manifest
        wait_for(lambda: len(follower.switches) == 1, "g1 installed")
        assert follower.switches[0][4:] == (1, "etcd")       # the kernel pulled; the manifest from etcd
        assert installed() == (publisher / "publish" / "manifest.json").read_bytes()

        # ~2.4 MB that does not compress: three parts of 1 MiB, each in its own transaction before the pointer
        manifest = _publish_state(publisher, "g2", {"kernel": os.urandom(5000)})
        manifest["filler"] = base64.b64encode(os.urandom(2_400_000)).decode()
        (publisher / "publish" / "manifest.json").write_bytes(json.dumps(manifest).encode())
        p2 = pointer.publish(client, prefix, str(publisher), [origin.url])
        assert p2["parts"] == 3 and p2["packed"] > 2 * pointer.PART_BYTES
        wait_for(lambda: len(follower.switches) == 2, "g2 installed")
        assert follower.switches[1][5] == "etcd" and follower.errors == []
        assert installed() == (publisher / "publish" / "manifest.json").read_bytes()
        assert data_shas() == sorted([p1["sha256"], p2["sha256"]])

        # too large for etcd (a cap of 100 bytes here): the pointer alone, the manifest pulled over HTTP
        _publish_state(publisher, "g3", {"kernel": os.urandom(5000)})
        p3 = pointer.publish(client, prefix, str(publisher), [origin.url], in_etcd_max=100)
        assert "parts" not in p3
        wait_for(lambda: len(follower.switches) == 3, "g3 installed")
        assert follower.switches[2][4:] == (1, "http") and follower.errors == []
        assert installed() == (publisher / "publish" / "manifest.json").read_bytes()
        assert data_shas() == [p2["sha256"]]                 # g1's part removed with g3's pointer
    finally:
        if follower is not None:
            follower.stop()
        origin.close()


def test_boot_records_batched_and_one_member_killed_is_no_error(cluster, tmp_path):
    net, etcd, _ = cluster
    prefix = PREFIX + "kill/"
    mirrors = [boot_mirror.BootMirror(_client(etcd), prefix, f"s{i}", interval=0.2) for i in range(3)]
    for i in range(300):
        mirrors[i % 3].record(f"n{i:04d}", {"stage": "ipxe", "generation": "g1"})
    for m in mirrors:
        assert m.flush()
    assert [m.transactions for m in mirrors] == [1, 1, 1]
    records = boot_mirror.read_all(_client(etcd), prefix)
    assert len(records) == 300 and records["n0004"] == {"stage": "ipxe", "generation": "g1", "server": "s1"}

    publisher = tmp_path / "publisher"
    _publish_state(publisher, "g1", {"kernel": b"k1" * 1000})
    origin = BlobOrigin(publisher, net.address("adm"))
    followers = [pointer.PointerFollower(_client(etcd), prefix, str(tmp_path / f"f{i}"), name=f"f{i}").start()
                 for i in range(3)]
    view = MemberView(_client(etcd), prefix, "caches").start()
    announcer = None
    try:
        pointer.publish(_client(etcd), prefix, str(publisher), [origin.url])
        wait_for(lambda: all(len(f.switches) == 1 for f in followers), "g1 everywhere")
        etcd.kill("svc1")            # every client above talks to svc1 first; so do the watches
        _publish_state(publisher, "g2", {"kernel": b"k2" * 1000})
        assert pointer.publish(_client(etcd), prefix, str(publisher), [origin.url])["generation"] == "g2"
        wait_for(lambda: all(len(f.switches) == 2 for f in followers), "g2 everywhere with svc1 dead")
        assert [f.switches[1][1] for f in followers] == ["g2"] * 3 and all(not f.errors for f in followers)
        for i in range(300):
            mirrors[i % 3].record(f"n{i:04d}", {"stage": "runtime", "generation": "g2"})
        for m in mirrors:
            assert m.flush()
        assert [m.failures for m in mirrors] == [0, 0, 0]
        records = boot_mirror.read_all(_client(etcd), prefix)
        assert {r["stage"] for r in records.values()} == {"runtime"}
        announcer = Announcer(_client(etcd), prefix, "caches", Member("c9", "http://198.18.0.2:9874"), ttl=3).start()
        wait_for(lambda: [m.name for m in view.current()] == ["c9"], "a cache joins with svc1 dead")
        assert "etcd unavailable" not in [e[1] for e in announcer.events]
    finally:
        if announcer is not None:
            announcer.stop()
        view.stop()
        for f in followers:
            f.stop()
        origin.close()


def test_announce_cache_command_follows_its_nginx(cluster, tmp_path):
    """`wwfast cluster announce-cache` on a cache host: in while its nginx answers, out when nginx is
    killed -9 (revoked at once, not left to expire), and out on SIGTERM."""
    import signal
    import subprocess
    import sys

    from helpers.nginx_cache import NginxCache, ROOT
    net, etcd, _ = cluster
    prefix = PREFIX + "agent/"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "wwfast.yaml").write_text("cluster:\n  etcd: [" + ", ".join(etcd.endpoints) + "]\n"
                                      f"  etcd prefix: {prefix}\n  lease ttl: 12\n")
    view = MemberView(_client(etcd), prefix, "caches").start()
    cache = NginxCache(tmp_path / "nginx", ["127.0.0.1:1"], host=net.address("svc2"), port=9874, netns=net.ns("svc2"))
    agent = None
    try:
        cache.start()
        agent = subprocess.Popen(net.exec_args("svc2") + [
            sys.executable, "-m", "wwfast.cli", "--conf", str(conf), "cluster", "announce-cache",
            "--url", cache.url, "--group", "rack2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for(lambda: [(m.name, m.group) for m in view.current()] == [(f"{net.address('svc2')}:9874", "rack2")],
                 "the cache announced itself")
        cache.kill_all()
        wait_for(lambda: view.current() == [], "the dead cache left")
        cache.start()
        wait_for(lambda: len(view.current()) == 1, "the cache is back")
        agent.send_signal(signal.SIGTERM)
        out, _ = agent.communicate(timeout=30)
        assert agent.returncode == 0, out
        # the agent revoked its lease when nginx died (a 12 s lease did not just run out), and on SIGTERM
        assert out.count(b"caches/" + f"{net.address('svc2')}:9874: left".encode()) == 2, out
        wait_for(lambda: view.current() == [], "the cache left on SIGTERM")
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        cache.stop()
        view.stop()


def test_a_leader_election_is_waited_out_not_reported(tmp_path):
    """Members without a leader answer 503 for a while: the client retries its rounds over every endpoint
    (recorded by the stand-in gateway below) and returns the answer; a cluster that stays down is an error."""
    from wwfast.cluster.etcd import EtcdUnavailable
    answers = {"busy": 3, "seen": []}

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            answers["seen"].append(self.path)
            if answers["busy"] > 0:
                answers["busy"] -= 1
                code, body = 503, b'{"error":"etcdserver: no leader","code":14}'
            else:
                code, body = 200, b'{"header":{"revision":"7"},"count":"0"}'
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert Etcd([url], timeout=2.0).get("/k") == (None, 0)
        assert answers["seen"] == ["/v3/kv/range"] * 4          # three "no leader" answers, then the value
        answers["busy"] = 1000
        with pytest.raises(EtcdUnavailable):
            Etcd([url], timeout=2.0, retry_for=1.0).get("/k")
    finally:
        server.shutdown()
