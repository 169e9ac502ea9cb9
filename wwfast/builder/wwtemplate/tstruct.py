"""Warewulf's TemplateStruct (overlay templates) and templateVars (iPXE templates) for wwfast nodes.

Server fields come from the settings (warewulf.conf keys, Warewulf's defaults otherwise); they are
class attributes of a per-build TemplateStruct type, so each node's struct only carries the node.
"""
import ipaddress
import os
import socket
import time

from wwfast.builder.gotemplate import GoStruct, StrList
from wwfast.builder.gotemplate.gotypes import StrMap
from wwfast.builder.wwtemplate.model import NODE_FIELDS, node_struct, section
from wwfast.define.yamlfile import parse, read_text

# Warewulf's packaged paths (RPM build), overridable by warewulf.conf's `paths:` section.
DEFAULT_PATHS = {
    "Bindir": "/usr/bin", "Sysconfdir": "/etc", "Localstatedir": "/var/lib", "Cachedir": "/var/cache",
    "Ipxesource": "/usr/share/ipxe", "Srvdir": "/var/lib", "Firewallddir": "/usr/lib/firewalld/services",
    "Systemddir": "/usr/lib/systemd/system", "Datadir": "/usr/share",
    "WWOverlaydir": "/var/lib/warewulf/overlays", "WWChrootdir": "/var/lib/warewulf/chroots",
    "WWProvisiondir": "/var/lib/warewulf/provision", "WWClientdir": "/warewulf",
    "WWFilesdir": "/var/lib/warewulf/files",
}
_PATH_KEYS = {k.lower(): k for k in DEFAULT_PATHS}
TOP_FIELDS = ("Id", "Hostname", "BuildHost", "BuildTime", "BuildTimeUnix", "BuildSource", "Ipaddr", "IpCIDR",
              "Netmask", "Network", "NetworkCIDR", "Overlay", "Ipaddr6", "PrefixLen6", "IpCIDR6", "Network6",
              "NetworkCIDR6", "Ipv6", "Dhcp", "Nfs", "Ssh", "Warewulf", "Tftp", "Paths", "AllNodes")
TAIL_FIELDS = ("Container", "ContainerName", "ThisNode")


def raw_settings(settings):
    """The settings file's own mapping (sections wwfast's Settings does not keep: nfs, ssh, paths...)."""
    path = getattr(settings, "path", None)
    if not path or not os.path.exists(path):
        return {}
    data = parse(read_text(path), path).data
    return data if isinstance(data, dict) else {}


def _bool(value, default):
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in ("true", "yes", "1", "on")


def server_fields(settings, raw=None):
    """{field: value} of the TemplateStruct's server side."""
    raw = raw_settings(settings) if raw is None else raw
    addr, mask = settings.address, settings.netmask
    try:
        net4 = ipaddress.IPv4Network(f"{addr}/{mask}", strict=False)
        prefix, network = net4.prefixlen, str(net4.network_address)
    except ValueError:
        prefix, network = None, ""
    ip6 = str(raw.get("ipaddr6") or "")
    prefix6 = str(raw.get("prefixlen6") or "")
    if "/" in ip6:
        ip6, _, p = ip6.partition("/")
        prefix6 = prefix6 or p
    network6 = ""
    if ip6 and prefix6:
        try:
            network6 = str(ipaddress.IPv6Network(f"{ip6}/{prefix6}", strict=False).network_address)
        except ValueError:
            network6 = ""
    ww = raw.get("warewulf") or {}
    dhcp = raw.get("dhcp") or {}
    tftp = raw.get("tftp") or {}
    nfs = raw.get("nfs") or {}
    ssh = raw.get("ssh") or {}
    paths = dict(DEFAULT_PATHS)
    for key, value in (raw.get("paths") or {}).items():
        if str(key).lower() in _PATH_KEYS and value:
            paths[_PATH_KEYS[str(key).lower()]] = str(value)
    secure = bool(settings.secure)
    exports = [section("config.NFSExportConf", {"Path": str(e.get("path") or "/dev/null"),
                                                "ExportOptions": str(e.get("export options") or
                                                                     "rw,sync,no_subtree_check")})
               for e in (nfs.get("export paths") or []) if isinstance(e, dict)]
    return {
        "BuildHost": socket.gethostname(),
        "Ipaddr": addr, "IpCIDR": f"{addr}/{prefix}" if prefix is not None else "", "Netmask": mask,
        "Network": network, "NetworkCIDR": f"{network}/{prefix}" if prefix is not None else "",
        "Ipaddr6": ip6, "PrefixLen6": prefix6, "IpCIDR6": f"{ip6}/{prefix6}" if ip6 and prefix6 else "",
        "Network6": network6, "NetworkCIDR6": f"{network6}/{prefix6}" if network6 else "",
        "Ipv6": bool(ip6 and prefix6),
        "Dhcp": section("config.DHCPConf", {
            "Template": str(dhcp.get("template") or "default"), "RangeStart": settings.dhcp_range_start or "",
            "RangeEnd": settings.dhcp_range_end or "", "Range6Start": str(dhcp.get("range6 start") or ""),
            "Range6End": str(dhcp.get("range6 end") or ""), "SystemdName": str(dhcp.get("systemd name") or "dhcpd")},
            {"Enabled": bool(settings.dhcp_enabled)}),
        "Nfs": section("config.NFSConf", {"ExportsExtended": exports,
                                          "SystemdName": str(nfs.get("systemd name") or "nfsd")},
                       {"Enabled": _bool(nfs.get("enabled"), True)}),
        "Ssh": section("config.SSHConf", {"KeyTypes": StrList(ssh.get("key types") or ["ed25519", "ecdsa", "rsa"])}),
        "Warewulf": section("config.WarewulfConf", {
            "Port": int(settings.http_port), "TLSPort": int(ww.get("tls port") or 9874),
            "UpdateInterval": int(settings.update_interval), "SystemdName": str(ww.get("systemd name") or "")},
            {"Secure": secure, "SecureFiles": _bool(ww.get("secure files"), secure),
             "TLSEnabled": _bool(ww.get("tls"), False), "AutobuildOverlays": _bool(ww.get("autobuild overlays"), True),
             "EnableHostOverlay": _bool(ww.get("host overlay"), True), "GrubBoot": _bool(ww.get("grubboot"), False)}),
        "Tftp": section("config.TFTPConf", {
            "TftpRoot": settings.tftp_root, "SystemdName": str(tftp.get("systemd name") or "tftp"),
            "IpxeBinaries": StrMap(settings.ipxe_binaries or {})}, {"Enabled": bool(settings.tftp_enabled)}),
        "Paths": section("config.BuildConfig", paths),
    }


class TemplateStruct(GoStruct):
    """overlay.TemplateStruct (passed by value: no pointer methods at the top level, as in Warewulf)."""

    __slots__ = ("Id", "Hostname", "BuildSource", "Overlay", "ThisNode", "Container", "ContainerName") + NODE_FIELDS
    _go_type = "overlay.TemplateStruct"
    _go_pointer = False
    _go_fields = TOP_FIELDS + NODE_FIELDS + TAIL_FIELDS


def struct_type(settings, all_nodes, build_time=None):
    """A TemplateStruct subclass carrying the server fields and AllNodes for one build."""
    fields = server_fields(settings)
    when = time.localtime(build_time if build_time is not None else time.time())
    fields["BuildTime"] = time.strftime("%m-%d-%Y %H:%M:%S %Z", when)
    fields["BuildTimeUnix"] = str(int(time.mktime(when)))
    fields["AllNodes"] = all_nodes
    return type("TemplateStruct", (TemplateStruct,), dict(fields, __slots__=()))


def template_struct(cls, node):
    """The struct of one node (a node.Node from model.node_struct)."""
    t = cls()
    for name in NODE_FIELDS:
        setattr(t, name, getattr(node, name))
    t.Id = t.Hostname = node.id
    t.Container = t.ContainerName = node.ImageName
    t.ThisNode = node
    t.BuildSource = t.Overlay = ""
    return t


# ---------------------------------------------------------------------------------- iPXE

class IpxeVars(GoStruct):
    """warewulfd's templateVars: what iPXE templates see."""

    __slots__ = ("Message", "WaitTime", "Hostname", "Fqdn", "Id", "Cluster", "ImageName", "Ipxe", "Hwaddr",
                 "Ipaddr", "Ipaddr6", "Port", "Authority", "KernelArgs", "KernelVersion", "Root", "TLS", "Tags",
                 "NetDevs")
    _go_type = "warewulfd.templateVars"
    _go_fields = __slots__


def ipxe_vars(settings, node=None, hwaddr="", kernel_version="", raw=None):
    """templateVars for a node's script (hwaddr: its primary MAC), or for unknown MACs (node None)."""
    raw = raw_settings(settings) if raw is None else raw
    v = IpxeVars()
    for name in IpxeVars.__slots__:
        setattr(v, name, "")
    v.TLS = _bool((raw.get("warewulf") or {}).get("tls"), False)
    v.Tags, v.NetDevs = StrMap(), {}
    v.Hwaddr = hwaddr
    if node is None:
        return v
    n = node_struct(node)
    v.Id = v.Hostname = v.Fqdn = n.id
    v.Cluster, v.ImageName, v.Ipxe, v.Root = n.ClusterName, n.ImageName, n.Ipxe, n.Root
    v.Ipaddr = settings.address
    ip6 = str(raw.get("ipaddr6") or "").split("/")[0]
    v.Ipaddr6 = ip6
    v.Port = str(settings.http_port)
    v.Authority = f"{settings.address}:{settings.http_port}"
    v.KernelArgs = " ".join(n.Kernel.Args)
    v.KernelVersion = n.Kernel.Version or kernel_version
    v.Tags, v.NetDevs = n.Tags, n.NetDevs
    return v
