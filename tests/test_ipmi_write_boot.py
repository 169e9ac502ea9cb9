"""`ipmi: write: true`: the node's /init (wwinit) programs the node's own BMC with the image's ipmitool.

The BMC is OpenIPMI's ipmi_sim; QEMU wires it to the guest as a KCS system interface
(`ipmi-bmc-extern` over the simulator's VM serial port), so the guest's /dev/ipmi0 and the simulator's
LAN port are one BMC. Before the boot the node's user and password are refused over the LAN; after
it, `wwfast power status` with the same node fields gets in, and the LAN settings read back as set.
"""
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from helpers.host_binaries import copy_binary
from helpers.ipmi_sim import bmc_sims
from helpers.qemu import boot_until
from wwfast import cpio
from wwfast.builder import demo_image
from wwfast.builder.overlay_build import archive_path, build_overlays
from wwfast.define import nodefile, nodes
from wwfast.define.settings import Settings
from wwfast.records import Node

pytestmark = [pytest.mark.qemu, pytest.mark.timeout(400)]
WWFAST = str(pathlib.Path(sys.executable).with_name("wwfast"))
IPMI_MODULES = ("ipmi_msghandler", "ipmi_devintf", "ipmi_si")
NODE_PASSWORD = "N0de-bmc pw"
INIT = """#!/bin/sh
echo "WWFAST-IPMI-NODE done"
poweroff -f
"""


def add_ipmitool(root, modules_dir):
    """The host's ipmitool with its libraries, and the kernel's IPMI drivers."""
    copy_binary(root, shutil.which("ipmitool"))
    version = modules_dir.name
    for ko in (modules_dir / "kernel" / "drivers" / "char" / "ipmi").glob("*.ko"):
        if ko.stem in IPMI_MODULES:
            dest = root / "lib" / "modules" / version / ko.relative_to(modules_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ko, dest)
    subprocess.run(["/bin/busybox", "depmod", "-b", str(root), version], check=True)
    (root / "sbin" / "init").write_text(INIT)


def ww(conf, *args):
    return subprocess.run([WWFAST, "--conf", str(conf), *args], capture_output=True, text=True, timeout=120)


def test_wwinit_programs_the_nodes_own_bmc(tmp_path, kernel_path, kernel_modules):
    image_root = tmp_path / "images" / "demo" / "rootfs"
    image_root.parent.mkdir(parents=True)
    demo_image.make_demo_image(image_root, kernel_path, kernel_modules)
    add_ipmitool(image_root, kernel_modules)
    image_cpio = tmp_path / "image.cpio"
    cpio.pack_tree(image_root, image_cpio)

    with bmc_sims(tmp_path, ["qnode1"], user="factory", password="factory-pw") as sims:
        sim = sims["qnode1"]
        conf = tmp_path / "conf"
        conf.mkdir()
        (conf / "nodes.yaml").write_text(f"""\
nodes:
  qnode1:
    image name: demo
    system overlay: [wwinit]
    ipmi:
      write: true
      ipaddr: 127.0.0.1
      port: "{sim.port}"
      netmask: 255.255.0.0
      gateway: 127.0.0.254
      username: opsadmin
      password: "{NODE_PASSWORD}"
      tags: {{cipher: "3"}}
""")
        before = ww(conf, "power", "status", "qnode1")
        assert before.returncode == 1 and "unknown user name" in before.stdout, before.stdout

        node = {k: Node.from_json(v) for k, v in nodes.resolve(nodefile.read_config(str(conf))).items()}
        settings = Settings(address="10.0.2.2", http_port=9, secure=False, digest="ipmi-test")
        build_overlays(conf, tmp_path, settings, node)
        system = pathlib.Path(archive_path(tmp_path, "qnode1", "system"))
        listing = subprocess.run(["cpio", "-itv"], stdin=system.open("rb"), capture_output=True, text=True)
        conf_line = next(line for line in listing.stdout.splitlines() if line.endswith("wwinit/ipmi.conf"))
        assert conf_line.startswith("-rw-------")   # it carries the BMC password: root only

        initrd = tmp_path / "initrd.cpio"
        initrd.write_bytes(image_cpio.read_bytes() + system.read_bytes())
        console = boot_until(kernel_path, initrd, "WWFAST-IPMI-NODE done", timeout=300,
                             extra=["-chardev", f"socket,id=bmc,host=127.0.0.1,port={sim.serial_port},reconnect=2",
                                    "-device", "ipmi-bmc-extern,id=bmc0,chardev=bmc",
                                    "-device", "isa-ipmi-kcs,bmc=bmc0"])
        print(console)
        assert "wwinit ipmi: user 2 factory -> opsadmin" in console
        assert "wwinit ipmi: user 2 password set" in console
        assert NODE_PASSWORD not in console

        after = ww(conf, "power", "status", "qnode1")
        assert after.returncode == 0 and "qnode1: Chassis Power is" in after.stdout, after.stdout + after.stderr
        env = dict(os.environ, IPMI_PASSWORD=NODE_PASSWORD)
        lan = subprocess.run(["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(sim.port),
                              "-U", "opsadmin", "-E", "lan", "print", "1"], env=env, capture_output=True, text=True)
        fields = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lan.stdout.splitlines())}
        assert fields["IP Address Source"] == "Static Address"
        assert (fields["IP Address"], fields["Subnet Mask"], fields["Default Gateway IP"]) == \
            ("127.0.0.1", "255.255.0.0", "127.0.0.254")
