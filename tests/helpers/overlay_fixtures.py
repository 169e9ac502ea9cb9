"""Fixture nodes, images and settings for the overlay and iPXE tests (built per docs/formats.md).

Nodes: static IP (n-static), two NICs (n-twonics), a VLAN (n-vlan, primary on the VLAN), no network
(n-nonet). Images: `busybox` (busybox applets only: ifup, no systemd) and `systemd` (merged /usr with
systemd-networkd, NetworkManager and ifupdown), as trees under STATE/images/<name>/rootfs.
"""
import copy
import json
import os
import pathlib

from wwfast.define.settings import Settings
from wwfast.records import Node

SYSTEM = ["wwinit", "hostname", "hosts", "network", "ssh.host_keys", "issue", "resolv", "fstab"]
RUNTIME = ["hosts", "ssh.authorized_keys", "users"]

BLANK_NETDEV = {"device": "", "hwaddr": "", "ipaddr": "", "netmask": "", "gateway": "", "ipaddr6": "",
                "prefixlen6": "", "gateway6": "", "mtu": "", "type": "ethernet", "onboot": True,
                "primary": False, "tags": {}}
BLANK_IPMI = {"username": "", "password": "", "ipaddr": "", "netmask": "", "gateway": "", "port": "",
              "interface": "", "escapechar": "", "write": False, "template": "", "tags": {}}


def netdev(**fields):
    d = copy.deepcopy(BLANK_NETDEV)
    d.update(fields)
    return d


def make_node(node_id, **fields):
    """A records.Node as define writes it (every field set), with `fields` (JSON keys) changed."""
    return Node.from_json(node_doc(node_id, **fields))


def edit_node(node, change):
    """A copy of records.Node `node` after change(its JSON form) (records are frozen)."""
    doc = copy.deepcopy(node.to_json())
    change(doc)
    return Node.from_json(doc)


def node_doc(node_id, **fields):
    """The JSON form of a node in nodes.json, with `fields` changed."""
    node = {
        "id": node_id, "profiles": ["default"], "comment": "", "cluster name": "", "image name": "busybox",
        "ipxe template": "default", "system overlay": list(SYSTEM), "runtime overlay": list(RUNTIME),
        "kernel": {"version": "", "args": ["console=ttyS0", "quiet"]}, "init": "/sbin/init", "root": "initramfs",
        "asset key": "", "discoverable": False, "primary network": "", "network devices": {},
        "ipmi": copy.deepcopy(BLANK_IPMI), "tags": {}, "resources": {}, "disks": {}, "filesystems": {},
    }
    node.update(copy.deepcopy(fields))
    devs = node["network devices"]
    if devs and not any(d.get("primary") for d in devs.values()):
        name = node["primary network"] or sorted(devs)[0]
        devs[name]["primary"] = True
    if devs:
        node["primary network"] = next(n for n, d in devs.items() if d["primary"])
    return node


def fixture_nodes():
    nodes = [
        make_node("n-static", comment="one NIC, static address",
                  **{"cluster name": "alpha",
                     "network devices": {"default": netdev(device="eth0", hwaddr="52:54:00:00:00:01",
                                                           ipaddr="10.0.2.15", netmask="255.255.255.0",
                                                           gateway="10.0.2.2",
                                                           tags={"DNS1": "10.0.2.3", "DNSSEARCH": "cluster.test"})},
                     "resources": {"fstab": [{"spec": "10.0.2.2:/home", "file": "/home"}],
                                   "localusers": ["alice:x:1001:1001::/home/alice:/bin/sh"]},
                     "tags": {"rack": "r1"}}),
        make_node("n-twonics", **{
            "image name": "systemd",
            "kernel": {"version": "6.1", "args": ["console=ttyS0", "net.ifnames=0"]},
            "network devices": {
                "default": netdev(device="eth0", hwaddr="52:54:00:00:00:02", ipaddr="10.0.2.16",
                                  netmask="255.255.255.0", gateway="10.0.2.2", primary=True),
                "data": netdev(device="eth1", hwaddr="52:54:00:00:01:02", ipaddr="10.10.0.16",
                               netmask="255.255.0.0", mtu="9000", ipaddr6="fd00::16", prefixlen6="64",
                               tags={"DNS": "10.10.0.1"}),
            },
            "filesystems": {"/dev/disk/by-partlabel/scratch": {"path": "/scratch", "format": "xfs"}}}),
        make_node("n-vlan", **{
            "image name": "systemd",
            "network devices": {
                "parent": netdev(device="eth0", hwaddr="52:54:00:00:00:03"),
                "vlan100": netdev(device="eth0.100", type="vlan", ipaddr="192.168.100.3", netmask="255.255.255.0",
                                  gateway="192.168.100.1", primary=True,
                                  tags={"vlan_id": "100", "parent_device": "eth0"}),
            }}),
        make_node("n-nonet", **{"asset key": "tag-42", "ipxe template": "default",
                                "kernel": {"version": "", "args": []}}),
    ]
    return {n.id: n for n in nodes}


def fixture_settings(secure=False):
    return Settings(address="10.0.2.2", netmask="255.255.255.0", http_port=9873, secure=secure,
                    update_interval=30, digest=f"fixture-settings-secure={secure}")


def _write(path, text, mode=0o644):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)


def make_images(state_dir):
    """Two small image trees with what the templates look at (users, and which network tools exist)."""
    base = pathlib.Path(state_dir) / "images"
    passwd = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:from image:/home/alice:/bin/sh\n"
    group = "root:x:0:\nusers:x:100:\n"
    bb = base / "busybox" / "rootfs"
    _write(bb / "bin" / "busybox", "", 0o755)
    (bb / "sbin").mkdir(parents=True, exist_ok=True)
    os.symlink("../bin/busybox", bb / "sbin" / "ifup")
    _write(bb / "etc" / "passwd", passwd)
    _write(bb / "etc" / "group", group)
    sd = base / "systemd" / "rootfs"
    for rel in ("usr/lib/systemd/systemd", "usr/lib/systemd/systemd-networkd", "usr/sbin/NetworkManager",
                "usr/sbin/ifup"):
        _write(sd / rel, "", 0o755)
    for link in ("lib", "sbin", "bin"):
        os.symlink(f"usr/{link}", sd / link)
    _write(sd / "etc" / "passwd", passwd.replace("/bin/sh", "/bin/bash"))
    _write(sd / "etc" / "group", group)
    for name in ("busybox", "systemd"):
        set_image_fingerprint(state_dir, name, "v1")


def set_image_fingerprint(state_dir, name, fingerprint):
    path = pathlib.Path(state_dir) / "images" / name / "image.json"
    path.write_text(json.dumps({"source": "fixture", "fingerprint": fingerprint}) + "\n")


def fake_ssh_keys(state_dir):
    """Stand-in key files, so goldens do not change with every generated key (generation is tested apart)."""
    d = pathlib.Path(state_dir) / "ssh"
    d.mkdir(parents=True, exist_ok=True)
    for t in ("ed25519", "ecdsa", "rsa"):
        _write(d / f"ssh_host_{t}_key", f"FIXTURE {t.upper()} PRIVATE KEY\n", 0o600)
        _write(d / f"ssh_host_{t}_key.pub", f"ssh-{t} FIXTUREPUBLIC{t.upper()} wwfast cluster host key\n")
    _write(d / "id_ed25519", "FIXTURE ADMIN PRIVATE KEY\n", 0o600)
    _write(d / "id_ed25519.pub", "ssh-ed25519 FIXTUREADMIN wwfast admin\n")


def listing(blob):
    """A readable, diff-friendly text of a newc archive: one header line per entry, then file contents.

    Several archives back to back (a secure-mode system overlay: its shared part, then the node's) are
    listed as the kernel would leave the tree: one line per path, the last archive's entry winning."""
    from helpers.newc import read_concatenated
    members = {}
    for m in read_concatenated(blob):
        members[m.name] = m
    out = []
    for m in (members[name] for name in sorted(members)):
        kind = {0o040000: "d", 0o100000: "f", 0o120000: "l"}[m.mode & 0o170000]
        head = f"=== {kind} {m.mode & 0o7777:04o} {m.uid}:{m.gid} /{m.name.decode()}"
        if kind == "l":
            out.append(f"{head} -> {m.data.decode()}")
        elif kind == "f":
            out.append(head)
            out.append(m.data.decode("utf-8", "replace") + ("" if m.data.endswith(b"\n") or not m.data else "\n[no newline at end]"))
        else:
            out.append(head)
    return "\n".join(out) + "\n"
