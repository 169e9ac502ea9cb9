"""A real distribution boots: Debian 12 with systemd, built by mmdebstrap, on two QEMU nodes at once.

The image (tests/conftest.py `debian_image`: built once and cached under ~/.cache/wwfast/debian) is
imported with `wwfast image import`, changed with `wwfast image exec` (apt-get installs a package),
published by the real stages and served by serve; two nodes boot
at once through the iPXE ROM (TFTP first step, HTTP after) on QEMU's user network. Node deb1 has
`root: tmpfs`, deb2 the default `root: initramfs`. Each node's `debian-report` service
(tests/helpers/debian_nodes.py) prints what systemd, networkd, the agent and sshd did; the test reads
those console records, scans each node's SSH host key through a QEMU port forward, publishes a new
runtime overlay while the nodes run and waits for each node's record of it arriving.
"""
import datetime
import pathlib
import re
import socket
import subprocess

import pytest

from helpers import debian_nodes
from helpers.cluster import Cluster
from helpers.qemu_nodes import NodeGroup, QemuNode, kvm_works
from wwfast import layout

pytestmark = [pytest.mark.slow, pytest.mark.qemu, pytest.mark.timeout(1500)]

# name, MAC, address, root
NODES = [("deb1", "52:54:00:de:b0:01", "10.0.2.41", "tmpfs"),
         ("deb2", "52:54:00:de:b0:02", "10.0.2.42", "initramfs")]
# Backstops only (the records decide): two nodes at once under TCG on a 2-core machine take 150-370 s
# here depending on the load (the kernel alone unpacks the 325 MB image for over a minute).
BOOT_TIMEOUT = 900
UPDATE_TIMEOUT = 120
WORKER = r"(?:\[worker \d+\] )?"
AGENT_SLACK = 10     # seconds: the agent's fetch + unpack + apply on a loaded TCG guest


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, debian_image):
    base = tmp_path_factory.mktemp("debian")
    conf, state = base / "conf", base / "state"
    http_port, tftp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    debian_nodes.write_conf(conf, NODES, http_port, tftp_port)
    c = Cluster(conf, state, http_port=http_port)
    c.tftp_port = tftp_port
    c.import_image(debian_image, debian_nodes.IMAGE)
    # The admin's way to change an image: a Debian package installed with apt-get inside it (image exec);
    # the nodes show it runs (test_a_package_installed_with_image_exec_runs_on_the_nodes).
    c.wwfast("image", "exec", debian_nodes.IMAGE, "--", "sh", "-c",
             "apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
             "apt-get install -y -qq --no-install-recommends hello")
    c.publish()
    c.start_serve()
    try:
        yield c
    finally:
        c.stop_serve()


@pytest.fixture(scope="module")
def booted(cluster, kernel_path):
    """Both nodes booted; their SSH keys scanned; generation B of the runtime overlay published while
    they run, and each node's record of it. Nodes stay up for the module's tests."""
    accel = "kvm" if kvm_works(kernel_path) else None
    ssh_ports = {name: free_port(socket.SOCK_STREAM) for name, *_ in NODES}
    nodes = [QemuNode(name, mac, cluster.state / "consoles", memory=debian_nodes.MEMORY, accel=accel,
                      bootfile=f"tftp://10.0.2.2:{cluster.tftp_port}/${{mac:hexhyp}}.ipxe",
                      hostfwd=[(ssh_ports[name], ipaddr, 22)])
             for name, mac, ipaddr, _ in NODES]
    with NodeGroup(nodes) as group:
        multi_user = group.wait_for(re.compile(r"WWFAST-NODE system \w"), BOOT_TIMEOUT)   # boot finished
        reports = group.wait_booted(BOOT_TIMEOUT)
        keys = {name: keyscan(port) for name, port in ssh_ports.items()}
        before = cluster.manifest()["generation"]
        debian_nodes.set_generation(cluster.conf, "B")
        cluster.publish()
        after = cluster.manifest()["generation"]
        updates = {}
        for node in nodes:
            line = re.compile(rf"WWFAST-NODE runtime-update runtime overlay of {node.name} generation B")
            updates.update(group.wait_for(line, UPDATE_TIMEOUT, nodes=[node]))
        records = {node.name: cluster.boot_record(node.name) for node in nodes}
        yield {"reports": reports, "multi_user": multi_user, "keys": keys, "updates": updates, "records": records, "nodes": nodes,
               "generations": (before, after), "accel": accel or "tcg"}


def keyscan(port):
    out = subprocess.run(["ssh-keyscan", "-T", "30", "-t", "ed25519", "-p", str(port), "127.0.0.1"],
                         capture_output=True, text=True, timeout=60)
    keys = [line.split(None, 1)[1] for line in out.stdout.splitlines() if line and not line.startswith("#")]
    return keys[0].strip() if keys else f"(no key; ssh-keyscan said: {out.stderr.strip()})"


def overlay_key(cluster):
    text = (pathlib.Path(layout.ssh_dir(cluster.state)) / "ssh_host_ed25519_key.pub").read_text()
    return " ".join(text.split()[:2])


def test_both_nodes_reach_multi_user_with_their_hostnames(booted):
    for name, *_ in NODES:
        report = booted["reports"][name]
        assert report["target"] == "active", report
        assert report["system"] == "running", report
        assert report["hostname"] == name, report


def test_network_from_the_network_overlay_on_the_interface_found_by_mac(booted):
    for name, mac, ipaddr, _ in NODES:
        report = booted["reports"][name]
        assert report["netdev"].split() == ["lan0", mac, f"{ipaddr}/24"], report
        networkd = dict(item.split("=", 1) for item in report["networkd"].split())
        assert networkd["Network_File"] == "/etc/systemd/network/20-wwfast-default.network", report
        assert networkd["State"].startswith("routable_(configured"), report


def test_a_package_installed_with_image_exec_runs_on_the_nodes(booted):
    for name, *_ in NODES:
        assert booted["reports"][name]["hello"] == "Hello, world!", booted["reports"][name]


def test_runtime_overlay_applied_at_boot(booted):
    for name, *_ in NODES:
        assert booted["reports"][name]["markers"]["runtime"] == f"runtime overlay of {name} generation A"


def test_agent_service_brings_a_runtime_overlay_published_while_the_node_runs(booted):
    before, after = booted["generations"]
    assert before != after
    for name, *_ in NODES:
        state, pid = booted["reports"][name]["agent"].split()
        assert state == "active" and int(pid) > 1, booted["reports"][name]
        assert name in booted["updates"]
        # serve's own record: the node's runtime overlay was sent again from the new manifest
        requests = booted["records"][name]["boot"]["requests"]
        assert any(r["stage"] == "runtime" and r["generation"] == after and r["result"] == "ok"
                   for r in requests), requests


def test_the_agent_fetched_the_new_runtime_overlay_within_its_interval(booted, cluster):
    """From serve's log (timestamped records): the first request for the new runtime overlay came at most
    one update interval after serve switched to the new manifest, plus the agent's own fetch-and-apply
    time on a slow TCG guest (it sleeps the interval after each update)."""
    _, after = booted["generations"]
    log = cluster.serve_log.read_text()
    # with serve workers each logs its own switch ("[worker N]"): the first one counts
    switched = stamp(re.search(rf"^(\S+ \S+) INFO {WORKER}serving manifest generation {after}\b", log, re.M))
    for name, *_ in NODES:
        new_file = cluster.manifest()["nodes"][name]["artifacts"]["runtime"]["gz"]["file"]
        request = rf"^(\S+ \S+) INFO {WORKER}\S+ GET {name} runtime {new_file} -> 200$"
        fetches = [stamp(m) for m in re.finditer(request, log, re.M)]
        assert fetches, f"no request of {name} for {new_file} in {cluster.serve_log}"
        assert 0 <= fetches[0] - switched <= debian_nodes.UPDATE_INTERVAL + AGENT_SLACK, (name, fetches[0] - switched)


def stamp(match):
    assert match, "record missing from serve's log"
    return datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_ssh_host_key_is_the_overlays(booted, cluster):
    expected = overlay_key(cluster)
    for name, *_ in NODES:
        assert booted["reports"][name]["hostkey"] == expected
        assert booted["reports"][name]["sshd"] == "active"
        assert booted["keys"][name] == expected, booted["keys"][name]


def test_root_tmpfs_switches_root_so_pivot_root_works(booted):
    tmpfs, initramfs = (booted["reports"][name] for name, *_ in NODES)
    assert tmpfs["rootfs"].rstrip(";").split(";")[-1] == "wwroot tmpfs", tmpfs
    assert tmpfs["pivot_root"] == "ok", tmpfs
    assert initramfs["rootfs"].rstrip(";") == "rootfs rootfs", initramfs
    assert initramfs["pivot_root"].startswith("failed"), initramfs


def test_boot_times_and_bytes_served(booted, cluster):
    """Figures for the notes (the demo prints the same): boot time per node, bytes served."""
    for name, *_ in NODES:
        report = booted["reports"][name]
        print(f"{name}: booted to multi-user in {booted['multi_user'][name]:.0f} s ({booted['accel']}); "
              f"{report.get('analyze')}; slowest: {report.get('blame')}")
    print(f"served {cluster.bytes_served() / 1e6:.0f} MB")
    assert cluster.bytes_served() > 0
