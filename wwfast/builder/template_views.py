"""What an overlay template sees: views of a node, its network devices and the server, with the
helpers templates use (CIDR forms, primary device, kernel args as one string). Built once per node per
run (wwfast.builder.render.Renderer) and shared by every template of that node.
"""
import ipaddress


class View:
    """Attribute access over a dict of fields (Jinja looks attributes up first, so this is the fast path)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __getitem__(self, key):  # node["id"] works too
        try:
            return self.__dict__[key]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__.get('id') or self.__dict__.get('name', '')})"


class NetDev(View):
    """A network device with CIDR helpers: prefixlen, network, cidr (ip/len), network_cidr, broadcast, cidr6."""


_NO_V4 = {"prefixlen": "", "network": "", "cidr": "", "network_cidr": "", "broadcast": ""}
_PREFIX_OF_MASK = {}


def _ip_int(text):
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(text)
    value = 0
    for p in parts:
        octet = int(p)
        if not 0 <= octet <= 255:
            raise ValueError(text)
        value = value << 8 | octet
    return value


def _ip_text(value):
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _prefixlen(netmask):
    """Prefix length of a dotted netmask or a plain number ("" → 32)."""
    cached = _PREFIX_OF_MASK.get(netmask)
    if cached is None:
        cached = ipaddress.IPv4Network(f"0.0.0.0/{netmask or '32'}").prefixlen
        _PREFIX_OF_MASK[netmask] = cached
    return cached


def _v4_helpers(ipaddr, netmask):
    """CIDR helpers of an IPv4 address and netmask (plain integer arithmetic: this runs for every device)."""
    if not ipaddr:
        return dict(_NO_V4)
    try:
        address = _ip_int(ipaddr)
        prefix = _prefixlen(netmask)
    except ValueError:
        return dict(_NO_V4, cidr=ipaddr)
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    network = _ip_text(address & mask)
    return {"prefixlen": prefix, "network": network, "cidr": f"{ipaddr}/{prefix}",
            "network_cidr": f"{network}/{prefix}", "broadcast": _ip_text(address | (~mask & 0xFFFFFFFF))}


def netdev_view(dev):
    """Template view of a records.NetDev: its fields plus CIDR helpers."""
    prefix6, ip6 = dev.prefixlen6, dev.ipaddr6
    if "/" in ip6:  # "fd00::5/64" form fills prefixlen6
        ip6, prefix6 = ip6.split("/", 1)
    fields = {
        "name": dev.name, "device": dev.device or dev.name, "hwaddr": dev.hwaddr, "ipaddr": dev.ipaddr,
        "netmask": dev.netmask, "gateway": dev.gateway, "ipaddr6": ip6, "prefixlen6": prefix6,
        "gateway6": dev.gateway6, "mtu": dev.mtu, "type": dev.type, "onboot": dev.onboot, "primary": dev.primary,
        "tags": dev.tags, "cidr6": f"{ip6}/{prefix6 or 64}" if ip6 else "",
    }
    fields.update(_v4_helpers(dev.ipaddr, dev.netmask))
    return NetDev(**fields)


class NodeView(View):
    pass


def node_view(node):
    """Template view of a records.Node. Define has applied every default: the view only renames
    fields for templates and adds helpers (primary, macs, kernel.args_str)."""
    netdevs = {name: netdev_view(dev) for name, dev in node.network_devices.items()}
    primary = netdevs.get(node.primary_network)
    kernel = node.kernel
    ipmi = {k.replace(" ", "_"): v for k, v in node.ipmi.items()}
    return NodeView(
        id=node.id, hostname=node.id, comment=node.comment, cluster=node.cluster_name, image=node.image_name,
        ipxe_template=node.ipxe_template, profiles=list(node.profiles), system_overlay=list(node.system_overlay),
        runtime_overlay=list(node.runtime_overlay),
        kernel=View(version=kernel.version, args=list(kernel.args), args_str=" ".join(kernel.args)),
        init=node.init, root=node.root, asset_key=node.asset_key, discoverable=node.discoverable,
        primary_network=node.primary_network, primary=primary, netdevs=netdevs, macs=list(node.macs),
        ipmi=View(**ipmi), tags=node.tags, resources=node.resources, disks=node.disks,
        filesystems=node.filesystems,
    )


def server_view(settings):
    helpers = _v4_helpers(settings.address, settings.netmask)
    return View(address=settings.address, ipaddr=settings.address, netmask=settings.netmask,
                port=settings.http_port, update_interval=settings.update_interval, secure=bool(settings.secure),
                tls=bool(getattr(settings, "tls", False)), tls_port=getattr(settings, "tls_port", 9874),
                prefixlen=helpers["prefixlen"], network=helpers["network"], cidr=helpers["cidr"],
                network_cidr=helpers["network_cidr"])
