"""The scale-out proof at CI size: 3 service hosts (etcd member, `wwfast serve`, nginx cache each) and 2 racks
of simulated nodes in namespaces this test creates, service links capped with tc tbf. One storm without
faults, then one per fault injected once the nodes have received 40% of the fault-free storm's bytes (a point
in the storm, so a faster run cannot end before its fault; the benchmark injects at 40% of the time): kill -9 a cache, blackhole a cache,
kill an etcd member and a wwfast server, publish a new generation. Every node boots, every file's sha256
is checked by the node. Timing figures are the benchmark's (benchmarks/bench_scaleout.py), not asserted."""
import json
import os
import pathlib
import sys

import pytest

from serve_helpers import make_node, publish

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from storm.cluster import node_mac  # noqa: E402
from storm.scaleout_rig import ScaleOutRig, curl  # noqa: E402
from storm.scaleout_storm import FAULTS, blob_bytes, run_storm, runtime_shas, summarise  # noqa: E402
from storm.topology import LinkShape, Topology, _rate_bytes  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, tc)")]
NODES, RACKS, RATE = 24, 2, "60mbit"


def make_generation(state, tag):
    image = os.urandom(2 << 20)                     # one image for all nodes: 2 slices in each cache
    nodes = {f"n{i + 1:05d}": make_node(str(state), f"n{i + 1:05d}", node_mac(i), image, tag=tag)
             for i in range(NODES)}
    return publish(str(state), nodes, f"gen-{tag.decode()}")


def test_storm_through_the_cache_tier_with_each_fault(tmp_path):
    gen1, gen2 = make_generation(tmp_path / "gen1", b"a"), make_generation(tmp_path / "gen2", b"b")
    runtime = {gen1["generation"]: runtime_shas(gen1), gen2["generation"]: runtime_shas(gen2)}
    nodes = [(i, f"n{i + 1:05d}", node_mac(i)) for i in range(NODES)]
    results = {}
    with Topology(f"wwst{os.getpid()}", nodes=NODES, racks=RACKS, servers=3,
                  server_link=LinkShape(rate=RATE)) as topo:
        fault_free_bytes = None
        for name, fault in FAULTS.items():
            # With a fault, short no-progress timeouts (2 s) are how nodes and caches give up on a dead or
            # blackholed peer. Without one they are backstops (30 s): the fault-free storm asserts no fetch
            # failed, and a 2 s stall of a loaded machine is no failure of the tier.
            stall = 2 if fault else 30
            rig = ScaleOutRig(topo, tmp_path / name, tmp_path / "gen1", tmp_path / "gen2", transfer_timeout=stall)
            try:
                rig.start()
                out = run_storm(rig, topo, nodes, runtime, tmp_path / name / "nodes", timeout=stall, fault=fault,
                                fault_at_bytes=0.4 * fault_free_bytes if fault else None)
                if name == "publish":
                    switched = {k: curl(rig.ns(k), rig.server_url(k) + "/healthz") for k in range(3)}
            finally:
                rig.stop()
            figures = summarise(out, _rate_bytes(RATE), blob_bytes(gen1))
            results[name] = figures
            assert figures["failed"] == 0, (name, figures["failed_nodes"], rig.log("serve0.log")[-2000:])
            for r in out["records"]:         # script, kernel, image, system, runtime: each hashed by the node
                ok = [f[0] for f in r["fetches"] if f[5] == "ok"]
                assert ok == ["ipxe", "kernel", "image", "system", "runtime"], (name, r["id"], r["fetches"])
            if fault is None:
                fault_free_bytes = figures["node_bytes"]
                assert figures["blob_bytes_from_caches_share"] == 1.0       # no cache down: all blobs from caches
                assert len(figures["bytes_per_cache"]) == 3
                assert figures["fetch_failures"] == 0
            else:
                assert figures["fault"] and figures["fault_at_s"] is not None
                assert figures["fault_at_s"] < figures["wall_s"], (name, figures)   # it hit a running storm
            if name == "publish":
                assert set(figures["generations"]) <= {gen1["generation"], gen2["generation"]}
                assert switched == {k: f"ok generation={gen2['generation']}\n".encode() for k in range(3)}
    (tmp_path / "figures.json").write_text(json.dumps(results, indent=1, default=str))
