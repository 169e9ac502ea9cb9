"""The boot-storm simulator (benchmarks/bootstorm.py) at a small size, as `make bench` runs it in full.

50 simulated nodes, each with its own MAC and IP address in a rack namespace, boot from wwfast serve
(secure mode: the agent's runtime overlay comes from a privileged port) and from in.tftpd + nginx;
every byte is checked against the manifest, no node may fail, and wwfast's own record of every node's
boot must agree with the node's. The comparison itself is tested on tampered records.
"""
import ipaddress
import json
import os
import pathlib
import shutil
import subprocess
import sys

import jinja2
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from storm import plan, views  # noqa: E402
from storm.loadgen import Attempt  # noqa: E402

NEEDS = ("ip", "tc", "gcc", "nginx", "in.tftpd", "curl")


def _missing():
    return [t for t in NEEDS if shutil.which(t) is None and not os.path.exists(f"/usr/sbin/{t}")]


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")
def test_storm_of_50_nodes_boots_every_node_and_both_views_agree(tmp_path):
    assert not _missing(), f"missing tools: {_missing()} (scripts/debian-packages.txt)"
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bootstorm.py"), "--nodes", "50", "--image-mb", "12",
                          "--runs", "1", "--warmup", "0", "--no-plot", "--name", "bootstorm-ci",
                          "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    doc = json.loads((tmp_path / "results" / "bootstorm-ci.json").read_text())
    runs = doc["details"]["runs"]
    assert set(runs) == {"wwfast", "classic"}
    for stack, stack_runs in runs.items():
        for r in stack_runs:
            assert r["booted"] == 50 and r["failed"] == 0, (stack, r)
            assert r["bytes"] > 50 * 8_000_000, (stack, r["bytes"])     # kernel + image per node, at least
    for stack, stack_views in doc["details"]["views"].items():
        for v in stack_views:
            assert v["agree"] == v["nodes"] == 50, (stack, v)
    # wwfast's view is its boot records (/status?node=ID), compared request by request for every node
    for v in doc["details"]["views"]["wwfast"]:
        assert v["records_compared"] == 50 and "boot records" in v["source"], v
    assert "failed nodes" in {m["name"] for m in doc["measures"]}


class _Step:
    def __init__(self, label, ref, args=("pool", "/x")):
        self.label, self.ref, self.args = label, ref, list(args)


def _attempt(node, label, start, end, nbytes, result="ok", srcport=40000):
    return Attempt(f"{node} {label} {int(start * 1e9)} {int(end * 1e9)} {nbytes} {result} {srcport} 0")


def _one_node():
    paths = ["/t/nbp", "/s/script.ipxe", "/s/k.kernel", "/s/img.cpio.zst", "/s/sys.cpio.zst", "/s/rt.cpio.gz"]
    steps = [_Step("nbp", 0), _Step("ipxe", 1), _Step("kernel", 2), _Step("image", 3), _Step("system", 4),
             _Step("agent", 5, ("priv", "/runtime/52:54:00:00:00:01?compress=gz"))]
    attempts = [_attempt(0, "nbp", 100.0, 100.5, 850), _attempt(0, "ipxe", 100.5, 100.6, 1200),
                _attempt(0, "kernel", 100.6, 101.0, 8000), _attempt(0, "image", 101.0, 102.0, 9000),
                _attempt(0, "system", 102.0, 102.1, 90), _attempt(0, "agent", 102.2, 102.3, 480, srcport=1000)]
    nodes = [(0, "n00001", "198.18.0.1", steps, paths)]
    status = {"nodes": {"n00001": {"ipaddr": "198.18.0.1", "stage": "runtime", "sent": "rt.cpio.gz",
                                   "boot start": 100.55, "boot end": 102.29}}}
    return nodes, {0: attempts}, status


def test_views_agree_on_a_faithful_record():
    nodes, by_node, status = _one_node()
    assert views.compare_wwfast(nodes, by_node, {"status": status, "records": {}})["agree"] == 1


@pytest.mark.parametrize("field,value", [("ipaddr", "198.18.0.2"), ("sent", "other.cpio.gz"),
                                         ("boot start", 99.0), ("boot end", 0), ("stage", "system")])
def test_views_catch_a_record_that_differs(field, value):
    nodes, by_node, status = _one_node()
    status["nodes"]["n00001"][field] = value
    summary = views.compare_wwfast(nodes, by_node, {"status": status, "records": {}})
    assert summary["disagreeing"] == 1, summary


def test_boot_records_are_compared_request_by_request():
    nodes, by_node, status = _one_node()
    good = [{"stage": s, "file": f, "bytes": b, "start": t0 + 0.01, "end": t1, "result": "ok",
             "client": "198.18.0.1", "protocol": "http"}
            for s, f, b, t0, t1 in (("ipxe", "script.ipxe", 1200, 100.5, 100.6), ("kernel", "k.kernel", 8000, 100.6, 101),
                                    ("image", "img.cpio.zst", 9000, 101, 102), ("system", "sys.cpio.zst", 90, 102, 102.1),
                                    ("runtime", "rt.cpio.gz", 480, 102.2, 102.3))]
    assert views.compare_wwfast(nodes, by_node, {"status": status, "records": {"n00001": good}})["agree"] == 1
    short = [dict(r) for r in good]
    short[2]["bytes"] = 8999
    assert views.compare_wwfast(nodes, by_node, {"status": status, "records": {"n00001": short}})["disagreeing"] == 1


def test_nginx_access_log_view():
    nodes, by_node, _ = _one_node()
    nodes[0][3][1].args = ["pool", "/ipxe/52-54-00-00-00-01?assetkey="]
    for step, path in zip(nodes[0][3][2:5], ("/kernel/m", "/image/m", "/system/m")):
        step.args = ["pool", path]
    lines = ["198.18.0.1 40000 100.590 0.001 200 1200 /ipxe/52-54-00-00-00-01?assetkey=",
             "198.18.0.1 40000 100.990 0.3 200 8000 /kernel/m", "198.18.0.1 40000 101.990 0.9 200 9000 /image/m",
             "198.18.0.1 40000 102.090 0.01 200 90 /system/m",
             "198.18.0.1 1000 102.290 0.01 200 480 /runtime/52:54:00:00:00:01?compress=gz"]
    assert views.compare_nginx(nodes, by_node, lines)["agree"] == 1
    assert views.compare_nginx(nodes, by_node, lines[:-1])["disagreeing"] == 1


def test_script_interpretation_follows_the_built_script():
    script = (ROOT / "wwfast" / "data" / "ipxe" / "default.ipxe").read_text()
    rendered = jinja2.Template(script).render(authority="198.19.0.1:9873", hwaddr="52:54:00:00:00:01", secure=False,
                                              kernel_args="quiet", id="n00001", image="storm", cache_tier=False)
    fetches, delay = plan.script_fetches(rendered, {"uuid": "u-1", "asset:uristring": ""})
    urls = [u for _, u in fetches]
    assert urls[0] == "http://198.19.0.1:9873/kernel/52:54:00:00:00:01?assetkey=&uuid=u-1"
    assert [u.split("/")[3] for u in urls] == ["kernel", "image", "system", "runtime"]
    assert delay == 10


def test_address_plan_gives_every_node_its_own_address_in_its_racks_prefix():
    from storm.topology import Topology
    topo = Topology("t", nodes=5000, racks=3, servers=2, extra_server_addresses=1)
    addresses = [topo.node_address(i) for i in range(5000)]
    assert len(set(addresses)) == 5000
    assert [len(topo.rack_nodes(k)) for k in range(3)] == [1667, 1667, 1666]
    for i in (0, 1666, 1667, 4999):
        assert ipaddress.ip_address(addresses[i]) in topo.rack_prefix(topo.rack_of(i))
    servers = topo.server_addresses(0) + topo.server_addresses(1)
    assert len(set(servers)) == 4 and not set(servers) & set(addresses)
