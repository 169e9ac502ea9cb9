"""Two QEMU nodes with the real iPXE ROM boot through the cache tier with their first caches dead.

The built script is default.ipxe's cache-tier branch; serve (settings `cluster: caches:`) puts each node's
sources in its header. Both nodes' first cache is a silent listener (connections accepted, nothing ever
answered: a blackholed cache, which costs the transfer's `--timeout`), the second refuses connections (a
killed nginx), the third is a real nginx cache in front of serve. QEMU user networking reaches all of
them, bound to loopback, at 10.0.2.2. The nodes must boot; the kernel, image and system overlay must come
from the nginx cache (its access log), and serve must have sent the nodes only their scripts and runtime
overlays (its boot records)."""
import socket

import pytest

from helpers.cluster import Cluster
from helpers.nginx_cache import NginxCache, free_port
from helpers.qemu_nodes import NodeGroup, QemuNode
from test_e2e_boot import KERNEL_ARGS, demo_tree, nodes_yaml, node_yaml, set_generation, write  # noqa: F401
from wwfast.cluster import sources
from wwfast.cluster.placement import Member

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]
NODES = {"so-n1": "52:54:00:5c:00:01", "so-n2": "52:54:00:5c:00:02"}
TIMEOUT_S = 3


def test_two_qemu_nodes_boot_through_the_cache_tier_with_their_first_caches_dead(tmp_path, demo_tree):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)                        # the kernel completes handshakes; nobody ever reads or answers
    silent_port = silent.getsockname()[1]
    ports = {silent_port}
    while len(ports) < 4:                    # distinct: a just-freed port can come back
        ports.add(free_port())
    http_port, cache_port, refused_port = sorted(ports - {silent_port})
    # names for which rendezvous hashing gives both nodes the order silent, refused, live (deterministic)
    caches = next(c for c in ([Member(f"silent{i}", f"http://10.0.2.2:{silent_port}"),
                               Member(f"refused{i}", f"http://10.0.2.2:{refused_port}"),
                               Member(f"live{i}", f"http://10.0.2.2:{cache_port}")] for i in range(10000))
                  if all(sources.blob_sources(n, "", c, []) == [m.url + "/blob/sha256" for m in c] for n in NODES))
    conf, state = tmp_path / "conf", tmp_path / "state"
    write(conf / "wwfast.yaml", f"""ipaddr: 10.0.2.2
netmask: 255.255.255.0
warewulf:
  port: {http_port}
  bind: 127.0.0.1
  secure: false
tftp:
  enabled: false
compression:
  zstd level: 3
  gzip: false
  threads: 0
cluster:
  server url: http://10.0.2.2:{http_port}
  transfer timeout: {TIMEOUT_S}
  source rounds: 2
  caches:
""" + "".join(f"    - {{url: \"{m.url}\", name: {m.name}, weight: {m.weight:g}}}\n" for m in caches))
    write(conf / "nodes.yaml", nodes_yaml([node_yaml(n, mac, f"10.0.2.{40 + i}")
                                           for i, (n, mac) in enumerate(NODES.items())], "10.0.2.2"))
    set_generation(conf, "A")
    c = Cluster(conf, state, http_port=http_port)
    c.import_image(demo_tree["A"], "e2e")
    c.publish()
    manifest = c.manifest()
    script = (state / "store" / manifest["nodes"]["so-n1"]["artifacts"]["ipxe"]["raw"]["file"]).read_text()
    assert "--timeout ${timeout} --name kernel ${wwfast-blob1}/${wwfast-kernel}" in script   # the cache-tier branch
    c.start_serve()
    try:
        with NginxCache(tmp_path / "cache", [f"127.0.0.1:{http_port}"], port=cache_port) as cache:
            nodes = [QemuNode(n, mac, tmp_path / "consoles", bootfile=f"http://10.0.2.2:{http_port}/ipxe/${{mac:hexhyp}}")
                     for n, mac in NODES.items()]
            with NodeGroup(nodes) as group:
                reports = group.wait_booted(300)
            records = {n: c.boot_record(n) for n in NODES}
        log = cache.access_log()
    finally:
        c.stop_serve()
    silent.setblocking(False)
    tried_silent = 0
    while True:                               # each connection a node made to the silent cache is queued
        try:
            conn, _ = silent.accept()
        except BlockingIOError:
            break
        tried_silent += 1
        conn.close()
    silent.close()
    for name in NODES:
        assert reports[name]["hostname"] == name, reports[name]
        assert all(arg in reports[name]["cmdline"].split() for arg in KERNEL_ARGS), reports[name]
        assert f"runtime overlay of {name} " in reports[name]["markers"].get("runtime", "")
    assert tried_silent >= len(NODES), "every node first tried its silent cache"
    for name in NODES:
        arts = manifest["nodes"][name]["artifacts"]
        for stage, enc in (("kernel", "raw"), ("image", "zst"), ("system", "zst")):
            path = f"/blob/sha256/{arts[stage][enc]['sha256']}"
            assert any(row[0] == path and row[1] == 200 for row in log), (name, stage, log)
        stages = [r["stage"] for r in records[name]["boot"]["requests"]]
        assert stages[0] == "ipxe" and "runtime" in stages and not {"kernel", "image", "system"} & set(stages), \
            records[name]
