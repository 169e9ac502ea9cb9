"""serve in a scale-out: /blob/sha256/<digest> for caches, the cache-tier header in node scripts, and (with
etcd: 3 real members, 3 `wwfast serve` processes, each on its own host in namespaces this test creates)
the published-generation pointer followed with the files pulled, membership, and boot records that make
/status on any server show the whole cluster, with one etcd member and one server killed."""
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from helpers.etcd_cluster import EtcdCluster
from helpers.hostnet import HostNet
from helpers.nginx_cache import NginxCache
from serve_helpers import ROOT, free_port, make_node, publish, running_server, store_bytes
from wwfast.cluster import boot_mirror, pointer
from wwfast.cluster.etcd import Etcd
from wwfast.cluster.membership import Announcer
from wwfast.cluster.placement import Member
from wwfast.server import reuseport

MAC1, MAC2 = "52:54:00:00:00:01", "52:54:00:00:00:02"
_client_ports = iter(range(30000, 60000))      # in the admin host's own namespace: never used twice


def curl(url, *args, netns=None):
    """(status, headers dict (lower-case names), body bytes) of a GET with curl."""
    cmd = (["ip", "netns", "exec", netns] if netns else []) + ["curl", "-s", "-D", "-", "-m", "20", *args, url]
    out = subprocess.run(cmd, capture_output=True, timeout=60)
    head, _, body = out.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0]:
        return 0, {}, b""
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


def header_sets(script):
    return dict(re.findall(rb"^set (wwfast-[a-z0-9-]+) (\S+)$", script, re.M))


def one_server_state(state, tag=b""):
    image = os.urandom(3 << 20)                 # 3 slices of 1 MiB in the cache
    nodes = {"n1": make_node(state, "n1", MAC1, image, tag=tag), "n2": make_node(state, "n2", MAC2, image, tag=tag)}
    return publish(state, nodes, "g1" + tag.decode())


def test_blobs_and_script_header_through_a_real_nginx_cache(tmp_path):
    state = str(tmp_path / "state")
    manifest = one_server_state(state)
    port = free_port()
    cache_port = next(p for p in iter(free_port, None) if p != port)     # a just-freed port can come back
    n1 = manifest["nodes"]["n1"]["artifacts"]
    settings = (f"ipaddr: 127.0.0.1\nwarewulf:\n  secure: false\n  port: {port}\n"
                f"cluster:\n  server url: http://127.0.0.1:{port}\n  caches: [http://127.0.0.1:{cache_port}]\n")
    with running_server(state, port, settings=settings):
        base = f"http://127.0.0.1:{port}"
        image = n1["image"]["zst"]
        status, h, body = curl(f"{base}/blob/sha256/{image['sha256']}")
        assert status == 200 and hashlib.sha256(body).hexdigest() == image["sha256"]
        assert h["cache-control"] == "public, max-age=31536000, immutable" and h["etag"] == f'"{image["sha256"]}"'
        status, h, body = curl(f"{base}/blob/sha256/{image['sha256']}", "-r", "10-19")
        assert status == 206 and body == store_bytes(state, image)[10:20] and "immutable" in h["cache-control"]
        status, h, _ = curl(f"{base}/blob/sha256/{image['sha256']}", "-H", f'If-None-Match: "{image["sha256"]}"')
        assert status == 304 and h["etag"] == f'"{image["sha256"]}"'
        # what carries secrets or is per node never passes as a blob
        for stage, enc in (("runtime", "zst"), ("runtime", "gz"), ("ipxe", "raw")):
            assert curl(f"{base}/blob/sha256/{n1[stage][enc]['sha256']}")[0] == 404, stage
        assert curl(f"{base}/blob/sha256/{'0' * 64}")[0] == 404
        assert curl(f"{base}/blob/sha256/{image['sha256'][:-1]}")[0] == 404
        # the manifest itself goes to servers following a publish (etcd) only
        raw = open(os.path.join(state, "publish", "manifest.json"), "rb").read()
        assert curl(f"{base}/blob/sha256/{hashlib.sha256(raw).hexdigest()}")[0] == 404

        # the node's script: the header after #!ipxe names its sources and its files' content addresses
        status, h, script = curl(f"{base}/ipxe/{MAC1}")
        assert status == 200 and h["cache-control"] == "no-store" and script.startswith(b"#!ipxe\nset wwfast-blob1 ")
        sets = header_sets(script)
        assert sets[b"wwfast-blob1"] == f"http://127.0.0.1:{cache_port}/blob/sha256".encode()
        assert sets[b"wwfast-blob2"] == f"{base}/blob/sha256".encode()       # fewer caches than 3: the server
        assert sets[b"wwfast-server1"] == base.encode()
        for stage, enc in (("kernel", "raw"), ("image", "zst"), ("system", "zst")):
            assert sets[f"wwfast-{stage}".encode()] == n1[stage][enc]["sha256"].encode()
        assert sets[b"wwfast-generation"] == b"g1"
        assert script.endswith(store_bytes(state, n1["ipxe"]["raw"]).split(b"\n", 1)[1])

        with NginxCache(tmp_path / "cache", [f"127.0.0.1:{port}"], port=cache_port) as cache:
            for _ in range(2):
                for stage, enc in (("kernel", "raw"), ("image", "zst"), ("system", "zst")):
                    status, h, body = curl(f"{cache.url}/blob/sha256/{n1[stage][enc]['sha256']}")
                    assert status == 200 and hashlib.sha256(body).hexdigest() == n1[stage][enc]["sha256"]
            assert curl(f"{cache.url}/runtime/{MAC1}")[0] == 404
        log = cache.access_log()
    image_rows = [r for r in log if r[0] == f"/blob/sha256/{image['sha256']}"]
    assert [r[3] for r in image_rows] == ["MISS", "HIT"]
    # the server saw the script request in its status (the blobs went to the cache, not counted per node)
    assert json.load(open(os.path.join(state, "serve", "status.json")))["nodes"]["n1"]["stage"] == "ipxe"


# -- etcd: three servers --------------------------------------------------------------------------------------
HOSTS = ["svc1", "svc2", "svc3", "adm"]
PREFIX = "/wwscale/"


def wait_for(condition, what, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = condition()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


class Server:
    """`python -m stages.serve` on one host of the HostNet, in etcd mode."""

    def __init__(self, net, host, state, etcd, workers=1):
        self.net, self.host, self.state = net, host, state
        self.url = f"http://{net.address(host)}:9873"
        conf = os.path.join(state, "conf")
        os.makedirs(conf, exist_ok=True)
        with open(os.path.join(conf, "wwfast.yaml"), "w") as f:
            f.write(f"ipaddr: {net.address(host)}\nwarewulf:\n  secure: false\n  port: 9873\n"
                    f"cluster:\n  etcd: [{', '.join(etcd.endpoints)}]\n  etcd prefix: {PREFIX}\n"
                    f"  server name: {host}\n  server url: {self.url}\n  lease ttl: 3\n")
        self.log = open(os.path.join(state, "serve.log"), "ab")
        self.proc = subprocess.Popen(net.exec_args(host) + [
            sys.executable, "-m", "stages.serve", "--conf", conf, "--state", state, "--bind", net.address(host),
            "--http-port", "9873", "--no-tftp", "--workers", str(workers)], cwd=ROOT, stdout=subprocess.DEVNULL,
            stderr=self.log, start_new_session=True)

    def get(self, path, worker=None):
        """GET from the admin host; `worker`: from that worker of a serve --workers 2 (the supervisor's steering
        program picks the worker by the client's port, wwfast.server.reuseport)."""
        extra = [] if worker is None else ["--local-port", str(next(p for p in _client_ports
                                                                     if reuseport.slot_of(p, 2) == worker))]
        return curl(self.url + path, *extra, netns=self.net.ns("adm"))

    def kill(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@pytest.mark.slow
def test_three_servers_follow_the_pointer_share_members_and_boot_records(tmp_path):
    with HostNet(f"wwso{os.getpid()}", HOSTS) as net, EtcdCluster(net, HOSTS[:3], tmp_path) as etcd:
        origin_state = str(tmp_path / "svc1")
        manifest = one_server_state(origin_state)
        servers = [Server(net, h, str(tmp_path / h) if h != "svc1" else origin_state, etcd) for h in HOSTS[:3]]
        try:
            with net.inside("adm"):
                client = Etcd(etcd.endpoints)
                published = pointer.publish(client, PREFIX, origin_state, [servers[0].url])
                # svc2 and svc3 start empty: each pulls the manifest and the store files from svc1
                for s in servers:
                    wait_for(lambda s=s: s.get("/healthz")[2] == b"ok generation=g1\n", f"{s.host} serves g1")
                # files other than kernels, images and system overlays go to servers only, never cached
                runtime = manifest["nodes"]["n1"]["artifacts"]["runtime"]["zst"]["sha256"]
                status, h, body = curl(f"{servers[0].url}/blob/sha256/{runtime}", netns=net.ns("svc2"))
                assert status == 200 and h["cache-control"] == "no-store" and \
                    hashlib.sha256(body).hexdigest() == runtime
                assert curl(f"{servers[0].url}/blob/sha256/{runtime}", netns=net.ns("adm"))[0] == 404
                for s in servers[1:]:
                    for entry in manifest["nodes"]["n2"]["artifacts"]["image"].values():
                        got = open(os.path.join(s.state, "store", entry["file"]), "rb").read()
                        assert hashlib.sha256(got).hexdigest() == entry["sha256"]
                assert published["origins"] == [servers[0].url]
                cache = Announcer(client, PREFIX, "caches", Member("c1", "http://198.18.0.4:9874"), ttl=3).start()

                def full_header():
                    sets = header_sets(servers[1].get(f"/ipxe/{MAC1}")[2])
                    servers_named = {sets.get(f"wwfast-server{i}".encode()) for i in (1, 2, 3)}
                    return sets if sets.get(b"wwfast-blob1") == b"http://198.18.0.4:9874/blob/sha256" and \
                        servers_named == {s.url.encode() for s in servers} else None
                sets = wait_for(full_header, "svc2's scripts name the cache and the three servers")
                assert sets[b"wwfast-server1"] == servers[1].url.encode()     # the sending server first
                assert sets[b"wwfast-blob2"] != sets[b"wwfast-blob3"]          # then two servers by rank

                # a boot recorded on svc2 shows in svc3's /status (through etcd), naming svc2
                def seen_on_svc3():
                    doc = json.loads(servers[2].get("/status")[2])
                    rec = doc["nodes"].get("n1", {})
                    return doc if rec.get("stage") == "ipxe" and rec.get("server") == "svc2" else None
                doc = wait_for(seen_on_svc3, "n1's boot on svc2 visible on svc3")
                assert doc["servers"] == ["svc1", "svc2", "svc3"]

                # one etcd member and one server killed: a new generation still reaches the others,
                # no request fails, the dead server leaves the scripts within one lease
                etcd.kill("svc1")
                servers[0].kill()
                assert curl(servers[0].url + "/healthz", netns=net.ns("adm"))[0] == 0
                # svc2 builds and publishes g1b (its compress stage's last step); svc3 pulls it from svc2
                one_server_state(servers[1].state, tag=b"b")
                pointer.publish(Etcd(etcd.endpoints), PREFIX, servers[1].state, [servers[1].url])
                for s in servers[1:]:
                    wait_for(lambda s=s: s.get("/healthz")[2] == b"ok generation=g1b\n", f"{s.host} serves g1b")
                    assert s.get("/status")[0] == 200
                sets = wait_for(lambda: (lambda h: h if servers[0].url.encode() not in h.values() else None)(
                    header_sets(servers[2].get(f"/ipxe/{MAC2}")[2])), "svc1 left the scripts")
                assert sets[b"wwfast-generation"] == b"g1b"
                # the admin's view with the etcd member still dead: no error
                show = subprocess.run(net.exec_args("adm") + [
                    sys.executable, "-m", "wwfast.cli", "--conf", os.path.join(servers[1].state, "conf"),
                    "cluster", "show", "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
                assert show.returncode == 0 and not show.stderr, show.stderr
                shown = json.loads(show.stdout)
                assert shown["manifest"]["generation"] == "g1b" and shown["boot_records"] >= 2
                assert [m["name"] for m in shown["members"]["servers"]] == ["svc2", "svc3"]
                cache.stop()
            for s in servers[1:]:
                log = open(os.path.join(s.state, "serve.log"), errors="replace").read()
                assert "Traceback" not in log, log[-3000:]
        finally:
            for s in servers:
                s.stop()


def etcd_clients(net, host):
    """{pid: connections} of the processes on `host` connected to an etcd member (port 2379)."""
    out = subprocess.run(net.exec_args(host) + ["ss", "-Htnp", "state", "established", "dport", "= :2379"],
                         capture_output=True, text=True, check=True).stdout
    pids = {}
    for pid in re.findall(r"pid=(\d+)", out):
        pids[int(pid)] = pids.get(int(pid), 0) + 1
    return pids


@pytest.mark.slow
def test_two_workers_in_etcd_mode_share_one_scale_out_part(tmp_path):
    """serve --workers 2 in etcd mode: the supervisor alone talks to etcd (pointer, membership, boot records);
    both workers send node scripts with the cache-tier header and switch when a publish arrives."""
    with HostNet(f"wwsw{os.getpid()}", ["svc1", "adm"]) as net, EtcdCluster(net, ["svc1"], tmp_path) as etcd:
        state = str(tmp_path / "svc1")
        one_server_state(state)
        server = Server(net, "svc1", state, etcd, workers=2)
        try:
            with net.inside("adm"):
                client = Etcd(etcd.endpoints)
                pointer.publish(client, PREFIX, state, [server.url])
                cache = Announcer(client, PREFIX, "caches", Member("c1", "http://198.18.0.9:9874"), ttl=3).start()

                def scripts(generation):
                    """{worker: header} when both workers' scripts name the cache, the server and `generation`."""
                    got = {}
                    for worker, mac in ((0, MAC1), (1, MAC2)):
                        healthz = server.get("/healthz", worker)[2]
                        if healthz != f"ok generation={generation} worker={worker}\n".encode():
                            return None
                        sets = header_sets(server.get(f"/ipxe/{mac}", worker)[2])
                        if sets.get(b"wwfast-blob1") != b"http://198.18.0.9:9874/blob/sha256" or \
                                sets.get(b"wwfast-generation") != generation.encode():
                            return None
                        got[worker] = sets
                    return got
                sets = wait_for(lambda: scripts("g1"), "both workers send g1's scripts with the cache first")
                assert {h[b"wwfast-server1"] for h in sets.values()} == {server.url.encode()}
                # n1's boot (worker 0) and n2's (worker 1) went to etcd, written by the one supervisor
                records = wait_for(lambda: (lambda r: r if {"n1", "n2"} <= set(r) else None)(
                    boot_mirror.read_all(client, PREFIX)), "both workers' boot records in etcd")
                assert {records[n]["server"] for n in ("n1", "n2")} == {"svc1"}
                doc = json.loads(server.get("/status", 1)[2])
                assert doc["servers"] == ["svc1"] and {w["worker"] for w in doc["workers"]} == {0, 1}
                # the supervisor holds the only etcd connections on the host: workers have no etcd client
                supervisor = server.proc.pid
                assert set(etcd_clients(net, "svc1")) - {etcd.procs["svc1"].pid} == {supervisor}

                # a new generation built elsewhere; its store files are on shared storage, its manifest
                # comes through etcd with the pointer, and both workers switch to it
                builder = str(tmp_path / "builder")
                one_server_state(builder, tag=b"b")
                for name in os.listdir(os.path.join(builder, "store")):
                    target = os.path.join(state, "store", name)
                    if not os.path.exists(target):
                        os.link(os.path.join(builder, "store", name), target)
                pointer.publish(client, PREFIX, builder, [server.url])
                wait_for(lambda: scripts("g1b"), "both workers send g1b's scripts")
                with open(os.path.join(builder, "publish", "manifest.json"), "rb") as f:
                    assert open(os.path.join(state, "publish", "manifest.json"), "rb").read() == f.read()
                cache.stop()
            log = open(os.path.join(state, "serve.log"), errors="replace").read()
            assert "svc1: switched to generation g1b (manifest from etcd, 0 store files fetched)" in log
            assert "Traceback" not in log, log[-3000:]
        finally:
            server.stop()


def test_a_node_pinned_to_a_cache_group_gets_that_groups_cache_first(tmp_path):
    import types
    from wwfast import records
    from wwfast.publish.manifest import cache_group
    settings = types.SimpleNamespace(caches=[{"url": "http://a:1"}], etcd_endpoints=[], cache_group_tag="rack")
    assert cache_group(records.Node(id="n1", tags={"rack": "r2"}), settings) == "r2"
    assert cache_group(records.Node(id="n2", tags={}), settings) == ""
    assert cache_group(records.Node(id="n1", tags={"rack": "r2"}), types.SimpleNamespace(
        caches=[], etcd_endpoints=[], cache_group_tag="rack")) == ""          # no cache tier: no group
    state = str(tmp_path / "state")
    image = os.urandom(1000)
    nodes = {"n1": make_node(state, "n1", MAC1, image), "n2": make_node(state, "n2", MAC2, image)}
    nodes["n1"]["cache_group"] = "r2"
    publish(state, nodes, "g1")
    port = free_port()
    caches = "".join(f"    - http://127.0.0.1:{9000 + i} r{i}\n" for i in range(1, 5))
    settings_text = (f"ipaddr: 127.0.0.1\nwarewulf:\n  secure: false\n  port: {port}\n"
                     f"cluster:\n  server url: http://127.0.0.1:{port}\n  caches:\n{caches}")
    from wwfast.cluster import sources
    from wwfast.cluster.placement import Member, bounded_first
    members = [Member(f"127.0.0.1:{9000 + i}", f"http://127.0.0.1:{9000 + i}", f"r{i}") for i in range(1, 5)]
    with running_server(state, port, settings=settings_text):
        for mac, node_id, group in ((MAC1, "n1", "r2"), (MAC2, "n2", "")):
            sets = header_sets(curl(f"http://127.0.0.1:{port}/ipxe/{mac}")[2])
            first = None if group else bounded_first(["n2"], members).get(node_id)   # n2: the only one unpinned
            want = sources.blob_sources(node_id, group, members, [], first=first)
            assert [sets[f"wwfast-blob{i}".encode()].decode() for i in (1, 2, 3)] == want
    first_n1 = sources.blob_sources("n1", "r2", members, [])[0]
    assert first_n1 == "http://127.0.0.1:9002/blob/sha256"
