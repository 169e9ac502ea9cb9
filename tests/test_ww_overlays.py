"""Warewulf's built-in overlays under Warewulf's names: every file each renders for nodes with static and
DHCP addressing, IPv6, two NICs, a bond, a VLAN, InfiniBand and local disks, against checked-in goldens
(tests/golden/warewulf/<overlay>.txt; WWFAST_UPDATE_GOLDEN=1 rewrites them), plus the facts that matter
spelled out (NetworkManager keyfiles, ifcfg, networkd, netplan, naming by MAC, the fstab fix).
"""
import os
import pathlib
import re

import pytest

from helpers.ww_nodes import disk_node, node_docs, nodes
from wwfast.builder import overlays
from wwfast.builder.render import Renderer
from wwfast.builder.template_views import node_view
from wwfast.define.settings import Settings, load as load_settings

GOLDEN = pathlib.Path(__file__).parent / "golden" / "warewulf"
UPDATE = os.environ.get("WWFAST_UPDATE_GOLDEN") == "1"
WARENAME_OVERLAYS = ["NetworkManager", "ifcfg", "ifupdown", "systemd.networkd", "netplan", "wicked", "udev.netname",
                     "systemd.netname", "chrony", "localtime", "syncuser", "wwclient", "ignition", "sfdisk", "mkfs",
                     "mkswap", "systemd.mount", "systemd.swap", "debug", "mig"]
# The same overlays under Warewulf's other names.
ALIASES = {"debian.interfaces": "ifupdown", "wwclient.x86_64": "wwclient", "wwclient.aarch64": "wwclient"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    conf = tmp_path_factory.mktemp("conf")
    state = tmp_path_factory.mktemp("state")
    etc = tmp_path_factory.mktemp("etc")  # the server's /etc for syncuser (paths: sysconfdir)
    (etc / "passwd").write_text("carol:x:4000:4000::/home/carol:/bin/sh\n")
    (etc / "group").write_text("carol:x:4000:\n")
    (conf / "warewulf.conf").write_text(f"ipaddr: 10.0.2.2\nnetmask: 255.255.255.0\nwarewulf:\n  port: 9873\n"
                                        f"paths:\n  sysconfdir: {etc}\n")
    image = state / "images" / "rocky" / "rootfs" / "etc"
    image.mkdir(parents=True)
    (image / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\nalice:x:1999:1999::/x:/bin/sh\n")
    (image / "group").write_text("root:x:0:\n")
    settings = load_settings(str(conf))
    all_nodes = dict(nodes(), **{"n-disk": disk_node()})
    # the server's own zone for ImportLink (localtime without the tag)
    return conf, state, settings, all_nodes


def render_overlay(env, name):
    """Listing of every file the overlay gives each node: '=== <node> <mode> <path>' + content."""
    conf, state, settings, all_nodes = env
    renderer = Renderer(settings, all_nodes, str(conf), str(state))
    tree = overlays.overlay_tree(str(conf), name)
    out = []
    for node_id in sorted(all_nodes):
        view = node_view(all_nodes[node_id])
        for e in overlays.walk(tree, keep_owners=False):
            if e.kind == "dir":
                continue
            if e.kind == "template":
                files, _ = renderer.render(e.source, e.rel, view, name, e.mode, e.uid, e.gid)
            elif e.kind == "symlink":
                files = [type("F", (), {"rel": e.rel, "mode": 0o777, "target": e.target, "data": b""})]
            else:
                files = [type("F", (), {"rel": e.rel, "mode": e.mode, "target": None,
                                        "data": pathlib.Path(e.source).read_bytes()})]
            for f in files:
                if f.target is not None:
                    out.append(f"=== {node_id} link /{f.rel} -> {_stable(f.target)}\n")
                else:
                    out.append(f"=== {node_id} {f.mode:04o} /{f.rel}\n{f.data.decode()}\n")
    text = "".join(out)
    # the build host, time and template path differ between machines and runs
    text = re.sub(r"^(- Build(Host|Time|TimeUnix|Source)): .*$", r"\1: <varies>", text, flags=re.M)
    return re.sub(r"Sysconfdir=\S+", "Sysconfdir=<etc>", text)


def _stable(target):
    """ImportLink resolves the server's /etc/localtime: keep goldens machine independent."""
    return "<server zone>" if target.startswith("/usr/share/zoneinfo/") and "Europe/Paris" not in target else target


@pytest.mark.parametrize("name", WARENAME_OVERLAYS)
def test_golden(env, name):
    text = render_overlay(env, name)
    golden = GOLDEN / f"{name}.txt"
    if UPDATE:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"no golden for {name} (WWFAST_UPDATE_GOLDEN=1 to write it)"
    assert text == golden.read_text()


@pytest.mark.parametrize("alias,name", sorted(ALIASES.items()))
def test_other_names_give_the_same_files(env, alias, name):
    assert render_overlay(env, alias) == render_overlay(env, name)


def files_of(env, overlay, node_id):
    text = render_overlay(env, overlay)
    chunks = {}
    for block in text.split("=== ")[1:]:
        head, _, body = block.partition("\n")
        nid, mode, path = head.split(" ", 2)
        if nid == node_id:
            chunks[path] = (mode, body[:-1])
    return chunks


def test_networkmanager_keyfiles(env):
    bond = files_of(env, "NetworkManager", "n-bond")
    mode, text = bond["/etc/NetworkManager/system-connections/warewulf-bond0.conf"]
    assert mode == "0600"  # NetworkManager ignores keyfiles others can read
    assert "type=bond\nautoconnect=true\n[bond]\ndowndelay=0\nmiimon=200\nmode=active-backup\n" in text
    assert "[ipv4]\nmethod=manual\naddress=10.0.3.41/24\ngateway=10.0.3.1\ndns=10.0.3.1;\n" in text
    _, member = bond["/etc/NetworkManager/system-connections/warewulf-bond0m1.conf"]
    assert "master=bond0\nslave-type=bond\n" in member and "[ipv4]\nmethod=disabled" in member
    assert "[ipv6]\nmethod=disabled" in member and "mac-address=52:54:00:00:00:31" in member
    _, unmanaged = bond["/etc/NetworkManager/conf.d/warewulf-unmanaged.conf"]
    assert "unmanaged-devices=except:interface-name:bond0,except:mac:52:54:00:00:00:31," in unmanaged
    _, vlan = files_of(env, "NetworkManager", "n-vlan")["/etc/NetworkManager/system-connections/warewulf-vlan42.conf"]
    assert "type=vlan\n" in vlan and vlan.endswith("[vlan]\ninterface-name=eth0.42\nparent=eth0\nid=42\n")
    _, ib = files_of(env, "NetworkManager", "n-ib")["/etc/NetworkManager/system-connections/warewulf-ib.conf"]
    assert "type=infiniband\nautoconnect=true\n[infiniband]\ntransport-mode=datagram\nmtu=65520\n" in ib
    _, v6 = files_of(env, "NetworkManager", "n-two")["/etc/NetworkManager/system-connections/warewulf-default.conf"]
    assert "addr-gen-mode=eui64\nmethod=manual\naddresses=fd00:10::31/64\ngateway=fd00:10::1" in v6
    _, static = files_of(env, "NetworkManager", "n-static")[
        "/etc/NetworkManager/system-connections/warewulf-default.conf"]
    assert "route1=192.168.50.0/24,10.0.2.254\ndns=10.0.2.3;1.1.1.1;\ndns-search=example.com;cluster.local;" in static
    _, dhcp = files_of(env, "NetworkManager", "n-dhcp")["/etc/NetworkManager/system-connections/warewulf-default.conf"]
    assert "[ipv4]\nmethod=disabled" in dhcp  # as Warewulf: no address, no IPv4 from this file


def test_ifcfg_networkd_netplan(env):
    ifcfg = files_of(env, "ifcfg", "n-two")
    _, storage = ifcfg["/etc/sysconfig/network-scripts/ifcfg-storage.conf"]
    assert "TYPE=Ethernet\nDEVICE=eno2\nNAME=storage\nMTU=9000\n" in storage and "ONBOOT=false" in storage
    assert ifcfg["/etc/sysconfig/network"][1] == "NETWORKING=yes\nHOSTNAME=n-two\n"
    _, route = files_of(env, "ifcfg", "n-static")["/etc/sysconfig/network-scripts/route-default.conf"]
    assert route == "# This file is autogenerated by warewulf\n192.168.50.0/24 via 10.0.2.254\n"
    _, net = files_of(env, "systemd.networkd", "n-two")["/etc/systemd/network/10-ww4-networkd-default.network"]
    assert "[Network]\nDHCP=no\nAddress=10.0.2.31/24\nGateway=10.0.2.2\nIPv6AcceptRA=no\n" in net
    assert net.endswith("[DHCPv6]\nDUIDType=link-layer\n")
    _, plan = files_of(env, "netplan", "n-bond")["/etc/netplan/warewulf.yaml"]
    assert "  bonds:\n    bond0:\n      dhcp4: no\n      optional: true\n      addresses:\n      - 10.0.3.41/24\n" in plan
    assert "parameters:\n        mode: active-backup\n        mii-monitor-interval: 200\n" \
           "      interfaces:\n      - ens1f0\n      - ens1f1" in plan


def test_naming_by_mac(env):
    _, rules = files_of(env, "udev.netname", "n-ib")["/etc/udev/rules.d/70-persistent-net.rules"]
    assert 'ATTR{address}=="?*00:00:10:49:fe:80:00:00:00:00:00:00:f4:52:14:03:00:8d:50:61", NAME="ib0"' in rules
    assert 'ATTR{address}=="52:54:00:00:00:51", NAME="eth0"' in rules
    link = files_of(env, "systemd.netname", "n-two")["/etc/systemd/network/10-ww4-netname-storage.link"][1]
    assert link == "# This file is autogenerated by warewulf\n[Match]\nMACAddress=52:54:00:00:00:12\n[Link]\nName=eno2\n"


def test_storage_and_users(env):
    disk = files_of(env, "systemd.mount", "n-disk")
    assert disk["/etc/systemd/system/scratch.mount"][1].count("Options=defaults,noatime") == 1
    assert "link" in [m for m, _ in files_of(env, "systemd.swap", "n-disk").values()]
    assert files_of(env, "systemd.mount", "n-static") == {}  # aborts: no file systems
    passwd = files_of(env, "syncuser", "n-disk")["/etc/passwd"][1]
    # PasswordlessRoot first; the image's root then loses to it, alice of the image wins over resources
    assert passwd.splitlines() == ["root::0:0:root:/root:/bin/bash", "alice:x:1999:1999::/x:/bin/sh",
                                   "carol:x:4000:4000::/home/carol:/bin/sh"]
    group = files_of(env, "syncuser", "n-disk")["/etc/group"][1]
    assert "lab:x:3000:alice" in group and "alice:x:2000:" in group
    ign = files_of(env, "ignition", "n-disk")["/warewulf/ignition.json"][1]
    assert ign.startswith('{"ignition":{"version":"3.1.0"},"storage":{"disks":[{"device":"/dev/vda"')


def test_fstab_keeps_mount_options(tmp_path):
    """The fstab overlay reads the node's mount_options (the key define stores), noauto first."""
    conf, state = tmp_path / "conf", tmp_path / "state"
    conf.mkdir()
    n = disk_node()
    renderer = Renderer(Settings(), {"n-disk": n}, str(conf), str(state))
    tree = overlays.overlay_tree(str(conf), "fstab")
    entry = next(e for e in overlays.walk(tree) if e.kind == "template")
    files, _ = renderer.render(entry.source, entry.rel, node_view(n), "fstab", entry.mode, 0, 0)
    text = files[0].data.decode()
    assert "/dev/disk/by-partlabel/scratch /scratch btrfs noauto,defaults,noatime 0 0\n" in text
    assert "warewulf:/home /home nfs defaults,nofail 0 0\n" in text


def test_overlay_show_takes_warewulfs_file_names_and_prints_only_the_text(tmp_path):
    import json
    import subprocess
    import sys
    conf, state = tmp_path / "conf", tmp_path / "state"
    (state / "define").mkdir(parents=True)
    conf.mkdir()
    (state / "define" / "nodes.json").write_text(json.dumps({"format": 1, "nodes": node_docs()}))
    root = pathlib.Path(__file__).resolve().parent.parent

    def show(*args):
        return subprocess.run([sys.executable, "-m", "wwfast.cli", "--conf", str(conf), "--state", str(state),
                               "overlay", "show", *args], cwd=root, capture_output=True, text=True, timeout=120)
    out = show("NetworkManager", "etc/NetworkManager/system-connections/ww4-managed.ww", "--render", "n-vlan")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("# This file is autogenerated by warewulf\n\n[connection]\nid=default\n")
    assert out.stdout.count("[connection]") == 2 and "id=42" in out.stdout  # both keyfiles, text only
    assert "warewulf-vlan42.conf" in out.stderr  # the file names go to standard error
    quiet = show("NetworkManager", "etc/NetworkManager/system-connections/ww4-managed.ww", "-r", "n-vlan", "-q")
    assert quiet.stderr == "" and quiet.stdout == out.stdout
    raw = show("hostname", "etc/hostname.j2")
    assert raw.returncode == 0 and "node.id" in raw.stdout
    plain = show("ifcfg", "/etc/sysconfig/network.ww", "--render", "n-two")
    assert plain.stdout == "NETWORKING=yes\nHOSTNAME=n-two\n"
