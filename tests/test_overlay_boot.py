"""The Debian kernel in QEMU boots the demo image + a node's system overlay; /init from wwinit loads the
NIC driver, gives eth0 the node's static address, sets the hostname, starts the node agent and execs the
image's init. The runtime overlay is *not* in the initrd (as in secure mode): the node agent fetches it
over HTTP from the host (QEMU user network: 10.0.2.2 is the host's 127.0.0.1) and the demo init, which
waits for the runtime marker, prints it. One boot proves /init, networking and the agent together.
"""
import pathlib

import pytest

from helpers.agent_server import MAC, RuntimeServer
from helpers.overlay_fixtures import make_node, netdev
from helpers.qemu import boot_until
from wwfast import cpio
from wwfast.builder import demo_image
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.define.settings import Settings

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(300)]


def test_wwinit_boots_the_image_with_the_node_identity(tmp_path, kernel_path, kernel_modules):
    image_root = tmp_path / "images" / "demo" / "rootfs"
    image_root.parent.mkdir(parents=True)
    demo_image.make_demo_image(image_root, kernel_path, kernel_modules, marker="demo image")
    image_cpio = tmp_path / "image.cpio"
    cpio.pack_tree(image_root, image_cpio)

    conf = tmp_path / "conf"
    for context in ("system", "runtime"):
        marker = conf / "overlays" / f"{context}-marker" / "etc" / "wwfast-markers" / f"{context}.j2"
        marker.parent.mkdir(parents=True)
        marker.write_text(f"{context} overlay of {{{{ node.id }}}} from {{{{ server.address }}}}\n")

    with RuntimeServer(b"") as server:
        settings = Settings(address="10.0.2.2", netmask="255.255.255.0", http_port=server.port, secure=False,
                            update_interval=5, digest="qemu-test")
        node = make_node("qnode1", **{
            "image name": "demo",
            "system overlay": ["wwinit", "hostname", "hosts", "network", "issue", "fstab", "system-marker"],
            "runtime overlay": ["hosts", "users", "runtime-marker"],
            "network devices": {"default": netdev(device="eth0", hwaddr=MAC, ipaddr="10.0.2.15",
                                                  netmask="255.255.255.0", gateway="10.0.2.2")}})
        build_overlays(conf, tmp_path, settings, {"qnode1": node})
        server.payload = pathlib.Path(archive_path(tmp_path, "qnode1", "runtime")).read_bytes()
        initrd = tmp_path / "initrd.cpio"  # what the kernel gets from iPXE: the archives one after the other
        initrd.write_bytes(image_cpio.read_bytes() + pathlib.Path(archive_path(tmp_path, "qnode1", "system"))
                           .read_bytes())
        console = boot_until(kernel_path, initrd, "WWFAST-NODE done", timeout=240,
                             append=f"console=ttyS0 panic=-1 wwid={MAC}",
                             extra=["-netdev", "user,id=n0", "-device", f"e1000,netdev=n0,mac={MAC}"])
    print(console)  # shown by pytest when an assertion below fails
    assert "wwinit: node qnode1, image demo" in console
    assert "wwinit network: eth0 10.0.2.15/24 via 10.0.2.2" in console
    assert "wwinit: exec /sbin/init" in console
    assert "WWFAST-NODE hostname qnode1" in console
    assert "WWFAST-NODE marker system system overlay of qnode1 from 10.0.2.2" in console
    assert "WWFAST-NODE marker runtime runtime overlay of qnode1 from 10.0.2.2" in console  # via the agent
    assert f"wwid={MAC}" in console
    assert server.requests and server.requests[0][0].startswith(f"/runtime/{MAC}?compress=gz")
