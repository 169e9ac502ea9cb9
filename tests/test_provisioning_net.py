"""The provisioning network with real parts: the DHCP configuration `wwfast configure dhcp` writes, run by
dnsmasq and by ISC dhcpd on a bridge in a namespace of this test; wwfast serve bound inside (TFTP on port 69
from a root `wwfast configure tftp` filled, HTTP); busybox udhcpc asking as each client architecture.

With dnsmasq: a BIOS node (SeaBIOS + the e1000's iPXE ROM), a UEFI node (OVMF: its own network stack and PXE,
TFTP of snponly.efi with EDK2's options, then iPXE over HTTP) and an undefined MAC (a dynamic lease and the
unknown-node script) at the same time. With dhcpd, configured for the GRUB chain (warewulf: grubboot): a BIOS
node through iPXE and a UEFI node whose firmware loads GRUB (as shim.efi) by TFTP, GRUB then reading its
node's grub.cfg from serve's /efiboot/grub.cfg (node found by ARP) and booting the kernel and initrds over HTTP.
"""
import ipaddress
import pathlib
import re
import shutil
import subprocess

import pytest

from helpers.cluster import Cluster
from helpers.netns import DHCP_RANGE, SERVER_ADDRESS, PrivateNet
from helpers.qemu_nodes import NodeGroup, NodeTimeout, QemuNode
from wwfast.builder import demo_image

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(900)]

HTTP_PORT = 9873          # inside the test's own namespace: nothing else listens there
BOOT_TIMEOUT = 300
IMAGE = "pn"
RANGE = ("192.168.77.100", "192.168.77.150")
BIOS = ("pn-bios", "52:54:00:77:00:01", "192.168.77.11")
UEFI = ("pn-uefi", "52:54:00:77:00:02", "192.168.77.12")
SPARE = ("pn-spare", "52:54:00:77:00:03", "192.168.77.13")     # defined, never booted: udhcpc uses its MAC
REPAIRED = ("pn-repaired", "52:54:00:77:00:04", "192.168.77.14")   # gets a new NIC (MAC) in the last test
GRUBNODE = ("pn-grub", "52:54:00:77:00:05", "192.168.77.15")      # boots through GRUB (dhcpd test)
GRUB_MODULES = ("normal", "efinet", "net", "http", "tftp", "linux", "echo", "test", "sleep", "reboot", "halt",
                "smbios", "efifwsetup")
UNKNOWN_MAC = "52:54:00:77:00:99"
CLIENT_MAC = "52:54:00:77:00:98"                             # undefined: udhcpc's dynamic-range client
IPXE_URL = (f"http://{SERVER_ADDRESS}:{HTTP_PORT}/ipxe/${{mac:hexhyp}}?assetkey=${{asset:uristring}}"
            f"&uuid=${{uuid}}")
# tftp: ipxe of the test settings: every value the default map has, plus a 32-bit UEFI entry
ARCH_FILES = {0: "undionly.kpxe", 6: "ipxe-ia32.efi", 7: "snponly.efi", 9: "ipxe.efi", 11: "arm64-efi/snponly.efi"}

SETTINGS = f"""\
ipaddr: {SERVER_ADDRESS}
netmask: 255.255.255.0
warewulf:
  port: {HTTP_PORT}
  bind: 0.0.0.0
  secure: false
  update interval: 5
  grubboot: {{grubboot}}
tftp:
  enabled: true
  port: 69
  bind: 0.0.0.0
  tftproot: {{tftproot}}
  ipxe:
{"".join(f'    "00:{arch:02X}": {name}{chr(10)}' for arch, name in ARCH_FILES.items())}\
dhcp:
  enabled: true
  range start: {RANGE[0]}
  range end: {RANGE[1]}
  template: {{template}}
compression:
  gzip: false
"""


def node_entry(name, mac, ipaddr):
    return (f"  {name}:\n    profiles: [default]\n    network devices:\n"
            f"      default: {{hwaddr: \"{mac}\", ipaddr: {ipaddr}}}\n")


NODES = f"""\
nodeprofiles:
  default:
    image name: {IMAGE}
    kernel:
      args: [console=ttyS0, quiet, panic=-1, wwfast.pn=yes]
    system overlay: [wwinit, hostname, pn-system]
    runtime overlay: [pn-runtime]
    primary network: default
    network devices:
      default: {{device: eth0, netmask: 255.255.255.0}}
nodes:
""" + "".join(node_entry(*n) for n in (BIOS, UEFI, SPARE, REPAIRED, GRUBNODE))


def write(path, text):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_conf(conf, template, grubboot, tftproot):
    write(conf / "wwfast.yaml", SETTINGS.format(template=template, grubboot=str(grubboot).lower(), tftproot=tftproot))
    write(conf / "nodes.yaml", NODES)
    write(conf / "overlays/pn-system/etc/wwfast-markers/system.j2", "system overlay of {{ node.id }}\n")
    write(conf / "overlays/pn-runtime/etc/wwfast-markers/runtime.j2", "runtime overlay of {{ node.id }}\n")


@pytest.fixture(scope="module")
def provisioning(tmp_path_factory, kernel_path, kernel_modules):
    """One published cluster (built with grubboot: GRUB configurations too), one namespace with three taps
    and wwfast serve inside, its TFTP root filled by `wwfast configure tftp` plus a GRUB EFI image as
    shim.efi, and the DHCP configurations `wwfast configure dhcp` wrote: dnsmasq for iPXE, dhcpd for the
    GRUB chain (no DHCP server runs yet)."""
    base = tmp_path_factory.mktemp("provisioning")
    tftproot = base / "tftp"
    confs = {"cluster": (base / "conf", "dnsmasq", True), "dnsmasq": (base / "conf-dnsmasq", "dnsmasq", False),
             "dhcpd": (base / "conf-dhcpd", "dhcpd", True), "dhcpd-ipxe": (base / "conf-dhcpd-ipxe", "dhcpd", False)}
    for conf, template, grubboot in confs.values():
        write_conf(conf, template, grubboot, tftproot)
    tree = base / "tree"
    demo_image.make_demo_image(tree, kernel_path, kernel_modules, marker="image of the provisioning test")
    subprocess.run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(base / "grubx64.efi"),
                    "-p", f"(http,{SERVER_ADDRESS}:{HTTP_PORT})/efiboot", *GRUB_MODULES], check=True)
    with PrivateNet(base / "net", taps=("tap0", "tap1", "tap2"), dhcp=None) as net:
        cluster = Cluster(confs["cluster"][0], base / "state", http_host=SERVER_ADDRESS, http_port=HTTP_PORT,
                          netns=net.name)
        cluster.import_image(tree, IMAGE)
        cluster.publish()
        tftp = cluster.wwfast("configure", "tftp")
        shutil.copyfile(base / "grubx64.efi", tftproot / "shim.efi")   # the site's first stage: GRUB itself
        configs = {}
        for kind in ("dnsmasq", "dhcpd", "dhcpd-ipxe"):
            configs[kind] = base / f"{kind}.conf"
            cluster.wwfast("--conf", str(confs[kind][0]), "configure", "dhcp", "--output", str(configs[kind]))
        cluster.start_serve()
        try:
            yield {"net": net, "cluster": cluster, "configs": configs, "base": base, "confs": confs,
                   "tftp": tftp, "tftproot": tftproot}
        finally:
            cluster.stop_serve()


def booting(provisioning, node, tap, firmware):
    name, mac, _ = node
    return QemuNode(name, mac, provisioning["base"] / "consoles", netns=provisioning["net"].name, tap=tap,
                    firmware=firmware, memory=512 if firmware == "uefi" else 256)


def wait_or_explain(group, provisioning, nodes):
    try:
        return group.wait_booted(BOOT_TIMEOUT, nodes=nodes)
    except NodeTimeout as e:
        raise NodeTimeout(f"{e}\n--- DHCP server:\n{provisioning['net'].dhcp_output()[-3000:]}\n--- serve:\n"
                          f"{provisioning['cluster'].serve_output()}") from None


def assert_booted(report, name):
    assert report["hostname"] == name, report
    assert report["markers"].get("system") == f"system overlay of {name}", report
    assert report["markers"].get("runtime") == f"runtime overlay of {name}", report
    assert "wwfast.pn=yes" in report["cmdline"].split(), report


def assert_uefi_path(console):
    """OVMF's own PXE fetched the x86-64 UEFI boot file the configuration names, then iPXE ran on EFI."""
    assert "NBP filename is snponly.efi" in console and "NBP file downloaded successfully" in console, console
    assert re.search(r"Features:.* EFI\b", console), console


def in_range(address):
    return ipaddress.IPv4Address(RANGE[0]) <= ipaddress.IPv4Address(address) <= ipaddress.IPv4Address(RANGE[1])


def unknown_script_line(cluster):
    code, script = cluster.get(f"/ipxe/{UNKNOWN_MAC}")
    assert code == 200, script
    echoes = [line.split(None, 1)[1].strip() for line in script.decode().splitlines()
              if line.startswith("echo ") and "$" not in line and len(line.split(None, 1)) == 2]
    assert echoes, script
    return echoes[0]


def test_bios_and_uefi_nodes_boot_at_once_from_the_generated_dnsmasq_configuration(provisioning):
    net, cluster = provisioning["net"], provisioning["cluster"]
    net.start_dnsmasq(provisioning["configs"]["dnsmasq"])
    net.record_tftp_requests()
    bios, uefi = booting(provisioning, BIOS, "tap0", "bios"), booting(provisioning, UEFI, "tap1", "uefi")
    unknown = QemuNode("pn-unknown", UNKNOWN_MAC, provisioning["base"] / "consoles", netns=net.name, tap="tap2")
    with NodeGroup([uefi, bios, unknown]) as group:
        group.wait_for(unknown_script_line(cluster), BOOT_TIMEOUT, nodes=[unknown])
        unknown.stop()              # its iPXE retries forever: give the CPU to the booting nodes
        reports = wait_or_explain(group, provisioning, [bios, uefi])
    assert "WWFAST-NODE" not in unknown.console()
    assert_booted(reports[BIOS[0]], BIOS[0])
    assert_booted(reports[UEFI[0]], UEFI[0])
    assert_uefi_path(uefi.console())
    # EDK2's own TFTP client asked for the boot file with its options, windowsize among them
    asked = [r for r in net.tftp_requests() if r["mac"] == UEFI[1] and r["file"] == "snponly.efi"]
    assert asked and all(r["client"].startswith(UEFI[2] + ":") for r in asked), net.tftp_requests()
    assert any(int(r["options"].get("windowsize", 1)) > 1 and "blksize" in r["options"] for r in asked), asked
    assert f"tftp: copied {provisioning['tftproot']}/snponly.efi" in provisioning["tftp"]
    acks = net.acks()
    # the static addresses of the generated configuration, for the firmware and for iPXE alike
    assert (BIOS[2], BIOS[1]) in acks and (UEFI[2], UEFI[1]) in acks, acks
    assert {ip for ip, mac in acks if mac in (BIOS[1], UEFI[1])} == {BIOS[2], UEFI[2]}, acks
    unknown_leases = [ip for ip, mac in acks if mac == UNKNOWN_MAC]
    assert unknown_leases and all(in_range(ip) for ip in unknown_leases), acks
    status = cluster.status()["nodes"]
    assert status[BIOS[0]]["ipaddr"] == BIOS[2] and status[UEFI[0]]["ipaddr"] == UEFI[2], status
    served = cluster.metrics()
    assert served.get('wwfast_tftp_requests_total{stage="file",result="ok"}', 0) >= 1, served


def check_architectures(net, server, files=ARCH_FILES):
    """udhcpc as each client architecture, as iPXE, as a defined node and as an undefined machine."""
    for arch, name in files.items():
        got = net.dhcp_client(CLIENT_MAC, arch=arch)
        assert got.get("boot_file") == name, (server, arch, got, net.dhcp_output()[-2000:])
        assert got.get("siaddr") == SERVER_ADDRESS and in_range(got.get("ip", "")), (server, arch, got)
    unmapped = net.dhcp_client(CLIENT_MAC, arch=16)
    assert unmapped.get("ip") and not unmapped.get("boot_file"), (server, unmapped)
    for arch in (0, 7):
        got = net.dhcp_client(CLIENT_MAC, arch=arch, user_class="iPXE")
        assert got.get("boot_file") == IPXE_URL, (server, arch, got)
    node = net.dhcp_client(SPARE[1], arch=0)
    assert (node.get("ip"), node.get("hostname"), node.get("boot_file")) == (SPARE[2], SPARE[0], "undionly.kpxe"), \
        (server, node)


def test_option_93_boot_file_per_architecture_with_dnsmasq(provisioning):
    net = provisioning["net"]
    net.start_dnsmasq(provisioning["configs"]["dnsmasq"])
    check_architectures(net, "dnsmasq")


def test_option_93_boot_file_per_architecture_with_isc_dhcpd(provisioning):
    """Without grubboot, dhcpd sends every architecture its iPXE binary as dnsmasq does (the plain iPXE path)."""
    net = provisioning["net"]
    net.start_dhcpd(provisioning["configs"]["dhcpd-ipxe"])
    check_architectures(net, "dhcpd")


def test_option_93_boot_file_per_architecture_with_isc_dhcpd_for_the_grub_chain(provisioning):
    """grubboot: x86-64 UEFI firmware (7, 9) gets shim.efi, every other architecture its iPXE binary."""
    net = provisioning["net"]
    net.start_dhcpd(provisioning["configs"]["dhcpd"])
    check_architectures(net, "dhcpd", {**ARCH_FILES, 7: "shim.efi", 9: "shim.efi"})


def test_isc_dhcpd_boots_a_bios_node_and_a_uefi_node_through_grub(provisioning):
    net, cluster = provisioning["net"], provisioning["cluster"]
    net.start_dhcpd(provisioning["configs"]["dhcpd"])
    bios, grub = booting(provisioning, BIOS, "tap0", "bios"), booting(provisioning, GRUBNODE, "tap1", "uefi")
    with NodeGroup([grub, bios]) as group:
        reports = wait_or_explain(group, provisioning, [bios, grub])
    assert_booted(reports[BIOS[0]], BIOS[0])
    assert_booted(reports[GRUBNODE[0]], GRUBNODE[0])
    # the BIOS node took the plain iPXE path: its ROM (user class iPXE) got the script URL from dhcpd
    assert f"/ipxe/{BIOS[1].replace(':', '-')}" in bios.console(), bios.console()
    console = grub.console()
    # the firmware's PXE took GRUB from our TFTP root; GRUB read its node's grub.cfg from /efiboot/grub.cfg
    assert "NBP filename is shim.efi" in console and "NBP file downloaded successfully" in console, console
    assert f"wwfast: node {GRUBNODE[0]} (image {IMAGE}) from http://{SERVER_ADDRESS}:{HTTP_PORT}" in console, console
    cmdline = reports[GRUBNODE[0]]["cmdline"].split()
    assert f"wwid={GRUBNODE[1]}" in cmdline and not any(a.startswith("initrd=") for a in cmdline), cmdline
    acks = net.acks()
    assert (BIOS[2], BIOS[1]) in acks and (GRUBNODE[2], GRUBNODE[1]) in acks, acks
    served = cluster.metrics()
    assert served.get('wwfast_http_requests_total{stage="grub",code="200"}', 0) >= 1, served


def test_a_new_mac_reaches_the_dhcp_server_with_one_configure_dhcp(provisioning, tmp_path):
    """A node got a new NIC: one `wwfast configure dhcp` and the server gives the new MAC the node's address
    and name; the old MAC is an unknown machine now (dynamic range). An unchanged cluster rewrites nothing."""
    net, cluster = provisioning["net"], provisioning["cluster"]
    conf = tmp_path / "conf"
    shutil.copytree(provisioning["confs"]["dnsmasq"][0], conf)
    out = provisioning["configs"]["dnsmasq"]
    unchanged = cluster.wwfast("--conf", str(conf), "configure", "dhcp", "--output", str(out))
    assert "unchanged; nothing written" in unchanged
    new_mac = "52:54:00:77:01:04"
    (conf / "nodes.yaml").write_text((conf / "nodes.yaml").read_text().replace(REPAIRED[1], new_mac))
    changed = cluster.wwfast("--conf", str(conf), "configure", "dhcp", "--output", str(out))
    assert f"  +dhcp-host={new_mac},set:wwfast-node,{REPAIRED[2]},{REPAIRED[0]}" in changed.splitlines(), changed
    net.start_dnsmasq(out)
    got = net.dhcp_client(new_mac, arch=0)
    assert (got.get("ip"), got.get("hostname"), got.get("boot_file")) == (REPAIRED[2], REPAIRED[0], "undionly.kpxe")
    old = net.dhcp_client(REPAIRED[1], arch=0)
    assert in_range(old.get("ip", "")), old
