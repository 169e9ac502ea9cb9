"""End to end: real firmware (QEMU's iPXE ROM), the real Debian kernel, our bytes.

One serve process (own state dir, own ports) serves a small cluster; nodes boot in QEMU (TCG) through
TFTP (`tftp://10.0.2.2:PORT/${mac:hexhyp}.ipxe`, the per-node script) and HTTP (kernel, image, system and
runtime overlays). The demo image's /sbin/init prints `WWFAST-NODE ...` lines: hostname, markers from the
image and from the system/runtime overlays, the kernel command line. A node that misses its deadline fails
the test with its console log (tests/helpers/qemu_nodes.py).
"""
import pathlib
import re
import socket
import subprocess
import time

import pytest

from helpers.cluster import Cluster, boot_of, booted_requests
from helpers.netns import PrivateNet
from helpers.qemu_nodes import NodeGroup, NodeTimeout, QemuNode
from wwfast.builder import demo_image, ipxe

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

STAGE_ORDER = ("ipxe", "kernel", "image", "system", "runtime")
KERNEL_ARGS = ["console=ttyS0", "quiet", "panic=-1", "wwfast.e2e=yes"]
BOOT_TIMEOUT = 180
SLOW_LINK_MS = 30    # image download ~15 s: the publish (a few s) lands inside it
IMAGE = "e2e"

ZST_NODES = {"e2e-z1": "52:54:00:e2:00:01", "e2e-z2": "52:54:00:e2:00:02", "e2e-z3": "52:54:00:e2:00:03"}
GZ_NODE = ("e2e-gz1", "52:54:00:e2:00:04")
KEY_GOOD = ("e2e-key1", "52:54:00:e2:00:05", "tag-good-5")
KEY_BAD = ("e2e-key2", "52:54:00:e2:00:06", "tag-right-6")
UNKNOWN_MAC = "52:54:00:e2:00:99"
# Issue 11: a node with an InfiniBand device (20-octet hwaddr) is defined, built, published and booted by
# its Ethernet MAC, and never makes serve refuse the manifest.
IB_NODE = "e2e-z3"
IB_DEVICE = ("80:00:02:08:fe:80:00:00:00:00:00:00:00:02:c9:03:00:e2:00:03", "10.10.0.3")
SECURE_NODE = ("e2e-s1", "52:54:00:e2:01:01", "192.168.77.101")


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write(path, text):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def settings_yaml(address, http_port, tftp_port, bind, secure, tftp=True):
    return f"""ipaddr: {address}
netmask: 255.255.255.0
warewulf:
  port: {http_port}
  bind: {bind}
  secure: {"true" if secure else "false"}
  update interval: 3
tftp:
  enabled: {"true" if tftp else "false"}
  port: {tftp_port}
  bind: {bind}
  tftproot: /usr/lib/ipxe
compression:
  zstd level: 3
  gzip: true
  threads: 0
"""


def node_yaml(node_id, mac, ipaddr, extra="", ib=None):
    """One node; `ib` (hwaddr, ipaddr) adds an InfiniBand device beside its Ethernet one."""
    ib_dev = (f"""      ib0:
        type: infiniband
        device: ib0
        hwaddr: "{ib[0]}"
        ipaddr: {ib[1]}
""" if ib else "")
    return f"""  {node_id}:
    profiles: [default]
{extra}    network devices:
      default:
        hwaddr: "{mac}"
        ipaddr: {ipaddr}
""" + ib_dev


def nodes_yaml(nodes, gateway):
    gateway_line = f"        gateway: {gateway}\n" if gateway else ""
    return f"""nodeprofiles:
  default:
    image name: {IMAGE}
    kernel:
      args: [{", ".join(KERNEL_ARGS)}]
    system overlay: [wwinit, hostname, e2e-system]
    runtime overlay: [e2e-runtime]
    init: /sbin/init
    network devices:
      default:
        device: eth0
        netmask: 255.255.255.0
{gateway_line}nodes:
""" + "".join(nodes)


def set_generation(conf, generation):
    """The system and runtime overlays carry a generation label (the image carries its own)."""
    write(conf / "overlays/e2e-system/etc/wwfast-markers/system.j2",
          f"system overlay of {{{{ node.id }}}} generation {generation}\n")
    write(conf / "overlays/e2e-runtime/etc/wwfast-markers/runtime.j2",
          f"runtime overlay of {{{{ node.id }}}} generation {generation}\n")


def generation_of(text):
    m = re.search(r"generation (\w+)", text or "")
    return m.group(1) if m else None


def gz_template(conf):
    """A site iPXE template `gz`: the built-in default one, asking for ?compress=gz on every archive."""
    default = (ipxe.BUILTIN_DIR / "default.ipxe").read_text()
    lines = []
    for line in default.splitlines(keepends=True):
        if line.lstrip().startswith("initrd ") and "?${query}" in line:
            line = line.replace("?${query}", "?${query}&compress=gz")
        lines.append(line)
    text = "".join(lines)
    assert text.count("compress=gz") >= 2, "the default iPXE template changed shape: fix gz_template()"
    write(conf / "ipxe" / "gz.ipxe", text)


@pytest.fixture(scope="module")
def demo_tree(tmp_path_factory, kernel_path, kernel_modules):
    root = tmp_path_factory.mktemp("image")
    trees = {}
    for generation in ("A", "B"):
        tree = root / f"tree-{generation}"
        demo_image.make_demo_image(tree, kernel_path, kernel_modules, marker=f"image generation {generation}")
        trees[generation] = tree
    return trees


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, demo_tree):
    """The user-mode cluster: one serve for every user-mode test in this module."""
    base = tmp_path_factory.mktemp("cluster")
    conf, state = base / "conf", base / "state"
    http_port, tftp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    write(conf / "wwfast.yaml", settings_yaml("10.0.2.2", http_port, tftp_port, "127.0.0.1", secure=False))
    nodes = [node_yaml(n, mac, f"10.0.2.{30 + i}", ib=IB_DEVICE if n == IB_NODE else None)
             for i, (n, mac) in enumerate(ZST_NODES.items())]
    nodes.append(node_yaml(GZ_NODE[0], GZ_NODE[1], "10.0.2.34", "    ipxe template: gz\n"))
    nodes.append(node_yaml(KEY_GOOD[0], KEY_GOOD[1], "10.0.2.35", f"    asset key: {KEY_GOOD[2]}\n"))
    nodes.append(node_yaml(KEY_BAD[0], KEY_BAD[1], "10.0.2.36", f"    asset key: {KEY_BAD[2]}\n"))
    write(conf / "nodes.yaml", nodes_yaml(nodes, "10.0.2.2"))
    set_generation(conf, "A")
    gz_template(conf)
    c = Cluster(conf, state, http_port=http_port)
    c.tftp_port = tftp_port
    c.import_image(demo_tree["A"], IMAGE)
    c.publish()
    c.start_serve()
    try:
        yield c
    finally:
        c.stop_serve()


def user_node(cluster, name, mac, asset=None, slow_ms=0):
    """A node on QEMU's user-mode net; `slow_ms` holds its packets that long (a slow link: longer fetches)."""
    extra = ["-object", f"filter-buffer,id=slow,netdev=n0,interval={slow_ms * 1000}"] if slow_ms else []
    return QemuNode(name, mac, cluster.state / "consoles",
                    bootfile=f"tftp://10.0.2.2:{cluster.tftp_port}/${{mac:hexhyp}}.ipxe", asset=asset,
                    extra_args=extra)


def assert_node_report(name, report, generation=None):
    assert report["hostname"] == name, report
    runtime = report["markers"].get("runtime", "")
    assert f"runtime overlay of {name} " in runtime, report
    assert f"system overlay of {name} " in report["markers"].get("system", ""), report
    assert report["markers"].get("image", "").startswith("image generation"), report
    cmdline = report["cmdline"].split()
    assert all(arg in cmdline for arg in KERNEL_ARGS), report
    if generation:
        assert generation_of(report["markers"]["system"]) == generation, report


@pytest.fixture(scope="module")
def first_boot(cluster):
    """Boot at once: three zst nodes, a gz node, a node with its asset key, one with a wrong asset tag,
    and an undefined MAC. Returns the reports of the nodes that booted, the group, and the boot records
    serve kept of those nodes (read once they booted: a node prints its marker only after its runtime
    overlay arrived, and serve records a transfer's end before the node can read its last byte)."""
    nodes = [user_node(cluster, n, mac) for n, mac in ZST_NODES.items()]
    nodes.append(user_node(cluster, *GZ_NODE))
    nodes.append(user_node(cluster, KEY_GOOD[0], KEY_GOOD[1], asset=KEY_GOOD[2]))
    refused = user_node(cluster, KEY_BAD[0], KEY_BAD[1], asset="tag-wrong")
    unknown = user_node(cluster, "unknown", UNKNOWN_MAC)
    booting = nodes[:]
    with NodeGroup(nodes + [refused, unknown]) as group:
        reports = group.wait_booted(BOOT_TIMEOUT, nodes=booting)
        records = {node.name: cluster.boot_record(node.name) for node in booting}
        yield {"reports": reports, "group": group, "records": records, "refused": refused,
               "unknown": unknown, "status": cluster.status()}


@pytest.mark.twin
def test_three_nodes_boot_at_once_each_with_its_own_hostname_and_markers(first_boot):
    reports = first_boot["reports"]
    for name in ZST_NODES:
        assert_node_report(name, reports[name], generation="A")
    assert len({reports[n]["hostname"] for n in ZST_NODES}) == 3


def test_a_node_with_an_infiniband_device_boots_by_its_ethernet_mac(first_boot, cluster):
    assert_node_report(IB_NODE, first_boot["reports"][IB_NODE], generation="A")
    assert IB_DEVICE[0] in cluster.manifest()["nodes"][IB_NODE]["macs"]
    assert first_boot["status"]["unserved"] == {}


def test_boot_records_show_each_nodes_stages_in_order(first_boot, cluster):
    """Every step of each boot is in serve's record: the script over TFTP, then kernel, image and overlays
    over HTTP, each whole (bytes sent = length), one generation, and the boot's start and end."""
    for name in list(ZST_NODES) + [GZ_NODE[0], KEY_GOOD[0]]:
        record = first_boot["records"][name]
        boot = record["boot"]
        done = booted_requests(boot)
        assert [r["stage"] for r in done] == list(STAGE_ORDER), (name, boot)
        assert [r["protocol"] for r in done] == ["tftp"] + ["http"] * 4, (name, boot)
        assert all(r["bytes"] == r["length"] > 0 and r["client"] == "127.0.0.1" for r in done), (name, boot)
        assert {r["generation"] for r in done} == {boot["generation"]}, (name, boot)
        assert boot["start"] == done[0]["start"] and boot["end"] == done[-1]["end"] > boot["start"], (name, boot)
        assert (record["boot start"], record["boot end"]) == (boot["start"], boot["end"]), record
    # each node's first step, its script by MAC over TFTP, counts in /metrics too
    fetched = cluster.metrics().get('wwfast_tftp_requests_total{stage="ipxe",result="ok"}', 0)
    assert fetched >= len(ZST_NODES) + 2, fetched


def test_both_encodings_boot(first_boot):
    records = first_boot["records"]
    assert_node_report(GZ_NODE[0], first_boot["reports"][GZ_NODE[0]])
    gz = [(r["encoding"], r["file"]) for r in booted_requests(records[GZ_NODE[0]]["boot"])
          if r["stage"] in ("image", "system", "runtime")]
    assert len(gz) == 3 and all(enc == "gz" and f.endswith(".cpio.gz") for enc, f in gz), gz
    for name in ZST_NODES:
        zst = [(r["encoding"], r["file"]) for r in booted_requests(records[name]["boot"])
               if r["stage"] in ("image", "system", "runtime")]
        assert len(zst) == 3 and all(enc == "zst" and f.endswith(".cpio.zst") for enc, f in zst), zst


def test_asset_key_right_boots_wrong_is_refused(first_boot, cluster):
    assert_node_report(KEY_GOOD[0], first_boot["reports"][KEY_GOOD[0]])
    refused = first_boot["refused"]
    # iPXE shows the 401 as "Permission denied" on the kernel fetch, retries, and never boots.
    first_boot["group"].wait_for("Permission denied", 60, nodes=[refused])
    assert "WWFAST-NODE" not in refused.console()
    # the console showed the 401, so serve had recorded the refusal before answering it
    requests = cluster.boot_record(KEY_BAD[0])["boot"]["requests"]
    kernel = [(r["result"], r["reason"], r["code"]) for r in requests if r["stage"] == "kernel"]
    assert kernel and set(kernel) == {("refused", "BAD_ASSET", 401)}, requests
    first_boot["group"].assert_never_shows("WWFAST-NODE", 3, nodes=[refused])
    code, _ = cluster.get(f"/kernel/{KEY_BAD[1]}?assetkey=tag-wrong")
    assert code == 401


def test_unknown_mac_gets_the_unknown_node_script(first_boot, cluster):
    code, script = cluster.get(f"/ipxe/{UNKNOWN_MAC}")
    assert code == 200
    echoes = [line.split(None, 1)[1] for line in script.decode().splitlines()
              if line.startswith("echo ") and "$" not in line and len(line.split(None, 1)) == 2]
    assert echoes, script
    unknown = first_boot["unknown"]
    first_boot["group"].wait_for(echoes[0].strip(), 60, nodes=[unknown])
    assert "WWFAST-NODE" not in unknown.console()


def test_missed_deadline_fails_with_the_console_log(first_boot):
    """The harness itself: a node that never reaches its marker fails with its console in the message."""
    unknown = first_boot["unknown"]
    with pytest.raises(NodeTimeout) as info:
        first_boot["group"].wait_booted(2, nodes=[unknown])
    message = str(info.value)
    assert unknown.mac in message and "iPXE" in message and str(unknown.log_path) in message


def asked_for_image(cluster, name, since):
    """Whether the node's boot started after `since` has an image request in serve's record."""
    boot = boot_of(cluster.boot_record(name), since)
    return bool(boot) and any(r["stage"] == "image" for r in boot["requests"])


def serving(cluster, generation):
    code, body = cluster.get("/healthz")
    return code == 200 and f"generation={generation}".encode() in body


def test_publish_while_nodes_boot_gives_each_a_whole_consistent_set(cluster, first_boot, demo_tree):
    """Generation B (a new image version and both overlays) is published by the real stages while three
    nodes on slow links are fetching generation A: each node must boot one whole set."""
    first_boot["group"].stop()          # the refused and unknown nodes retry forever: free the CPU
    before = cluster.manifest()["generation"]
    cluster.import_image(demo_tree["B"], IMAGE)
    set_generation(cluster.conf, "B")
    nodes = [user_node(cluster, n, mac, slow_ms=SLOW_LINK_MS) for n, mac in ZST_NODES.items()]
    launched = time.time()
    with NodeGroup(nodes) as group:
        deadline = time.monotonic() + BOOT_TIMEOUT
        # Publish once every node asked for its image (a request serve recorded and keeps, so this waits
        # for a fact, not a passing state): the long image download is the window.
        while not all(asked_for_image(cluster, n, launched) for n in ZST_NODES):
            if time.monotonic() > deadline:
                group.wait_booted(0)    # fails with the consoles
            time.sleep(0.1)
        cluster.publish()
        after = cluster.manifest()["generation"]
        while not serving(cluster, after):
            assert time.monotonic() < deadline, "serve never switched to the new manifest"
            time.sleep(0.1)
        swapped = time.time()           # serve answered from the new manifest by then
        reports = group.wait_booted(BOOT_TIMEOUT)
    assert after != before
    boots = {n: booted_requests(boot_of(cluster.boot_record(n), launched)) for n in ZST_NODES}
    for name, done in boots.items():
        # the whole boot came from the generation its script came from, though B went live during it
        assert [r["stage"] for r in done] == list(STAGE_ORDER), (name, done)
        assert {r["generation"] for r in done} == {before}, (name, done)
    # Not vacuous: a node asked for the rest of its boot after serve switched to the new manifest.
    straddled = [n for n, done in boots.items() if done[-1]["start"] > swapped]
    assert straddled, f"the publish did not land mid-boot: {boots}"
    for name in ZST_NODES:
        markers = reports[name]["markers"]
        assert_node_report(name, reports[name])
        image_gen = generation_of(markers["image"])
        system_gen = generation_of(markers["system"])
        runtime_gen = generation_of(markers["runtime"])
        assert image_gen == system_gen, (name, markers, boots[name])
        # The node agent may legitimately bring a newer runtime overlay after boot, never an older one.
        assert runtime_gen >= system_gen, (name, markers, boots[name])


@pytest.fixture(scope="module")
def secure_cluster(tmp_path_factory, demo_tree):
    base = tmp_path_factory.mktemp("secure")
    conf, state = base / "conf", base / "state"
    http_port = 9873
    name, mac, ipaddr = SECURE_NODE
    write(conf / "wwfast.yaml", settings_yaml("192.168.77.1", http_port, 6969, "0.0.0.0", secure=True, tftp=False))
    write(conf / "nodes.yaml", nodes_yaml([node_yaml(name, mac, ipaddr)], None))
    set_generation(conf, "S")
    with PrivateNet(base / "net", http_port, hosts=[(mac, ipaddr)]) as net:
        c = Cluster(conf, state, http_host="192.168.77.1", http_port=http_port, netns=net.name)
        c.net = net
        c.import_image(demo_tree["A"], IMAGE)
        c.publish()
        c.start_serve()
        try:
            yield c
        finally:
            c.stop_serve()


def test_secure_mode_runtime_overlay_reaches_the_node_through_the_agent(secure_cluster):
    """Real L2 (netns, bridge, tap, dnsmasq; DHCP gives iPXE the HTTP URL): in secure mode iPXE cannot fetch
    the runtime overlay (no privileged source port), the node agent's fetch (port < 1024) is served, and the
    marker reaches the console."""
    name, mac, ipaddr = SECURE_NODE
    node = QemuNode(name, mac, secure_cluster.state / "consoles", netns=secure_cluster.net.name, tap="tap0")
    with NodeGroup([node]) as group:
        try:
            reports = group.wait_booted(BOOT_TIMEOUT)
        except NodeTimeout as e:
            raise NodeTimeout(f"{e}\n--- dnsmasq:\n{secure_cluster.net.dnsmasq_output()[-2000:]}\n--- serve:\n"
                              f"{secure_cluster.serve_output()}") from None
    assert_node_report(name, reports[name], generation="S")
    # Serve's record of the boot: script, kernel, image and system overlay over HTTP; iPXE got no runtime
    # overlay (it cannot use a privileged port: refused, if asked); the agent's gz fetch was served.
    requests = secure_cluster.boot_record(name)["boot"]["requests"]
    done = booted_requests({"requests": requests})
    assert [r["stage"] for r in done] == list(STAGE_ORDER), requests
    assert all(r["bytes"] == r["length"] > 0 and r["client"] == ipaddr for r in done), requests
    first_runtime = requests.index(done[-1])
    assert all((r["result"], r["reason"]) == ("refused", "BAD_PORT")
               for r in requests[:first_runtime] if r["stage"] == "runtime"), requests
    assert done[-1]["encoding"] == "gz" and done[-1]["file"].endswith(".cpio.gz"), requests
    # The rule itself, from the node's own address now that the node is off: port >= 1024 refused.
    net = secure_cluster.net
    subprocess.run(net.exec_args() + ["ip", "addr", "add", f"{ipaddr}/32", "dev", "br0"], check=True)
    url = f"http://192.168.77.1:{secure_cluster.http_port}/runtime/{mac}"

    def code_from(ports):
        out = subprocess.run(net.exec_args() + ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                "--interface", ipaddr, "--local-port", ports, url],
                             capture_output=True, text=True, timeout=30)
        return out.stdout
    assert code_from("20000-20100") == "403"
    assert code_from("700-1023") == "200"
