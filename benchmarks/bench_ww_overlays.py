"""Overlays of Warewulf's default profile: 10,000 nodes built the way the build stage builds them.

The lists are those of the default profile Warewulf ships (system: wwinit wwclient hosts fstab hostname
ssh.host_keys issue resolv udev.netname systemd.netname ifcfg ifupdown NetworkManager wicked ignition;
runtime: hosts ssh.authorized_keys): fourteen of those files are Warewulf `.ww` templates rendered per
node by wwfast's Go template engine (wwfast.build.gotemplate, compiled to Python once per build).

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
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_overlays import DEFAULT_RUNTIME, DEFAULT_SYSTEM, cpu_seconds, fresh_state, make_nodes  # noqa: E402
from wwfast.build.overlay_build import build_overlays  # noqa: E402
from wwfast.build.render import Renderer, node_view  # noqa: E402
from wwfast.define.settings import Settings  # noqa: E402

WW_SYSTEM = ["wwinit", "wwclient", "hosts", "fstab", "hostname", "ssh.host_keys", "issue", "resolv", "udev.netname",
             "systemd.netname", "ifcfg", "ifupdown", "NetworkManager", "wicked", "ignition"]
WW_RUNTIME = ["hosts", "ssh.authorized_keys"]


def full_build(base, name, nodes, settings, workers):
    state = fresh_state(base, name)
    cpu0, started = cpu_seconds(), time.perf_counter()
    result = build_overlays(ROOT / "conf", state, settings, nodes, workers=workers)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu0
    assert len(result.rebuilt) == len(nodes)
    shutil.rmtree(state)
    return wall, cpu


GO_TEMPLATE = """{{- range $name, $dev := .NetDevs }}
{{ $name }} {{ $dev.Device }}{{ if $dev.Ipaddr }} {{ $dev.IpCIDR }}{{ else }} dhcp{{ end }} {{ lower $dev.Hwaddr }}
{{- end }}
"""
J2_TEMPLATE = """{% for name, dev in node.netdevs.items() %}
{{ name }} {{ dev.device }}{% if dev.ipaddr %} {{ dev.cidr }}{% else %} dhcp{% endif %} {{ dev.hwaddr | lower }}
{% endfor %}
"""


def engines(settings, node, count=2000, runs=3):
    """us per render of the same template in each language, through the same Renderer."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        (tmp / "t.ww").write_text(GO_TEMPLATE)
        (tmp / "t.j2").write_text(J2_TEMPLATE)
        go = statistics.median(per_render(str(tmp / "t.ww"), "etc/t", count, settings, node) for _ in range(runs))
        j2 = statistics.median(per_render(str(tmp / "t.j2"), "etc/t", count, settings, node) for _ in range(runs))
        return go, j2
    finally:
        shutil.rmtree(tmp)


def per_render(template, rel, count, settings, node):
    renderer = Renderer(settings, {node["id"]: node}, str(ROOT / "conf"), "/nonexistent")
    view = node_view(node)
    renderer.render(template, rel, view, "bench")  # compile outside the timing
    started = time.perf_counter()
    for _ in range(count):
        renderer.render(template, rel, view, "bench")
    return (time.perf_counter() - started) / count * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=10000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    settings = Settings(address="10.100.0.1", netmask="255.255.0.0", http_port=9873, secure=False,
                        update_interval=60, digest="bench")
    ww_nodes = make_nodes(args.nodes, WW_SYSTEM, WW_RUNTIME)
    own_nodes = make_nodes(args.nodes, DEFAULT_SYSTEM, DEFAULT_RUNTIME)
    print(f"bench_ww_overlays: {args.nodes} nodes, {args.workers} workers, {args.runs} runs")
    base = tempfile.mkdtemp(prefix="bench-ww-overlays-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
    try:
        ww, own = [], []
        for run in range(args.runs):
            ww.append(full_build(base, f"ww{run}", ww_nodes, settings, args.workers))
            own.append(full_build(base, f"own{run}", own_nodes, settings, args.workers))
            print(f"  run {run + 1}: Warewulf lists {ww[-1][0]:.2f} s ({ww[-1][1]:.1f} CPU s), "
                  f"wwfast lists {own[-1][0]:.2f} s ({own[-1][1]:.1f} CPU s)")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    go_us, j2_us = engines(settings, ww_nodes["n00007"])
    ww_wall, ww_cpu = statistics.median(w for w, _ in ww), statistics.median(c for _, c in ww)
    own_wall, own_cpu = statistics.median(w for w, _ in own), statistics.median(c for _, c in own)
    load = os.getloadavg()[0]
    print(f"\nload average now {load:.1f} on {os.cpu_count()} cores (wall times stretch with it; CPU seconds less so)")
    print(f"{'':40} {'median':>9} {'CPU s':>8}")
    print(f"{'Warewulf default lists (.ww, Go engine)':40} {ww_wall:>8.2f}s {ww_cpu:>7.1f}s   "
          f"({args.nodes / ww_wall:,.0f} nodes/s)")
    print(f"{'wwfast default lists (.j2, Jinja2)':40} {own_wall:>8.2f}s {own_cpu:>7.1f}s   "
          f"({args.nodes / own_wall:,.0f} nodes/s)")
    print(f"ratio Warewulf lists / wwfast lists: {ww_wall / own_wall:.2f}x wall, {ww_cpu / own_cpu:.2f}x CPU; "
          f"Warewulf lists {'meet' if ww_wall <= 10 else 'miss'} the 10 s build goal ({ww_wall:.1f} s wall)")
    print(f"the same template, one node: Go engine {go_us:.1f} us/render, Jinja2 {j2_us:.1f} us/render "
          f"(ratio Go / Jinja2 {go_us / j2_us:.2f})")


if __name__ == "__main__":
    main()
