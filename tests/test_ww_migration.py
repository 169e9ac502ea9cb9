"""Migrating a Warewulf site: old node files (`wwfast upgrade nodes`), keys Warewulf ignores, the define
stage pointing at the upgrade, `wwfast import-warewulf` with site overlays and iPXE templates, and iPXE
templates in Warewulf's language."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from helpers.ww_nodes import node_docs as ww_node_docs
from wwfast.builder import ipxe
from wwfast.define import nodefile, nodes
from wwfast.define.settings import Settings
from wwfast.define.upgrade import upgrade_text
from wwfast.errors import ConfigError
from wwfast.records import Node

ROOT = pathlib.Path(__file__).resolve().parent.parent

OLD = """WW_INTERNAL: 43
# the site's nodes (written by wwctl 4.5)
nodeprofiles:
  default:
    comment: default profile
    container name: rocky-8   # the image every node runs
    kernel args: quiet crashkernel=no
    system overlay: wwinit
    runtime overlay: generic
    keys:
      rack: r1
nodes:
  n1:
    profiles: [default]
    ipmi ipaddr: 10.1.0.1     # the BMC
    ipmi username: admin
    kernel override: /boot/vmlinuz-5.14.0
    ipxe template: dracut
    network devices:
      eth0:
        default: "true"
        ipcidr: 10.0.0.1/24
        ip6addr: fd00::1
        prefix: "24"
        tags: {a: b, c: d}
        tagsdel: [c]
"""


def wwfast(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wwfast.cli", *args], cwd=cwd or ROOT, capture_output=True,
                          text=True, timeout=120)


def test_upgrade_converts_old_keys_and_keeps_comments():
    text, notes = upgrade_text(OLD, replace_overlays=True)
    assert "# the site's nodes (written by wwctl 4.5)" in text
    assert re.search(r"^    image name: rocky-8 +# the image every node runs$", text, re.M), text
    assert re.search(r"^      ipaddr: 10.1.0.1 +# the BMC$", text, re.M), text
    n1 = nodes.resolve(nodefile.parse_config(text, "nodes.yaml"))["n1"]
    assert n1["image name"] == "rocky-8" and n1["kernel"] == {"version": "/boot/vmlinuz-5.14.0",
                                                              "args": ["quiet", "crashkernel=no"]}
    assert n1["ipmi"]["ipaddr"] == "10.1.0.1" and n1["ipmi"]["username"] == "admin"
    assert n1["ipxe template"] == "default" and n1["tags"] == {"rack": "r1", "IPXEMenuEntry": "dracut"}
    dev = n1["network devices"]["eth0"]
    assert (dev["ipaddr"], dev["netmask"], dev["ipaddr6"], dev["tags"]) == ("10.0.0.1", "255.255.255.0", "fd00::1",
                                                                            {"a": "b"})
    assert n1["primary network"] == "eth0"
    assert n1["system overlay"][:3] == ["wwinit", "wwclient", "fstab"] and "NetworkManager" in n1["system overlay"]
    assert n1["runtime overlay"] == ["hosts", "ssh.authorized_keys", "syncuser"]
    assert any("container name -> image name" in n for n in notes)


def test_define_names_the_upgrade_for_old_keys(tmp_path):
    (tmp_path / "nodes.conf").write_text(OLD)
    with pytest.raises(ConfigError) as info:
        nodefile.read_config(str(tmp_path))
    text = str(info.value)
    assert f"{tmp_path}/nodes.conf:6: nodeprofiles.default.container name:" in text
    assert "wwfast upgrade nodes" in text and "network devices.eth0.ipcidr" in text


def test_upgrade_command_rewrites_in_place_and_keeps_the_old_file(tmp_path):
    (tmp_path / "nodes.conf").write_text(OLD)
    out = wwfast("--conf", str(tmp_path), "upgrade", "nodes", "--replace-overlays")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "nodes.conf-old").read_text() == OLD
    assert "image name: rocky-8" in (tmp_path / "nodes.conf").read_text()
    assert "container name -> image name" in out.stdout
    nodes.resolve(nodefile.read_config(str(tmp_path)))  # the result passes define


def test_keys_warewulf_ignores_are_warnings_in_nodes_conf_errors_in_nodes_yaml(tmp_path):
    text = "nodes:\n  n1:\n    ipaddr: 10.0.0.9\n    network devices:\n      default: {device: eth0, bogus: 1}\n"
    (tmp_path / "nodes.conf").write_text(text)
    warnings = []
    resolved = nodes.resolve(nodefile.read_config(str(tmp_path)), warnings=warnings)
    assert resolved["n1"]["network devices"]["default"]["device"] == "eth0"
    assert f'{tmp_path}/nodes.conf:3: nodes.n1.ipaddr: unknown key "ipaddr" ignored' in warnings[0]
    assert "nodes.conf:5: nodes.n1.network devices.default.bogus" in warnings[1]
    (tmp_path / "nodes.conf").rename(tmp_path / "nodes.yaml")
    with pytest.raises(ConfigError, match=r'nodes.yaml:3: nodes.n1.ipaddr: unknown key "ipaddr"'):
        nodefile.read_config(str(tmp_path))


def test_import_warewulf_takes_overlays_and_ipxe_templates(tmp_path):
    etc, lib, conf = tmp_path / "etc", tmp_path / "overlays", tmp_path / "conf"
    (etc / "ipxe").mkdir(parents=True)
    (etc / "nodes.conf").write_text("nodes:\n  n1: {}\n")
    (etc / "ipxe" / "default.ipxe").write_text("#!ipxe\necho stock {{ .Id }}\n")
    (etc / "ipxe" / "mine.ipxe").write_text("#!ipxe\necho mine {{ .Id }}\n")
    (etc / "banner.txt").write_text("hello\n")
    for name in ("site", "host"):
        rootfs = lib / name / "rootfs" / "etc"
        rootfs.mkdir(parents=True)
        (rootfs / "motd.ww").write_text("{{ .Id }}\n")
    os.symlink("motd", lib / "site" / "rootfs" / "etc" / "motd.link")
    out = wwfast("--conf", str(conf), "import-warewulf", str(etc), "--overlays", str(lib))
    assert out.returncode == 0, out.stderr
    assert (conf / "overlays" / "site" / "rootfs" / "etc" / "motd.ww").read_text() == "{{ .Id }}\n"
    assert os.readlink(conf / "overlays" / "site" / "rootfs" / "etc" / "motd.link") == "motd"
    assert not (conf / "overlays" / "host").exists() and not (conf / "ipxe" / "default.ipxe").exists()
    assert (conf / "ipxe" / "mine.ipxe").exists() and (conf / "banner.txt").read_text() == "hello\n"
    lines = out.stdout.splitlines()
    assert any(line.startswith("imported overlay site:") and "1 .ww templates" in line for line in lines)
    assert any(line.startswith("left overlay host:") for line in lines)
    assert any(line.startswith("left iPXE template default.ipxe:") for line in lines)
    again = wwfast("--conf", str(conf), "import-warewulf", str(etc), "--overlays", str(lib))
    assert again.returncode == 1 and "exists" in again.stderr  # nodes.yaml is there: --force replaces


def test_ipxe_templates_in_warewulfs_language(tmp_path):
    conf = tmp_path / "conf"
    (conf / "ipxe").mkdir(parents=True)
    (conf / "ipxe" / "ww.ipxe").write_text(
        "#!ipxe\n{{- /* Warewulf style */}}\nset base http://{{ .Authority }}\n"
        "kernel ${base}/kernel/{{ .Hwaddr }} wwid={{ .Hwaddr }} {{ .KernelArgs }}\n"
        "{{ range $name, $dev := .NetDevs }}echo {{ $name }} {{ $dev.Device }}\n{{ end }}"
        "{{ if not .TLS }}echo runtime{{ end }}\n")
    (conf / "ipxe" / "unconfigured.ipxe").write_text("#!ipxe\necho unconfigured {{ $.Hwaddr }}\n")
    node = Node.from_json(dict(ww_node_docs()["n-static"], **{"ipxe template": "ww"}))
    r = ipxe.IpxeRenderer(str(conf), Settings(address="10.0.2.2", http_port=9873))
    assert r.node_script(node) == ("#!ipxe\nset base http://10.0.2.2:9873\n"
                                   "kernel ${base}/kernel/e6:92:39:49:7b:03 wwid=e6:92:39:49:7b:03 quiet crashkernel=no\n"
                                   "echo default eth0\necho runtime\n")
    assert r.unknown_script() == "#!ipxe\necho unconfigured ${mac}\n"
    assert ipxe.is_go_template("{{ .Id }}") and not ipxe.is_go_template("{{ id }}")
    assert not ipxe.is_go_template("{% if secure %}x{% endif %}")
