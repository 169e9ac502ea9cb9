#!/usr/bin/env python3
"""`make demo`: boot the demo cluster (conf/) in QEMU through the iPXE ROM, end to end, and summarise.

Steps: make the demo image (busybox + the Debian kernel) and import it; run define, build, compress;
start serve (HTTP and TFTP as conf/wwfast.yaml says); boot every node of the node database at once in
QEMU (TCG) with the ROM's first step over TFTP (`tftp://SERVER:TFTP_PORT/${mac:hexhyp}.ipxe`, the node's
own iPXE script, which then fetches kernel, image and overlays over HTTP); check that each console shows
the node's own hostname, its runtime overlay marker and its kernel arguments; stop everything it
started; print nodes booted, seconds each, bytes served, and each node's boot as serve recorded it
(every request: stage, protocol, file, bytes, seconds). Exit status 0 only when every node booted.
"""
import argparse
import pathlib
import re
import socket
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.cluster import Cluster, StageFailed, booted_requests  # noqa: E402
from helpers.qemu_nodes import NodeGroup, NodeTimeout, QemuNode  # noqa: E402
from wwfast.builder import demo_image  # noqa: E402
from wwfast import layout, records  # noqa: E402
from wwfast.define import settings as wwsettings  # noqa: E402
from wwfast.dirs import add_dir_arguments  # noqa: E402
from wwfast.commands.bootview import boot_lines  # noqa: E402

IMAGE_NAME = "demo"
BOOT_TIMEOUT = 240


def port_in_use(host, port, kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        if kind == socket.SOCK_STREAM:
            # As serve does: connections of an earlier run in TIME_WAIT must not count as "busy".
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def primary_mac(node):
    """The Ethernet address the node boots by (node.macs lists the primary device's first)."""
    return next((mac for mac in node.macs if records.is_ethernet_mac(mac)), None)


def step(text):
    print(f"demo: {text}", flush=True)


def check_node(node_id, report, kernel_args, console, boot):
    """Problems with what a node's console showed and serve recorded (empty list when all is there)."""
    problems = []
    stages = [r["stage"] for r in booted_requests(boot)]
    if stages != ["ipxe", "kernel", "image", "system", "runtime"]:
        problems.append(f"serve's boot record has {stages or 'no requests'} (script, kernel, image, overlays)")
    if not re.search(r"tftp://\S+\.ipxe\.\.\. ok", console):
        problems.append("its console does not show the TFTP first step (the per-node iPXE script)")
    if report.get("hostname") != node_id:
        problems.append(f"hostname is {report.get('hostname')!r}, expected {node_id!r}")
    if "runtime" not in report["markers"]:
        problems.append("no runtime overlay marker")
    elif node_id not in report["markers"]["runtime"]:
        problems.append(f"runtime marker {report['markers']['runtime']!r} is not this node's")
    cmdline = report.get("cmdline", "").split()
    missing = [a for a in kernel_args if a not in cmdline]
    if missing:
        problems.append(f"kernel arguments {missing} missing from {cmdline}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_dir_arguments(parser)
    parser.add_argument("--timeout", type=float, default=BOOT_TIMEOUT, help="seconds for all nodes to boot")
    args = parser.parse_args(argv)
    conf, state = pathlib.Path(args.conf).resolve(), pathlib.Path(args.state).resolve()
    started = time.monotonic()

    settings = wwsettings.load(conf)
    host = settings.http_bind if settings.http_bind not in ("", "0.0.0.0") else "127.0.0.1"
    for port, kind, what in ((settings.http_port, socket.SOCK_STREAM, "HTTP"),
                             (settings.tftp_port, socket.SOCK_DGRAM, "TFTP")):
        if port_in_use(host, port, kind):
            print(f"demo: {what} port {host}:{port} is busy (is `make serve` running?); stop it first",
                  file=sys.stderr)
            return 2
    cluster = Cluster(conf, state, http_host=host, http_port=settings.http_port)

    step("making the demo image (busybox-static + the Debian kernel and its NIC modules)")
    tree = state / "demo-image"
    version = demo_image.make_demo_image(tree)
    cluster.import_image(tree, IMAGE_NAME)
    step(f"imported image {IMAGE_NAME!r} (kernel {version}); running define, build, compress")
    try:
        for name in ("define", "build", "compress"):
            out = cluster.stage(name).strip()
            for line in out.splitlines()[-3:]:
                print(f"  {line}")  # the stages prefix their own lines
    except StageFailed as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1

    db = records.read_nodes(layout.nodes_json(state))
    nodes, kernel_args = [], {}
    for node_id, node in sorted(db.items()):
        mac = primary_mac(node)
        if mac is None:
            step(f"skipping {node_id}: it has no MAC address")
            continue
        nodes.append(QemuNode(node_id, mac, state / "demo-consoles",
                              bootfile=f"tftp://{settings.address}:{settings.tftp_port}/${{mac:hexhyp}}.ipxe",
                              asset=node.asset_key or None))
        kernel_args[node_id] = list(node.kernel.args)

    step(f"starting serve (HTTP {host}:{settings.http_port}, TFTP {settings.tftp_bind}:{settings.tftp_port})")
    failures = {}
    reports, recorded = {}, {}
    try:
        cluster.start_serve()
        step(f"booting {len(nodes)} nodes at once in QEMU: " + ", ".join(f"{n.name} ({n.mac})" for n in nodes))
        with NodeGroup(nodes) as group:
            try:
                reports = group.wait_booted(args.timeout)
            except NodeTimeout as e:
                failures["boot"] = str(e)
        served = cluster.bytes_served()
        recorded = {node.name: cluster.boot_record(node.name) for node in nodes}
    finally:
        cluster.stop_serve()

    print()
    for node in nodes:
        report = reports.get(node.name)
        if report is None:
            continue
        boot = (recorded.get(node.name) or {}).get("boot")
        problems = check_node(node.name, report, kernel_args[node.name], node.console(), boot)
        if problems:
            failures[node.name] = "; ".join(problems)
        print(f"  {node.name} ({node.mac}): booted in {report['seconds']:.1f} s; hostname {report.get('hostname')}; "
              f"runtime overlay: {report['markers'].get('runtime', '-')}")
        print(f"      kernel: {report.get('cmdline', '')}")
        for line in boot_lines("      serve's record of its boot", boot):
            print("    " + line if line.startswith("  ") else line)
    booted = len(reports) - sum(1 for n in reports if n in failures)
    print(f"\ndemo: {booted}/{len(nodes)} nodes booted; {served / 1e6:.1f} MB served over HTTP; "
          f"total {time.monotonic() - started:.0f} s")
    print(f"demo: consoles in {state / 'demo-consoles'}, serve log {cluster.serve_log}")
    for what, text in failures.items():
        print(f"demo: FAILED {what}: {text}", file=sys.stderr)
    return 0 if not failures and booted == len(nodes) else 1


if __name__ == "__main__":
    sys.exit(main())
