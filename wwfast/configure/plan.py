"""What the provisioning network serves, computed from the nodes and the settings.

`dhcp_plan(nodes, settings) -> DhcpPlan` is the data every DHCP template renders: the server's
network, the dynamic range, one static host per node network device with an Ethernet MAC, the boot file
per client architecture (DHCP option 93, from `tftp: ipxe`) and the iPXE script URL. `range_warnings`
is the check the define stage and `configure dhcp` print: a dynamic range that holds a node's static
address, or that lies outside the server's network.
"""
import ipaddress
import posixpath
import re

from wwfast.define.settings import arch_code

# iPXE expands these itself; the server picks the node's script (or the unknown-node one) by MAC.
IPXE_SCRIPT_PATH = "/ipxe/${mac:hexhyp}?assetkey=${asset:uristring}&uuid=${uuid}"
EFI_HTTP_BOOT_PATH = "/efiboot/shim.efi"
HOST_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
ENTRY_UNSAFE = re.compile(r"[^A-Za-z0-9-]")
NON_ETHERNET_TYPES = ("infiniband", "ib")
MAX_LISTED = 5

ARCH_NAMES = {0: "x86 BIOS", 6: "x86 UEFI (32-bit)", 7: "x86-64 UEFI", 9: "x86-64 UEFI (EBC)", 10: "arm32 UEFI",
              11: "arm64 UEFI", 15: "x86 UEFI HTTP", 16: "x86-64 UEFI HTTP", 19: "arm64 UEFI HTTP"}


class StaticHost:
    """One DHCP host entry: a node's network device with an Ethernet MAC."""
    __slots__ = ("node", "netname", "mac", "ipaddr", "hostname", "primary", "name")

    def __init__(self, node, netname, mac, ipaddr, hostname, primary, name):
        self.node, self.netname, self.mac, self.ipaddr = node, netname, mac, ipaddr
        self.hostname, self.primary = hostname, primary
        self.name = name            # unique entry name, letters digits and '-': <node>-<network>


class BootFile:
    """The first-stage boot file (an iPXE binary in the TFTP root) for one client architecture."""
    __slots__ = ("arch", "key", "file", "description")

    def __init__(self, arch, key, file):
        self.arch, self.key, self.file = arch, key, file
        self.description = ARCH_NAMES.get(arch, f"architecture {arch}")


class DhcpPlan:
    def __init__(self, server, port, network, range_start, range_end, hosts, boot_files, ipxe_url,
                 efi_http_url, grubboot, notes):
        self.server = server                    # address the nodes reach wwfast serve on (next-server)
        self.port = port
        self.network = network                  # ipaddress.IPv4Network of the server
        self.netmask = str(network.netmask)
        self.range_start, self.range_end = range_start, range_end   # "" when static only
        self.hosts = hosts
        self.boot_files = boot_files
        self.ipxe_url = ipxe_url
        self.efi_http_url = efi_http_url
        self.grubboot = grubboot
        self.notes = notes

    def as_template_data(self, **extra):
        return {"server": self.server, "port": self.port, "network": str(self.network.network_address),
                "netmask": self.netmask, "prefixlen": self.network.prefixlen, "range_start": self.range_start,
                "range_end": self.range_end, "hosts": self.hosts, "boot_files": self.boot_files,
                "ipxe_url": self.ipxe_url, "efi_http_url": self.efi_http_url, "grubboot": self.grubboot, **extra}


def server_network(settings):
    return ipaddress.IPv4Network(f"{settings.address}/{settings.netmask}", strict=False)


def authority(settings):
    return f"{settings.address}:{settings.http_port}"


def boot_file_name(value):
    """The name DHCP offers for a `tftp: ipxe` entry: a path inside the TFTP root as written; an absolute
    path is copied into the root by `configure tftp` under its base name."""
    return posixpath.basename(value) if value.startswith("/") else value


def boot_files(settings):
    files = [BootFile(arch_code(key), key, boot_file_name(value)) for key, value in settings.ipxe_binaries.items()]
    return sorted(files, key=lambda b: b.arch)


def _listed(items):
    shown = ", ".join(items[:MAX_LISTED])
    return shown + (f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else "")


def dhcp_plan(nodes, settings):
    """`nodes`: {id: wwfast.records.Node}."""
    network = server_network(settings)
    hosts, notes, names = [], [], set()
    not_ethernet, no_name, elsewhere = [], [], []
    for node_id in sorted(nodes):
        devices = nodes[node_id].network_devices
        for netname in sorted(devices):
            dev = devices[netname]
            mac = dev.hwaddr
            if not mac:
                continue
            if not dev.is_ethernet or dev.type.lower() in NON_ETHERNET_TYPES:
                not_ethernet.append(f"{node_id} {netname} ({mac})")
                continue
            primary = dev.primary
            label = node_id if primary else f"{node_id}-{netname}"
            hostname = label if HOST_LABEL.match(label) else ""
            if not hostname:
                no_name.append(label)
            ipaddr = dev.ipaddr
            if ipaddr and ipaddress.IPv4Address(ipaddr) not in network:
                elsewhere.append(f"{node_id} {netname} {ipaddr}")
            name = base = ENTRY_UNSAFE.sub("-", f"{node_id}-{netname}")
            while name in names:                # n_1-a and n.1-a would collide once made safe
                name = f"{base}-{len(names)}"
            names.add(name)
            hosts.append(StaticHost(node_id, netname, mac, ipaddr, hostname, primary, name))
    if not_ethernet:
        notes.append(f"no DHCP entry for {len(not_ethernet)} device(s) without an Ethernet MAC "
                     f"(e.g. 20-octet InfiniBand GUIDs; DHCP over IPoIB needs a client id): {_listed(not_ethernet)}")
    if no_name:
        notes.append(f"no DHCP host name for {len(no_name)} device(s) whose name is not a valid host name: "
                     f"{_listed(no_name)}")
    if elsewhere:
        notes.append(f"{len(elsewhere)} static address(es) outside the server's network {network} (reached only "
                     f"through a DHCP relay): {_listed(elsewhere)}")
    base = f"http://{authority(settings)}"
    return DhcpPlan(settings.address, settings.http_port, network, settings.dhcp_range_start,
                    settings.dhcp_range_end, hosts, boot_files(settings), base + IPXE_SCRIPT_PATH,
                    base + EFI_HTTP_BOOT_PATH, bool(settings.grubboot), notes)


def range_warnings(settings, nodes):
    """Problems of the dynamic DHCP range against the server's network and the nodes' static addresses
    (`nodes`: {id: wwfast.records.Node})."""
    if not (settings.dhcp_range_start and settings.dhcp_range_end):
        return []
    where = settings.path or "settings"
    start, end = ipaddress.IPv4Address(settings.dhcp_range_start), ipaddress.IPv4Address(settings.dhcp_range_end)
    network = server_network(settings)
    text = f"{start}-{end}"
    warnings = []
    outside = [str(a) for a in (start, end) if a not in network]
    if outside:
        warnings.append(f"{where}: dhcp range {text} is outside the server's network {network} "
                        f"({', '.join(outside)}): dnsmasq and dhcpd serve no dynamic leases there")
    elif network.network_address in (start, end) or network.broadcast_address in (start, end) \
            or (start <= settings_address(settings) <= end):
        warnings.append(f"{where}: dhcp range {text} holds the network, broadcast or server address of {network}")
    lo, hi = int(start), int(end)
    clashes = []
    for node_id in sorted(nodes):
        for netname, dev in nodes[node_id].network_devices.items():
            if dev.ipaddr and lo <= int(ipaddress.IPv4Address(dev.ipaddr)) <= hi:
                clashes.append(f"{node_id} {netname} {dev.ipaddr}")
    if clashes:
        warnings.append(f"{where}: dhcp range {text} holds {len(clashes)} node static address(es): {_listed(clashes)}; "
                        f"a machine without an entry could be leased the same address")
    return warnings


def settings_address(settings):
    return ipaddress.IPv4Address(settings.address)
