"""Overlays of Warewulf's default profile: 10,000 nodes built the way the build stage builds them.

The lists are those of the default profile Warewulf ships (system: wwinit wwclient hosts fstab hostname
ssh.host_keys issue resolv udev.netname systemd.netname ifcfg ifupdown NetworkManager wicked ignition;
runtime: hosts ssh.authorized_keys): fourteen of those files are Warewulf `.ww` templates rendered per
node by wwfast's Go template engine (wwfast.builder.gotemplate, compiled to Python once per build).

Peer, in the same run on the same nodes: wwfast's own default lists (Jinja2 templates: wwinit hostname
hosts network ssh.host_keys issue resolv fstab; hosts ssh.authorized_keys users). Also the engines head
to head: the same small template (a line per network device, a condition, a filter) in Go's language
and in Jinja2, rendered for the same node through the same renderer, microseconds per render.

    .venv/bin/python benchmarks/bench_ww_overlays.py [--nodes 10000] [--runs 3] [--workers 2]
"""
import argparse
import os
import pathlib
import shutil
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402
from bench_overlays import DEFAULT_RUNTIME, DEFAULT_SYSTEM, fresh_state, make_nodes  # noqa: E402
from wwfast.builder.overlay_build import build_overlays  # noqa: E402
from wwfast.builder.render import Renderer  # noqa: E402
from wwfast.builder.template_views import node_view  # noqa: E402
from wwfast.define.settings import Settings  # noqa: E402

WW_SYSTEM = ["wwinit", "wwclient", "hosts", "fstab", "hostname", "ssh.host_keys", "issue", "resolv", "udev.netname",
             "systemd.netname", "ifcfg", "ifupdown", "NetworkManager", "wicked", "ignition"]
WW_RUNTIME = ["hosts", "ssh.authorized_keys"]
GO_TEMPLATE = """{{- range $name, $dev := .NetDevs }}
{{ $name }} {{ $dev.Device }}{{ if $dev.Ipaddr }} {{ $dev.IpCIDR }}{{ else }} dhcp{{ end }} {{ lower $dev.Hwaddr }}
{{- end }}
"""
J2_TEMPLATE = """{% for name, dev in node.netdevs.items() %}
{{ name }} {{ dev.device }}{% if dev.ipaddr %} {{ dev.cidr }}{% else %} dhcp{% endif %} {{ dev.hwaddr | lower }}
{% endfor %}
"""


def full_build(base, name, nodes, settings, workers):
    """One whole build into a fresh state dir (removed afterwards)."""
    def run():
        state = fresh_state(base, name)
        try:
            result = build_overlays(ROOT / "conf", state, settings, nodes, workers=workers)
            assert len(result.rebuilt) == len(nodes)
        finally:
            shutil.rmtree(state, ignore_errors=True)
    return run


def renders(template, count, settings, node):
    """`count` renders of one template for one node through the build's Renderer (compiled first)."""
    renderer = Renderer(settings, {node.id: node}, str(ROOT / "conf"), "/nonexistent")
    view = node_view(node)
    renderer.render(template, "etc/t", view, "bench")

    def run():
        for _ in range(count):
            renderer.render(template, "etc/t", view, "bench")
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=None)
    parser.add_argument("--renders", type=int, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    harness.add_arguments(parser, runs=3, warmup=0)
    args = harness.settle(parser.parse_args(), nodes=(10000, 2000), renders=(5000, 1000))
    settings = Settings(address="10.100.0.1", netmask="255.255.0.0", http_port=9873, secure=False,
                        update_interval=60, digest="bench")
    ww_nodes = make_nodes(args.nodes, WW_SYSTEM, WW_RUNTIME)
    own_nodes = make_nodes(args.nodes, DEFAULT_SYSTEM, DEFAULT_RUNTIME)
    result = harness.Result("bench_ww_overlays", f"overlays of Warewulf's default profile for {args.nodes} nodes "
                            f"(.ww, Go engine) vs wwfast's own default lists (.j2, Jinja2)",
                            params=harness.params_of(args), quick=args.quick)
    base = tempfile.mkdtemp(prefix="bench-ww-overlays-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    try:
        builds = harness.interleave({"warewulf-lists": full_build(base, "ww", ww_nodes, settings, args.workers),
                                     "wwfast-lists": full_build(base, "own", own_nodes, settings, args.workers)},
                                    runs=args.runs, warmup=args.warmup)
        tmp = pathlib.Path(base)
        (tmp / "t.ww").write_text(GO_TEMPLATE)
        (tmp / "t.j2").write_text(J2_TEMPLATE)
        node = next(iter(ww_nodes.values()))
        engines = harness.interleave({"go-engine": renders(str(tmp / "t.ww"), args.renders, settings, node),
                                      "jinja2": renders(str(tmp / "t.j2"), args.renders, settings, node)},
                                     runs=args.runs, warmup=1)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result.add(f"build, {args.nodes} nodes, Warewulf's default lists", builds["warewulf-lists"],
               builds["wwfast-lists"], ours_name="Warewulf lists (.ww)", peer_name="wwfast lists (.j2)",
               note="ratio below 1: the Warewulf lists cost more; the stage goal is 10 s wall on 2 cores", limit=10)
    per = [harness.Sample(wall=s["wall"] / args.renders * 1e6, cpu=s["cpu"]) for s in engines["go-engine"]]
    per_j2 = [harness.Sample(wall=s["wall"] / args.renders * 1e6, cpu=s["cpu"]) for s in engines["jinja2"]]
    result.add("one template, one node, per render", per, per_j2, unit="us", ours_name="Go engine",
               peer_name="Jinja2", note="the same template in each language through the same Renderer")
    result.write(args.results)


if __name__ == "__main__":
    main()
