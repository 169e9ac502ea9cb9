"""Node data for the Warewulf overlay golden tests: nodes.json-shaped nodes covering static and DHCP
addressing, IPv6, two NICs, a bond with two members, a VLAN, InfiniBand, MTU, routes and DNS tags.
node_docs() gives them as nodes.json documents, nodes() and disk_node() as the records.Node the renderer takes."""
from wwfast.records import Node


def dev(**fields):
    base = {"device": "", "hwaddr": "", "ipaddr": "", "netmask": "", "gateway": "", "ipaddr6": "",
            "prefixlen6": "", "gateway6": "", "mtu": "", "type": "ethernet", "onboot": True, "primary": False,
            "tags": {}}
    base.update(fields)
    return base


def node(node_id, devices, primary=None, **fields):
    primary = primary or (min(devices) if devices else "")
    for name, d in devices.items():
        d["primary"] = name == primary
    base = {"id": node_id, "profiles": ["default"], "comment": "", "cluster name": "", "image name": "rocky",
            "ipxe template": "default", "system overlay": [], "runtime overlay": [],
            "kernel": {"version": "", "args": ["quiet", "crashkernel=no"]}, "init": "/sbin/init",
            "root": "initramfs", "asset key": "", "discoverable": False, "primary network": primary,
            "network devices": devices,
            "ipmi": {"username": "", "password": "", "ipaddr": "", "netmask": "", "gateway": "", "port": "",
                     "interface": "", "escapechar": "", "write": False, "template": "", "tags": {}},
            "tags": {}, "resources": {}, "disks": {}, "filesystems": {}}
    base.update(fields)
    return base


def node_docs():
    return {n["id"]: n for n in (
        # one static NIC with DNS, a route and a search list
        node("n-static", {"default": dev(device="eth0", hwaddr="e6:92:39:49:7b:03", ipaddr="10.0.2.21",
                                         netmask="255.255.255.0", gateway="10.0.2.2",
                                         tags={"DNS1": "10.0.2.3", "DNS2": "1.1.1.1",
                                               "DNSSEARCH": "example.com;cluster.local",
                                               "route1": "192.168.50.0/24,10.0.2.254"})}),
        # DHCP: a MAC and a device name, no address
        node("n-dhcp", {"default": dev(device="eth0", hwaddr="52:54:00:00:00:05")}),
        # dual stack, and a second NIC without a gateway, MTU 9000, not brought up at boot
        node("n-two", {"default": dev(device="eno1", hwaddr="52:54:00:00:00:11", ipaddr="10.0.2.31",
                                      netmask="255.255.255.0", gateway="10.0.2.2", ipaddr6="fd00:10::31",
                                      prefixlen6="64", gateway6="fd00:10::1"),
                       "storage": dev(device="eno2", hwaddr="52:54:00:00:00:12", ipaddr="172.16.0.31",
                                      netmask="255.255.0.0", mtu="9000", onboot=False)}),
        # IPv6 only with a method tag on a second device
        node("n-v6", {"default": dev(device="eth0", hwaddr="52:54:00:00:00:21", ipaddr6="fd00:20::5",
                                     prefixlen6="64", gateway6="fd00:20::1", tags={"DNS": "fd00:20::1"}),
                      "auto6": dev(device="eth1", hwaddr="52:54:00:00:00:22", tags={"ipv6_method": "auto"})}),
        # an active-backup bond of two NICs
        node("n-bond", {"bond0": dev(device="bond0", type="bond", ipaddr="10.0.3.41", netmask="255.255.255.0",
                                     gateway="10.0.3.1", mtu="9000",
                                     tags={"mode": "active-backup", "miimon": "200", "DNS1": "10.0.3.1"}),
                        "bond0m1": dev(device="ens1f0", hwaddr="52:54:00:00:00:31", tags={"master": "bond0"}),
                        "bond0m2": dev(device="ens1f1", hwaddr="52:54:00:00:00:32", tags={"master": "bond0"})},
             primary="bond0"),
        # a VLAN on top of the primary NIC
        node("n-vlan", {"default": dev(device="eth0", hwaddr="52:54:00:00:00:41", ipaddr="10.0.2.51",
                                       netmask="255.255.255.0", gateway="10.0.2.2"),
                        "vlan42": dev(device="eth0.42", type="vlan", ipaddr="10.42.0.51", netmask="255.255.0.0",
                                      tags={"parent_device": "eth0", "vlan_id": "42"})}),
        # InfiniBand (20-byte hardware address) beside Ethernet
        node("n-ib", {"default": dev(device="eth0", hwaddr="52:54:00:00:00:51", ipaddr="10.0.2.61",
                                     netmask="255.255.255.0"),
                      "ib": dev(device="ib0", type="infiniband", hwaddr="00:00:10:49:fe:80:00:00:00:00:00:00:"
                                "f4:52:14:03:00:8d:50:61", ipaddr="10.10.0.61", netmask="255.255.0.0",
                                mtu="65520")}),
    )}


def nodes():
    return {nid: Node.from_json(doc) for nid, doc in node_docs().items()}


def disk_node():
    return Node.from_json(disk_node_doc())


def disk_node_doc():
    """Native disks and file systems (ignition, sfdisk, mkfs, mkswap, systemd.mount/swap)."""
    return node("n-disk", {"default": dev(device="eth0", hwaddr="52:54:00:00:00:61", ipaddr="10.0.2.71",
                                          netmask="255.255.255.0")},
                disks={"/dev/vda": {"wipe_table": True, "partitions": {
                    "scratch": {"number": "", "size_mib": "", "start_mib": "", "type_guid": "", "guid": "",
                                "wipe_partition_entry": False, "should_exist": True, "resize": False},
                    "swap": {"number": "1", "size_mib": "1024", "start_mib": "", "type_guid": "", "guid": "",
                             "wipe_partition_entry": False, "should_exist": True, "resize": False}}}},
                filesystems={
                    "/dev/disk/by-partlabel/scratch": {"format": "btrfs", "path": "/scratch",
                                                       "wipe_filesystem": True, "label": "", "uuid": "",
                                                       "options": [], "mount_options": ["defaults", "noatime"]},
                    "/dev/disk/by-partlabel/swap": {"format": "swap", "path": "swap", "wipe_filesystem": False,
                                                    "label": "", "uuid": "", "options": [], "mount_options": []}},
                tags={"ntp_servers": "ntp1.example.com,ntp2.example.com", "localtime": "Europe/Paris",
                      "gpuMigProfiles": "14,14,14,15:9,9:0:0", "PasswordlessRoot": "true"},
                resources={"fstab": [{"spec": "warewulf:/home", "file": "/home", "vfstype": "nfs",
                                      "mntops": "defaults,nofail"}],
                           "localusers": [{"name": "alice", "uid": 2000, "gid": 2000, "home": "/home/alice",
                                           "shell": "/bin/bash", "gecos": "Alice"}],
                           "localgroups": [{"name": "lab", "gid": 3000, "members": ["alice"]}]})
