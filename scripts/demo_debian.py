#!/usr/bin/env python3
"""`make demo-debian`: two Debian 12 systemd nodes boot at once from wwfast in QEMU, end to end.

Steps: build the Debian image with mmdebstrap (cached under ~/.cache/wwfast/debian: a rerun does not
rebuild it) and import it; write a small cluster configuration (tests/helpers/debian_nodes.py: node
deb1 with `root: tmpfs`, deb2 with the default `root: initramfs`) under STATE/demo-debian; run
define, build, compress; start serve; boot both nodes through the iPXE ROM (TFTP, then HTTP); read
what each console shows (systemd at multi-user, hostname, network by MAC from the network overlay,
the node agent's service, the SSH host key, / and pivot_root); check the SSH host key with
ssh-keyscan through a QEMU port forward; publish a new runtime overlay and wait for each node's
agent to bring it; stop everything; print boot time per node and bytes served.
Exit status 0 only when every check passed.
"""
import argparse
import pathlib
import re
import socket
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import debian_nodes  # noqa: E402
from helpers.cluster import Cluster, StageFailed  # noqa: E402
from helpers.qemu_nodes import NodeGroup, NodeTimeout, QemuNode, kvm_works  # noqa: E402
from wwfast import layout  # noqa: E402
from wwfast.builder import debian_image  # noqa: E402

NODES = [("deb1", "52:54:00:de:b0:01", "10.0.2.41", "tmpfs"),
         ("deb2", "52:54:00:de:b0:02", "10.0.2.42", "initramfs")]
BOOT_TIMEOUT = 900
UPDATE_TIMEOUT = 120


def step(text):
    print(f"demo-debian: {text}", flush=True)


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keyscan(port):
    out = subprocess.run(["ssh-keyscan", "-T", "30", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=60)
    keys = [line.split(None, 1)[1].strip() for line in out.stdout.splitlines() if line and line[0] != "#"]
    return keys[0] if keys else ""


def check(name, mac, ipaddr, root, report, scanned, expected_key):
    """Problems with what node `name` showed (empty: everything as it must be)."""
    want = {"system": "running", "target": "active", "hostname": name, "sshd": "active",
            "hostkey": expected_key, "netdev": f"lan0 {mac} {ipaddr}/24",
            "pivot_root": "ok" if root == "tmpfs" else None}
    problems = [f"{k} is {report.get(k)!r}, expected {v!r}" for k, v in want.items()
                if v is not None and report.get(k, "").strip() != v]
    if "20-wwfast-default.network" not in report.get("networkd", ""):
        problems.append(f"systemd-networkd did not apply the overlay's file: {report.get('networkd')!r}")
    if not report.get("agent", "").startswith("active "):
        problems.append(f"node agent service: {report.get('agent')!r}")
    if scanned != expected_key:
        problems.append(f"ssh-keyscan got {scanned!r}, the overlay's key is {expected_key!r}")
    if root == "tmpfs" and not report.get("rootfs", "").rstrip(";").endswith("wwroot tmpfs"):
        problems.append(f"/ is not the tmpfs: {report.get('rootfs')!r}")
    return problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state", default="var", help="state directory (the demo works in STATE/demo-debian)")
    parser.add_argument("--conf", default=None, help="ignored: the demo writes its own configuration")
    args = parser.parse_args(argv)
    base = pathlib.Path(args.state).resolve() / "demo-debian"
    started = time.monotonic()

    image, built = debian_image.build(log=step)
    step(f"image {image.name}: {image.stat().st_size / 1e6:.0f} MB compressed"
         + (f", built in {built:.0f} s" if built else " (cached)"))
    conf, state = base / "conf", base / "state"
    http_port, tftp_port = free_port(), free_port(socket.SOCK_DGRAM)
    debian_nodes.write_conf(conf, NODES, http_port, tftp_port)
    cluster = Cluster(conf, state, http_port=http_port)
    try:
        cluster.import_image(image, debian_nodes.IMAGE)
        step("imported; running define, build, compress")
        cluster.publish()
    except StageFailed as e:
        print(f"demo-debian: {e}", file=sys.stderr)
        return 1
    accel = "kvm" if kvm_works(image_kernel(state)) else None
    ssh_ports = {name: free_port() for name, *_ in NODES}
    nodes = [QemuNode(name, mac, state / "consoles", memory=debian_nodes.MEMORY, accel=accel,
                      bootfile=f"tftp://10.0.2.2:{tftp_port}/${{mac:hexhyp}}.ipxe",
                      hostfwd=[(ssh_ports[name], ipaddr, 22)]) for name, mac, ipaddr, _ in NODES]
    failures, reports, scanned, updates, multi_user = {}, {}, {}, {}, {}
    cluster.start_serve()
    try:
        step(f"booting {len(nodes)} nodes at once ({'KVM' if accel else 'TCG'}, "
             f"{debian_nodes.MEMORY} MB each): " + ", ".join(f"{n.name} ({n.mac})" for n in nodes))
        with NodeGroup(nodes) as group:
            try:
                multi_user = group.wait_for(re.compile(r"WWFAST-NODE system \w"), BOOT_TIMEOUT)   # boot finished
                reports = group.wait_booted(BOOT_TIMEOUT)
                scanned = {name: keyscan(port) for name, port in ssh_ports.items()}
                step("publishing runtime overlay generation B while the nodes run")
                debian_nodes.set_generation(conf, "B")
                cluster.publish()
                published = time.monotonic()      # the new manifest is in place
                for node in nodes:
                    line = re.compile(rf"WWFAST-NODE runtime-update runtime overlay of {node.name} generation B")
                    group.wait_for(line, UPDATE_TIMEOUT, nodes=[node])
                    updates[node.name] = time.monotonic() - published
            except NodeTimeout as e:
                failures["boot"] = str(e)
        served = cluster.bytes_served()
    finally:
        cluster.stop_serve()

    key_file = pathlib.Path(layout.ssh_dir(state)) / "ssh_host_ed25519_key.pub"
    expected = " ".join(key_file.read_text().split()[:2])
    print()
    for name, mac, ipaddr, root in NODES:
        report = reports.get(name)
        if report is None:
            continue
        problems = check(name, mac, ipaddr, root, report, scanned.get(name, ""), expected)
        if name not in updates:
            problems.append("the runtime overlay published while it ran did not reach it")
        if problems:
            failures[name] = "; ".join(problems)
        print(f"  {name} ({mac}, root {root}): booted (systemd finished, multi-user) {multi_user[name]:.0f} s after "
              f"QEMU started; systemd {report.get('system')}")
        print(f"      {report.get('analyze')}; slowest units: {report.get('blame')}")
        print(f"      network: {report.get('netdev')}  networkd: {report.get('networkd', '').strip()}")
        print(f"      agent: {report.get('agent')}; runtime: {report['markers'].get('runtime')}; "
              f"generation B shown {updates.get(name, float('nan')):.0f} s after the publish")
        print(f"      / : {report.get('rootfs')}  pivot_root: {report.get('pivot_root')}")
        print(f"      ssh host key (console / ssh-keyscan): {report.get('hostkey')} / {scanned.get(name) or '-'}")
    booted = sum(1 for name, *_ in NODES if name in reports and name not in failures)
    print(f"\ndemo-debian: {booted}/{len(NODES)} nodes booted; {served / 1e6:.1f} MB served over HTTP; "
          f"total {time.monotonic() - started:.0f} s")
    print(f"demo-debian: consoles in {state / 'consoles'}, serve log {cluster.serve_log}")
    for what, text in failures.items():
        print(f"demo-debian: FAILED {what}: {text}", file=sys.stderr)
    return 0 if not failures and booted == len(NODES) else 1


def image_kernel(state):
    """The kernel the build stage took out of the image (for the KVM probe)."""
    return next(pathlib.Path(layout.build_images_dir(state)).glob("*.kernel"))


if __name__ == "__main__":
    sys.exit(main())
