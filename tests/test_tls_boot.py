"""TLS in a QEMU boot: the system overlay carries the server certificate, the node agent (with the image's
curl) fetches the runtime overlay over HTTPS and applies it; the same agent pointed at a server with a
forged certificate for the same address refuses it. Guest 10.0.2.2 is the host's 127.0.0.1.
"""
import io
import pathlib
import shutil

import pytest

from helpers.agent_server import MAC, RuntimeServer
from helpers.host_binaries import copy_binary
from helpers.overlay_fixtures import make_node, netdev
from helpers.qemu import boot_until
from wwfast import cpio
from wwfast.builder import demo_image
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.configure import tls
from wwfast.define.settings import Settings

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(400)]
INIT = """#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
forged=$(sed -n 's/.*forgedport=\\([0-9]*\\).*/\\1/p' /proc/cmdline)
sed "s/^WWTLSPORT=.*/WWTLSPORT=$forged/" /wwinit/config > /tmp/forged.conf
mkdir -p /tmp/forged-root
WWFAST_CONFIG=/tmp/forged.conf WWFAST_ROOT=/tmp/forged-root /wwinit/wwfast-agent --once > /tmp/forged.log 2>&1
echo "WWFAST-TLS forged rc=$? $(tr '\\n' ' ' < /tmp/forged.log)"
i=0
while [ ! -s /etc/tls-marker ] && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
echo "WWFAST-TLS marker $(cat /etc/tls-marker 2>/dev/null)"
echo "WWFAST-TLS done"
poweroff -f
"""


def test_node_agent_gets_the_runtime_overlay_over_https_and_refuses_a_forged_server(tmp_path, kernel_path,
                                                                                 kernel_modules):
    image_root = tmp_path / "images" / "demo" / "rootfs"
    image_root.parent.mkdir(parents=True)
    demo_image.make_demo_image(image_root, kernel_path, kernel_modules)
    copy_binary(image_root, shutil.which("curl"))
    (image_root / "sbin" / "init").write_text(INIT)
    image_cpio = tmp_path / "image.cpio"
    cpio.pack_tree(image_root, image_cpio)

    conf, forged = tmp_path / "conf", tmp_path / "forged"
    for d in (conf, forged):
        d.mkdir()
        tls.generate(str(d), ["10.0.2.2"])
    buf = io.BytesIO()
    w = cpio.NewcWriter(buf)
    w.add_dir("etc")
    w.add_file("etc/tls-marker", b"runtime overlay over https\n")
    w.close()

    with RuntimeServer(buf.getvalue(), ssl_context=tls.server_context(str(conf))) as good, \
            RuntimeServer(buf.getvalue(), ssl_context=tls.server_context(str(forged))) as bad:
        settings = Settings(address="10.0.2.2", netmask="255.255.255.0", http_port=9, secure=False,
                            update_interval=5, tls=True, tls_port=good.port, digest="tls-boot")
        node = make_node("tnode1", **{
            "image name": "demo", "system overlay": ["wwinit", "hostname", "network"], "runtime overlay": [],
            "network devices": {"default": netdev(device="eth0", hwaddr=MAC, ipaddr="10.0.2.15",
                                                  netmask="255.255.255.0", gateway="10.0.2.2")}})
        build_overlays(conf, tmp_path, settings, {"tnode1": node})
        system = pathlib.Path(archive_path(tmp_path, "tnode1", "system"))
        initrd = tmp_path / "initrd.cpio"
        initrd.write_bytes(image_cpio.read_bytes() + system.read_bytes())
        console = boot_until(kernel_path, initrd, "WWFAST-TLS done", timeout=300,
                             append=f"console=ttyS0 panic=-1 wwid={MAC} forgedport={bad.port}",
                             extra=["-netdev", "user,id=n0", "-device", f"e1000,netdev=n0,mac={MAC}"])
    print(console)
    assert "WWFAST-TLS marker runtime overlay over https" in console      # the real server, checked
    forged_line = next(line for line in console.splitlines() if "WWFAST-TLS forged" in line)
    assert "forged rc=1" in forged_line and "certificate" in forged_line
    assert not bad.requests                  # the handshake failed: the forged server never got a request
    assert good.requests and good.requests[0][0].startswith(f"/runtime/{MAC}?compress=gz")
