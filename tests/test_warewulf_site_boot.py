"""An unmodified Warewulf site, end to end: nodes.conf with Warewulf's default profile, a site overlay
of `.ww` templates (Include, range, if), a site iPXE template in Go's template language and an
init.d script go through define, build and compress; a node boots it in QEMU (iPXE ROM, Debian kernel)
and shows the rendered files and the init.d script's marker on its console.

The site lives in tests/warewulf_site/ as a Warewulf server would have it: etc/warewulf/{nodes.conf,
ipxe/site.ipxe, site-banner.txt} and overlays/site{,-runtime}/rootfs/... (its /var/lib/warewulf/overlays); it is brought
in with `wwfast import-warewulf`. Only wwfast.yaml (ports for this test) is written here.
"""
import pathlib
import shutil
import socket

import pytest

from helpers.cluster import Cluster
from helpers.qemu_nodes import NodeGroup, QemuNode
from wwfast.builder import demo_image

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(600)]

SITE = pathlib.Path(__file__).parent / "warewulf_site"
NODE, MAC = "ww-n1", "52:54:00:77:00:01"


def free_port(kind):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory, kernel_path, kernel_modules):
    base = tmp_path_factory.mktemp("wwsite")
    conf, state = base / "conf", base / "state"
    http_port, tftp_port = free_port(socket.SOCK_STREAM), free_port(socket.SOCK_DGRAM)
    conf.mkdir()
    (conf / "wwfast.yaml").write_text(
        f"ipaddr: 10.0.2.2\nnetmask: 255.255.255.0\nwarewulf:\n  port: {http_port}\n  bind: 127.0.0.1\n"
        f"  secure: false\n  update interval: 5\ntftp:\n  enabled: true\n  port: {tftp_port}\n  bind: 127.0.0.1\n"
        f"  tftproot: /usr/lib/ipxe\n")
    etc = base / "etc-warewulf"
    shutil.copytree(SITE / "etc" / "warewulf", etc)
    c = Cluster(conf, state, http_port=http_port)
    c.tftp_port = tftp_port
    imported = c.wwfast("import-warewulf", str(etc), "--overlays", str(SITE / "overlays"))
    # import-warewulf copies nodes.conf as nodes.yaml; the site's file is the Warewulf one, unchanged
    shutil.copy(etc / "nodes.conf", conf / "nodes.conf")
    (conf / "nodes.yaml").unlink()
    tree = base / "image"
    demo_image.make_demo_image(tree, kernel_path, kernel_modules, marker="warewulf site image")
    c.import_image(tree, "rocky-9")
    published = c.publish()
    c.start_serve()
    try:
        yield c, imported, published
    finally:
        c.stop_serve()


@pytest.fixture(scope="module")
def booted(site):
    cluster = site[0]
    node = QemuNode(NODE, MAC, cluster.state / "consoles",
                    bootfile=f"tftp://10.0.2.2:{cluster.tftp_port}/${{mac:hexhyp}}.ipxe")
    with NodeGroup([node]) as group:
        reports = group.wait_booted(240, nodes=[node])
        return reports[NODE], node.console()


def test_import_and_define_take_the_site_as_it_is(site):
    _, imported, published = site
    assert "imported overlay site:" in imported and "imported overlay site-runtime:" in imported
    assert "imported iPXE template" in imported and "site.ipxe" in imported
    # a key Warewulf's parser ignores is a warning naming file and line, not an error
    assert "nodes.conf:" in published and 'unknown key "ipaddr" ignored' in published


def test_node_boots_with_rendered_site_files_and_init_d_marker(booted):
    report, console = booted
    assert report["hostname"] == NODE, console
    system = report["markers"].get("system", "")
    # the site template: Include of a server file, a range over the network devices, an if on a tag
    assert system.startswith("banner=Welcome to the example cluster"), system
    assert "default:eth0:10.0.2.41/24" in system and "role=compute" in system, system
    assert report["markers"].get("runtime", "") == f"runtime overlay of {NODE}", report
    # the init.d script ran (Warewulf's hook directory) with /warewulf/config, and saw the files the
    # built-in Warewulf overlays rendered on the node
    initd = report["markers"].get("initd", "")
    assert initd.startswith(f"init.d ran on {NODE} image rocky-9"), initd
    for seen in ("nm=warewulf-default.conf", "ifcfg=ifcfg-default.conf", "udev=70-persistent-net.rules",
                 "hosts=yes"):
        assert seen in initd, initd
    # the site iPXE template rendered the node's script
    assert "site iPXE script for ww-n1" in console, console
