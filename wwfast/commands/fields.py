"""Field flags shared by `wwfast node` and `wwfast profile`, named after wwctl's (A2/B1).

Each flag maps to a key path in a node-file entry. `set`/`add` take values,
`unset` takes the same flags as switches. `UNDEF`/`UNSET` as a value clears
the field, as in Warewulf.
"""
import ipaddress

from wwfast.builder import inventory
from wwfast.errors import UsageError
from wwfast.define.nodeedit import set_path, unset_path
from wwfast.define.schema import UNSET_VALUES

NET = "<netname>"  # replaced by --netname

# (long flag, short flag or None, key path, kind, help, node only)
FIELDS = [
    ("--profile", "-P", ("profiles",), "list", "profiles, comma separated, in order (~name negates)", False),
    ("--comment", None, ("comment",), "str", "free comment (not inherited)", False),
    ("--cluster", "-c", ("cluster name",), "str", "cluster name", False),
    ("--image", None, ("image name",), "str", "image name", False),
    ("--ipxe", None, ("ipxe template",), "str", "iPXE template name", False),
    ("--runtime-overlays", "-R", ("runtime overlay",), "list", "runtime overlays, comma separated", False),
    ("--system-overlays", "-O", ("system overlay",), "list", "system overlays, comma separated", False),
    ("--kernelversion", None, ("kernel", "version"), "str", "kernel version prefix or path in the image", False),
    ("--kernelargs", "-A", ("kernel", "args"), "list", "kernel arguments, comma separated (~arg removes)", False),
    ("--init", "-i", ("init",), "str", "init program", False),
    ("--root", None, ("root",), "str", "root: initramfs, tmpfs, ramfs or a device", False),
    ("--primarynet", "-p", ("primary network",), "str", "name of the primary network device", False),
    ("--asset", None, ("asset key",), "str", "asset key (SMBIOS asset tag) the node must present", True),
    ("--discoverable", "-e", ("discoverable",), "str", "claim the first unknown MAC (true/false)", True),
    ("--ipmiuser", None, ("ipmi", "username"), "str", "IPMI user", False),
    ("--ipmipass", None, ("ipmi", "password"), "str", "IPMI password", False),
    ("--ipmiaddr", None, ("ipmi", "ipaddr"), "str", "IPMI address (increments over a node range)", False),
    ("--ipminetmask", None, ("ipmi", "netmask"), "str", "IPMI netmask", False),
    ("--ipmigateway", None, ("ipmi", "gateway"), "str", "IPMI gateway", False),
    ("--ipmiport", None, ("ipmi", "port"), "str", "IPMI port", False),
    ("--ipmiinterface", None, ("ipmi", "interface"), "str", "IPMI interface (lan, lanplus)", False),
    ("--ipmiescapechar", None, ("ipmi", "escapechar"), "str", "IPMI escape character", False),
    ("--ipmiwrite", None, ("ipmi", "write"), "str", "write the IPMI settings to the BMC (true/false)", False),
    ("--ipmitemplate", None, ("ipmi", "template"), "str", "BMC command template", False),
    ("--type", "-T", ("network devices", NET, "type"), "str", "network type (ethernet, infiniband, ...)", False),
    ("--onboot", None, ("network devices", NET, "onboot"), "str", "bring the device up at boot (true/false)", False),
    ("--netdev", "-N", ("network devices", NET, "device"), "str", "kernel interface name (eth0)", False),
    ("--hwaddr", "-H", ("network devices", NET, "hwaddr"), "str", "MAC address", False),
    ("--ipaddr", "-I", ("network devices", NET, "ipaddr"), "str", "IPv4 address (increments over a node range)", False),
    ("--netmask", "-M", ("network devices", NET, "netmask"), "str", "netmask", False),
    ("--gateway", "-G", ("network devices", NET, "gateway"), "str", "gateway", False),
    ("--ipaddr6", None, ("network devices", NET, "ipaddr6"), "str", "IPv6 address", False),
    ("--prefixlen6", None, ("network devices", NET, "prefixlen6"), "str", "IPv6 prefix length", False),
    ("--gateway6", None, ("network devices", NET, "gateway6"), "str", "IPv6 gateway", False),
    ("--mtu", None, ("network devices", NET, "mtu"), "str", "MTU", False),
]
INCREMENTING = {("ipmi", "ipaddr"), ("network devices", NET, "ipaddr")}
TAG_FLAGS = [  # (flag stem, path to the tag map)
    ("tag", ("tags",)), ("nettag", ("network devices", NET, "tags")), ("ipmitag", ("ipmi", "tags")),
]


def _dest(flag):
    return flag.lstrip("-").replace("-", "_")


def add_value_flags(parser, node):
    """Flags that set fields (node add/set, profile add/set)."""
    for long, short, _path, _kind, help_text, node_only in FIELDS:
        if node_only and not node:
            continue
        names = [long] + ([short] if short else [])
        parser.add_argument(*names, dest=_dest(long), metavar="VALUE", help=help_text)
    parser.add_argument("--netname", default="default", help="network device the net flags apply to (default: default)")
    for stem, _path in TAG_FLAGS:
        parser.add_argument(f"--{stem}add", action="append", default=[], metavar="KEY=VALUE",
                            help=f"add {stem}s (comma separated or repeated)")
        parser.add_argument(f"--{stem}del", action="append", default=[], metavar="KEY",
                            help=f"delete {stem}s")
    parser.add_argument("--netdel", action="append", default=[], metavar="NETNAME",
                        help="delete a network device")


def add_unset_flags(parser, node):
    """The same fields as switches (node unset, profile unset)."""
    for long, short, _path, _kind, help_text, node_only in FIELDS:
        if node_only and not node:
            continue
        names = [long] + ([short] if short else [])
        parser.add_argument(*names, dest=_dest(long), action="store_true", help=f"unset: {help_text}")
    parser.add_argument("--netname", default=None, help="scope for the net flags; alone, removes the device")
    for stem, _path in TAG_FLAGS:
        parser.add_argument(f"--{stem}", action="append", default=[], metavar="KEY", help=f"remove {stem}s")


def _path(path, netname):
    return tuple(netname if k == NET else k for k in path)


def _split(values):
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _increment(value, index, flag):
    if index == 0 or value in UNSET_VALUES:
        return value
    try:
        return str(ipaddress.IPv4Address(value) + index)
    except (ValueError, ipaddress.AddressValueError):
        raise UsageError(f'{flag} "{value}" is not an IPv4 address, so it cannot increment over several nodes')


def apply_values(entry, args, node, index=0):
    """Write the given flags into one entry; `index` is the node's place in a range (for --ipaddr)."""
    changed = []
    for long, _short, template, kind, _help, node_only in FIELDS:
        value = getattr(args, _dest(long), None)
        if value is None or (node_only and not node):
            continue
        path = _path(template, args.netname)
        if value in UNSET_VALUES:
            unset_path(entry, path)
        else:
            if template in INCREMENTING:
                value = _increment(value, index, long)
            set_path(entry, path, _split([value]) if kind == "list" else value)
        changed.append(long)
    for stem, tag_path in TAG_FLAGS:
        path = _path(tag_path, args.netname)
        for pair in _split(getattr(args, f"{stem}add")):
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UsageError(f'--{stem}add "{pair}": use KEY=VALUE')
            set_path(entry, path + (key.strip(),), value.strip())
            changed.append(f"--{stem}add")
        for key in _split(getattr(args, f"{stem}del")):
            unset_path(entry, path + (key,))
            changed.append(f"--{stem}del")
    for netname in _split(args.netdel):
        if not unset_path(entry, ("network devices", netname)):
            raise UsageError(f'no network device "{netname}" to delete')
        changed.append("--netdel")
    return changed


def apply_unset(entry, args, node):
    """Remove the fields whose switches are given; --netname alone removes that device."""
    changed = []
    netname = args.netname or "default"
    for long, _short, path, _kind, _help, node_only in FIELDS:
        if (node_only and not node) or not getattr(args, _dest(long), False):
            continue
        unset_path(entry, _path(path, netname))
        changed.append(long)
    for stem, tag_path in TAG_FLAGS:
        for key in _split(getattr(args, stem)):
            unset_path(entry, _path(tag_path, netname) + (key,))
            changed.append(f"--{stem}")
    if args.netname and not changed:
        if not unset_path(entry, ("network devices", args.netname)):
            raise UsageError(f'no network device "{args.netname}"')
        changed.append("--netname")
    return changed


def known_names(args):
    """The image and overlay names an edit is checked against, as the define stage checks them."""
    return {"images": inventory.image_names(args.state), "overlays": inventory.overlay_names(args.conf)}
