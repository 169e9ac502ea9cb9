"""Warewulf's template data as its templates see it: the TemplateStruct of overlay templates (the node
inlined, .ThisNode, .AllNodes, the server's network and config sections) and the smaller iPXE data.

Built from nodes.json node dicts and the server settings, once per node per build (overlay name and
source file are set per template). Types follow Warewulf's Go structs where templates can tell the
difference: addresses are net.IP (print "<nil>" when unset), booleans of the node file are WWbool
strings with .Bool / .BoolDefaultTrue, tags are map[string]string (a missing tag indexes to "").
"""
import ipaddress

from wwfast.builder.gotemplate import IP, GoStruct, StrList
from wwfast.builder.gotemplate.gotypes import StrMap
from wwfast.builder.gotemplate.runtime import gofunc


class WWBool(str):
    """wwtype.WWbool: a string ("true", "false" or "") with Bool and BoolDefaultTrue."""

    __slots__ = ()
    _go_type = "wwtype.WWbool"
    _go_methods = frozenset({"Bool", "BoolDefaultTrue", "String"})

    @staticmethod
    def of(value, default=""):
        if value is None or value == "":
            return WWBool(default)
        if isinstance(value, bool):
            return WWBool("true" if value else "false")
        return WWBool(str(value).lower())

    def Bool(self):
        return str.__str__(self) in ("true", "yes", "1", "t", "y", "on")

    def BoolDefaultTrue(self):
        return str.__str__(self) not in ("false", "no", "0", "f", "n", "off", "unset", "delete", "undef", "--",
                                         "nil")

    def String(self):
        return str.__str__(self)


def _ip(text):
    return IP(str(text or "").split("/")[0])


def _mask_prefix(mask):
    try:
        return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
    except ValueError:
        return None


class KernelConf(GoStruct):
    __slots__ = ("Version", "Args")
    _go_type = "node.KernelConf"
    _go_fields = __slots__


class IpmiConf(GoStruct):
    __slots__ = ("UserName", "Password", "Ipaddr", "Gateway", "Netmask", "Port", "Interface", "EscapeChar",
                 "Write", "Template", "Tags")
    _go_type = "node.IpmiConf"
    _go_fields = __slots__


class NetDev(GoStruct):
    __slots__ = ("Type", "OnBoot", "Device", "Hwaddr", "Ipaddr", "Netmask", "Gateway", "Ipaddr6",
                 "PrefixLen6", "Gateway6", "MTU", "Tags", "primary")
    _go_type = "node.NetDev"
    _go_fields = __slots__[:-1]
    _go_methods = frozenset({"Primary", "IpCIDR", "IpCIDR6"})
    _json_fields = {"Type": "type,omitempty", "OnBoot": "onbot,omitempty", "Device": "device,omitempty",
                    "Hwaddr": "hwaddr,omitempty", "Ipaddr": "ipaddr,omitempty", "Netmask": "netmask,omitempty",
                    "Gateway": "gateway,omitempty", "Ipaddr6": "ipaddr6,omitempty",
                    "PrefixLen6": "prefixlen6,omitempty", "Gateway6": "gateway6,omitempty",
                    "MTU": "mtu,omitempty", "Tags": "tags,omitempty"}

    def Primary(self):
        return self.primary

    def IpCIDR(self):
        prefix = _mask_prefix(self.Netmask.text) if self.Netmask else None
        if not self.Ipaddr or self.Ipaddr.text in ("0.0.0.0", "::") or prefix is None \
                or self.Netmask.text == "0.0.0.0":
            return ""
        return f"{self.Ipaddr.text}/{prefix}"

    def IpCIDR6(self):
        if not self.Ipaddr6 or ":" not in self.Ipaddr6.text or self.Ipaddr6.text == "::" or not self.PrefixLen6:
            return ""
        try:
            prefix = int(self.PrefixLen6)
        except ValueError:
            return ""
        return f"{self.Ipaddr6.text}/{prefix}" if 0 <= prefix <= 128 else ""


for _m in ("Primary", "IpCIDR", "IpCIDR6"):
    gofunc()(getattr(NetDev, _m))


class Partition(GoStruct):
    __slots__ = ("Number", "SizeMiB", "StartMiB", "TypeGuid", "Guid", "WipePartitionEntryP", "ShouldExistP",
                 "ResizeP", "id")
    _go_type = "node.Partition"
    _go_fields = __slots__[:-1]
    _go_methods = frozenset({"Id", "WipePartitionEntry", "ShouldExist", "Resize"})

    def Id(self):
        return self.id

    def WipePartitionEntry(self):
        return bool(self.WipePartitionEntryP)

    def ShouldExist(self):
        return bool(self.ShouldExistP)

    def Resize(self):
        return bool(self.ResizeP)


class Disk(GoStruct):
    __slots__ = ("WipeTableP", "Partitions", "id")
    _go_type = "node.Disk"
    _go_fields = ("WipeTableP", "Partitions")
    _go_methods = frozenset({"Id", "WipeTable", "PartitionList"})

    def Id(self):
        return self.id

    def WipeTable(self):
        return bool(self.WipeTableP)

    def PartitionList(self):
        """Partitions by number (numbered ones first), then by name."""
        def key(item):
            name, p = item
            try:
                return (0, int(p.Number), name)
            except ValueError:
                return (1, 0, name)
        return [p for _, p in sorted(self.Partitions.items(), key=key)]


class FileSystem(GoStruct):
    __slots__ = ("Format", "Path", "WipeFileSystemP", "Label", "Uuid", "Options", "MountOptions", "id")
    _go_type = "node.FileSystem"
    _go_fields = __slots__[:-1]
    _go_methods = frozenset({"Id", "WipeFileSystem"})

    def Id(self):
        return self.id

    def WipeFileSystem(self):
        return bool(self.WipeFileSystemP)


for _cls, _names in ((Partition, Partition._go_methods), (Disk, Disk._go_methods), (FileSystem, FileSystem._go_methods)):
    for _m in _names:
        gofunc()(getattr(_cls, _m))

NODE_FIELDS = ("Discoverable", "AssetKey", "Profiles", "Comment", "ClusterName", "ImageName", "Ipxe",
               "RuntimeOverlay", "SystemOverlay", "Kernel", "Ipmi", "Init", "Root", "NetDevs", "Tags",
               "PrimaryNetDev", "Disks", "FileSystems", "Resources")


class Node(GoStruct):
    """node.Node, as *Node (AllNodes elements and .ThisNode): fields and methods."""

    __slots__ = NODE_FIELDS + ("id", "raw")
    _go_type = "node.Node"
    _go_fields = NODE_FIELDS
    _go_methods = frozenset({"Id", "ContainerName", "Valid", "DiskList", "FileSystemList"})

    def Id(self):
        return self.id

    def ContainerName(self):
        return self.ImageName

    def Valid(self):
        return True

    def DiskList(self):
        return [self.Disks[k] for k in sorted(self.Disks)]

    def FileSystemList(self):
        return [self.FileSystems[k] for k in sorted(self.FileSystems)]


for _m in Node._go_methods:
    gofunc()(getattr(Node, _m))


def _bool_p(value):
    return None if value is None else bool(value)


def netdev(dev, primary):
    """node.NetDev from a nodes.json network device."""
    d = NetDev()
    ip6 = str(dev.get("ipaddr6") or "")
    prefix6 = str(dev.get("prefixlen6") or "")
    if "/" in ip6:
        ip6, _, suffix = ip6.partition("/")
        prefix6 = prefix6 or suffix
    # nodes.json fills an unset type with "ethernet"; Warewulf's templates see unset as "" (and write
    # their own default, e.g. ifcfg's TYPE=Ethernet), so the default goes back to ""
    d.Type = "" if dev.get("type") in (None, "", "ethernet") else dev["type"]
    d.OnBoot = WWBool.of(dev.get("onboot"), "")
    d.Device = dev.get("device") or ""
    d.Hwaddr = dev.get("hwaddr") or ""
    d.Ipaddr, d.Netmask, d.Gateway = _ip(dev.get("ipaddr")), _ip(dev.get("netmask")), _ip(dev.get("gateway"))
    d.Ipaddr6, d.PrefixLen6, d.Gateway6 = IP(ip6), prefix6, _ip(dev.get("gateway6"))
    d.MTU = str(dev.get("mtu") or "")
    d.Tags = StrMap(dev.get("tags") or {})
    d.primary = primary
    return d


def node_struct(node):
    """node.Node from a records.Node (or its nodes.json form, docs/formats.md)."""
    if not isinstance(node, dict):
        node = node.to_json()
    n = Node()
    n.id = node["id"]
    n.raw = node
    n.Discoverable = WWBool.of(node.get("discoverable"), "")
    n.AssetKey = node.get("asset key") or ""
    n.Profiles = StrList(node.get("profiles") or [])
    n.Comment = node.get("comment") or ""
    n.ClusterName = node.get("cluster name") or ""
    n.ImageName = node.get("image name") or ""
    n.Ipxe = node.get("ipxe template") or ""
    n.RuntimeOverlay = StrList(node.get("runtime overlay") or [])
    n.SystemOverlay = StrList(node.get("system overlay") or [])
    kernel = node.get("kernel") or {}
    k = n.Kernel = KernelConf()
    k.Version = kernel.get("version") or ""
    args = kernel.get("args") or []
    k.Args = StrList(args.split() if isinstance(args, str) else args)
    ipmi = node.get("ipmi") or {}
    i = n.Ipmi = IpmiConf()
    i.UserName, i.Password = ipmi.get("username") or "", ipmi.get("password") or ""
    i.Ipaddr, i.Gateway, i.Netmask = _ip(ipmi.get("ipaddr")), _ip(ipmi.get("gateway")), _ip(ipmi.get("netmask"))
    i.Port, i.Interface = str(ipmi.get("port") or ""), ipmi.get("interface") or ""
    i.EscapeChar, i.Template = ipmi.get("escapechar") or "", ipmi.get("template") or ""
    i.Write = WWBool.of(ipmi.get("write") if ipmi.get("write") else None, "")
    i.Tags = StrMap(ipmi.get("tags") or {})
    n.Init, n.Root = node.get("init") or "", node.get("root") or ""
    devs = node.get("network devices") or {}
    primary = node.get("primary network") or (min(devs) if devs else "")
    n.NetDevs = {name: netdev(dev, name == primary or bool(dev.get("primary"))) for name, dev in devs.items()}
    n.PrimaryNetDev = primary
    n.Tags = StrMap(node.get("tags") or {})
    n.Disks = {}
    for name, disk in (node.get("disks") or {}).items():
        d = Disk()
        d.id, d.WipeTableP = name, _bool_p(disk.get("wipe_table"))
        d.Partitions = {}
        for label, p in (disk.get("partitions") or {}).items():
            part = Partition()
            part.id = label
            part.Number, part.SizeMiB = str(p.get("number") or ""), str(p.get("size_mib") or "")
            part.StartMiB, part.TypeGuid = str(p.get("start_mib") or ""), p.get("type_guid") or ""
            part.Guid = p.get("guid") or ""
            part.WipePartitionEntryP = _bool_p(p.get("wipe_partition_entry"))
            part.ShouldExistP, part.ResizeP = _bool_p(p.get("should_exist")), _bool_p(p.get("resize"))
            d.Partitions[label] = part
        n.Disks[name] = d
    n.FileSystems = {}
    for name, fs in (node.get("filesystems") or {}).items():
        f = FileSystem()
        f.id = name
        f.Format, f.Path = fs.get("format") or "", fs.get("path") or ""
        f.WipeFileSystemP = _bool_p(fs.get("wipe_filesystem"))
        f.Label, f.Uuid = fs.get("label") or "", fs.get("uuid") or ""
        f.Options = StrList(fs.get("options") or [])
        mount = fs.get("mount_options") or ""
        f.MountOptions = ",".join(mount) if isinstance(mount, list) else str(mount)
        n.FileSystems[name] = f
    n.Resources = dict(node.get("resources") or {})
    return n


# ---------------------------------------------------------------------------------- the server side

class Section(GoStruct):
    """One config section (Dhcp, Nfs, Warewulf, ...) built at run time."""

    __slots__ = ("__dict__",)


def section(go_type, fields, methods=None):
    methods = methods or {}
    cls = type(go_type.split(".")[-1], (Section,), {
        "_go_type": go_type, "_go_fields": tuple(fields), "_go_methods": frozenset(methods), "__slots__": (),
    })
    for name, value in methods.items():
        setattr(cls, name, gofunc()(lambda self, value=value: value))
    obj = cls()
    obj.__dict__.update(fields)
    return obj
