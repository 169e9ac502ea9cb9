"""Server settings: conf/wwfast.yaml, else an unmodified Warewulf warewulf.conf.

`load(conf_dir) -> Settings` (docs/formats.md). Warewulf-only keys (nfs, ssh,
paths, api, image mounts, ...) are accepted and ignored; unknown keys are an
error with a did-you-mean, as are bad ports, addresses and levels.
"""
import ipaddress
import os

from wwfast.errors import ConfigError, raise_all
from wwfast.fsutil import sha256_bytes
from wwfast.define import cluster_settings
from wwfast.define.schema import UNSET, did_you_mean, parse_bool
from wwfast.define.yamlfile import decode, parse

SETTINGS_FILES = ("wwfast.yaml", "warewulf.conf")

# Accepted keys per section: ours plus Warewulf's (B2), so its file passes as is.
_ANY = None  # a section whose inside we don't read
SCHEMA = {
    "comment": "str", "ipaddr": "str", "netmask": "str", "network": "str", "ipaddr6": "str",
    "prefixlen6": "str", "fqdn": "str",
    "warewulf": {
        "port": "port", "secure": "bool", "update interval": "posint", "bind": "ip",
        "tls port": "port", "secure files": "bool", "tls": "bool", "autobuild overlays": "bool",
        "host overlay": "bool", "grubboot": "bool", "systemd name": "str", "datastore": "str",
        "syslog": "bool",
    },
    "tftp": {"enabled": "bool", "port": "port", "bind": "ip", "tftproot": "str", "ipxe": "archmap",
             "systemd name": "str"},
    "dhcp": {"enabled": "bool", "range start": "ip4", "range end": "ip4", "range6 start": "str",
             "range6 end": "str", "template": "dhcptemplate", "systemd name": "str",
             "restart": "bool", "config file": "str"},
    "compression": {"zstd level": "zstdlevel", "gzip": "bool", "threads": "uint"},
    "image excludes": "strlist",
    "nfs": _ANY, "ssh": _ANY, "image mounts": _ANY, "container mounts": _ANY, "paths": _ANY,
    "wwclient": _ANY, "api": _ANY, "mount options": "str", "ipv6net": "str",
    "cluster": "cluster",  # wwfast: scale-out (wwfast.define.cluster_settings)
}
# `dhcp: template`: which DHCP server's configuration `wwfast configure dhcp` writes. Warewulf's own
# values (default, static) keep meaning "the server `systemd name` names" (wwfast.configure.dhcp).
DHCP_TEMPLATES = ("dnsmasq", "dhcpd", "default", "static")

DEFAULTS = {
    "address": "127.0.0.1", "netmask": "255.255.255.0",
    "http_port": 9873, "http_bind": "0.0.0.0", "secure": True, "update_interval": 60,
    "tls": False, "tls_port": 9874,
    "tftp_enabled": True, "tftp_port": 69, "tftp_bind": "0.0.0.0", "tftp_root": "/usr/lib/ipxe",
    # Warewulf's map; Debian's ipxe package ships the x86 ones in /usr/lib/ipxe
    "ipxe_binaries": {"00:00": "undionly.kpxe", "00:07": "snponly.efi", "00:09": "snponly.efi",
                      "00:0B": "arm64-efi/snponly.efi"},
    "dhcp_enabled": False, "dhcp_range_start": "", "dhcp_range_end": "",
    "zstd_level": 3, "gzip": True, "threads": 0, "image_excludes": [],
    "fqdn": "", "grubboot": False, "tftp_systemd_name": "", "ipxe_source": "/usr/lib/ipxe",
    "dhcp_template": "", "dhcp_systemd_name": "", "dhcp_restart": False, "dhcp_config_file": "",
    **cluster_settings.DEFAULTS,
}

# (section, key) in the file -> attribute
_ATTRS = {
    ("warewulf", "port"): "http_port", ("warewulf", "bind"): "http_bind", ("warewulf", "secure"): "secure",
    ("warewulf", "update interval"): "update_interval", ("warewulf", "tls"): "tls",
    ("warewulf", "tls port"): "tls_port", ("tftp", "enabled"): "tftp_enabled",
    ("tftp", "port"): "tftp_port", ("tftp", "bind"): "tftp_bind", ("tftp", "tftproot"): "tftp_root",
    ("tftp", "ipxe"): "ipxe_binaries", ("dhcp", "enabled"): "dhcp_enabled",
    ("dhcp", "range start"): "dhcp_range_start", ("dhcp", "range end"): "dhcp_range_end",
    ("compression", "zstd level"): "zstd_level", ("compression", "gzip"): "gzip",
    ("compression", "threads"): "threads", ("warewulf", "grubboot"): "grubboot",
    ("tftp", "systemd name"): "tftp_systemd_name", ("dhcp", "template"): "dhcp_template",
    ("dhcp", "systemd name"): "dhcp_systemd_name", ("dhcp", "restart"): "dhcp_restart",
    ("dhcp", "config file"): "dhcp_config_file",
}


class Settings:
    """The server settings; attributes as in docs/formats.md."""

    FIELDS = tuple(DEFAULTS)

    def __init__(self, path=None, digest=None, **values):
        for name, default in DEFAULTS.items():
            value = values.get(name, default)
            setattr(self, name, dict(value) if isinstance(value, dict) else
                    list(value) if isinstance(value, list) else value)
        self.path = path
        self.digest = digest if digest is not None else sha256_bytes(b"")

    def as_dict(self):
        d = {name: getattr(self, name) for name in self.FIELDS}
        d["path"] = self.path
        d["digest"] = self.digest
        return d

    def __repr__(self):
        return f"Settings({self.as_dict()!r})"


def settings_file(conf_dir):
    """wwfast.yaml, else warewulf.conf, else None."""
    for name in SETTINGS_FILES:
        path = os.path.join(conf_dir, name)
        if os.path.exists(path):
            return path
    return None


def _convert(kind, value):
    if kind == "str":
        return "" if value is None else str(value)
    if kind == "bool":
        result = parse_bool(value)
        if result is UNSET:
            raise ValueError(f'"{value}" is not a boolean (true/false)')
        return result
    if kind in ("port", "posint", "uint", "zstdlevel"):
        if isinstance(value, bool) or not str(value).strip().isdigit():
            raise ValueError(f'"{value}" is not a whole number')
        n = int(str(value).strip())
        limits = {"port": (1, 65535), "posint": (1, 10**9), "uint": (0, 4096), "zstdlevel": (1, 22)}[kind]
        if not limits[0] <= n <= limits[1]:
            raise ValueError(f"{n} is out of range {limits[0]}..{limits[1]}")
        return n
    if kind == "ip":
        try:
            return str(ipaddress.ip_address(str(value).strip()))
        except ValueError:
            raise ValueError(f'bad IP address "{value}"') from None
    if kind == "ip4":
        try:
            return str(ipaddress.IPv4Address(str(value).strip()))
        except ValueError:
            raise ValueError(f'bad IPv4 address "{value}"') from None
    if kind == "dhcptemplate":
        if str(value) not in DHCP_TEMPLATES:
            raise ValueError(f'unknown DHCP template "{value}": one of {", ".join(DHCP_TEMPLATES)}'
                             f'{did_you_mean(value, DHCP_TEMPLATES)}')
        return str(value)
    if kind == "strlist":
        if not isinstance(value, list) or any(isinstance(v, (dict, list)) for v in value):
            raise ValueError("must be a list of patterns")
        return [str(v) for v in value]
    raise AssertionError(kind)


def _server_address(doc, data, values, errors):
    ipaddr = data.get("ipaddr")
    if ipaddr in (None, ""):
        return
    try:
        iface = ipaddress.IPv4Interface(str(ipaddr).strip())
    except ValueError:
        errors.append(doc.error(("ipaddr",), f'bad IPv4 address "{ipaddr}"'))
        return
    values["address"] = str(iface.ip)
    if "/" in str(ipaddr):  # CIDR form fills netmask, as in Warewulf
        values["netmask"] = str(iface.netmask)
    netmask = data.get("netmask")
    if netmask not in (None, ""):
        try:
            values["netmask"] = str(ipaddress.IPv4Network(f"0.0.0.0/{str(netmask).strip()}").netmask)
        except ValueError:
            errors.append(doc.error(("netmask",), f'bad netmask "{netmask}"'))


def arch_code(key):
    """A DHCP option 93 client architecture as written in `tftp: ipxe` ("00:07", "0x0b", 7) -> int."""
    if isinstance(key, bool):
        raise ValueError(f'bad client architecture "{key}"')
    text = str(key).strip()
    try:
        if isinstance(key, int):
            code = key
        elif ":" in text:
            hi, lo = text.split(":")
            if not (len(hi) == len(lo) == 2):
                raise ValueError
            code = int(hi, 16) << 8 | int(lo, 16)
        else:
            code = int(text, 16) if text.lower().startswith("0x") else int(text, 10)
    except ValueError:
        raise ValueError(f'bad client architecture "{key}": use two hex octets such as 00:07') from None
    if not 0 <= code <= 0xFFFF:
        raise ValueError(f'client architecture "{key}" is out of range 00:00..FF:FF')
    return code


def arch_key(code):
    """7 -> "00:07", the form Warewulf's files use."""
    return f"{code >> 8:02X}:{code & 0xFF:02X}"


def _arch_map(doc, value, errors):
    """`tftp: ipxe`: {client architecture: boot file}, keys made canonical; None when unusable."""
    if not isinstance(value, dict):
        errors.append(doc.error(("tftp", "ipxe"), "must be a mapping of client architecture to boot file"))
        return None
    result = {}
    for key, name in value.items():
        try:
            code = arch_key(arch_code(key))
        except ValueError as e:
            errors.append(doc.error(("tftp", "ipxe", key), str(e)))
            continue
        text = "" if name is None or isinstance(name, (dict, list)) else str(name).strip()
        if not text or ".." in text.split("/") or any(c.isspace() for c in text):
            errors.append(doc.error(("tftp", "ipxe", key), f'bad boot file "{name}"'))
            continue
        if code in result:
            errors.append(doc.error(("tftp", "ipxe", key), f"architecture {code} is given twice"))
            continue
        result[code] = text
    return result


def _dhcp_range(doc, data, values, errors):
    start, end = values.get("dhcp_range_start", ""), values.get("dhcp_range_end", "")
    if bool(start) != bool(end):
        missing = "range end" if start else "range start"
        errors.append(doc.error(("dhcp", "range start" if start else "range end"),
                                f"a DHCP range needs both ends: {missing} is not set"))
    elif start and ipaddress.IPv4Address(start) > ipaddress.IPv4Address(end):
        errors.append(doc.error(("dhcp", "range end"), f"range end {end} is below range start {start}"))


def _ipxe_source(doc, data, values, errors):
    """Warewulf's `paths: ipxesource` (where `wwfast configure tftp` copies iPXE binaries from)."""
    paths = data.get("paths")
    if isinstance(paths, dict) and paths.get("ipxesource") not in (None, ""):
        values["ipxe_source"] = str(paths["ipxesource"])


def parse_settings(text, path, digest=None):
    doc = parse(text, path)
    data = doc.data if doc.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError(path, 1, "", "the settings file is a mapping of sections")
    values, errors = {}, []
    for key, value in data.items():
        if key not in SCHEMA:
            errors.append(doc.error((key,), f'unknown key "{key}"{did_you_mean(key, SCHEMA)}'))
            continue
        kind = SCHEMA[key]
        if kind == "cluster":
            cluster_settings.parse(doc, value, values, errors)
            continue
        if kind is _ANY or key in ("ipaddr", "netmask"):
            continue
        if isinstance(kind, dict):
            if value is None:
                continue
            if not isinstance(value, dict):
                errors.append(doc.error((key,), "must be a mapping"))
                continue
            for sub, item in value.items():
                if sub not in kind:
                    errors.append(doc.error((key, sub), f'unknown key "{sub}"{did_you_mean(sub, kind)}'))
                    continue
                attr = _ATTRS.get((key, sub))
                if item is None:
                    continue
                if kind[sub] == "archmap":
                    converted = _arch_map(doc, item, errors)
                    if converted:       # Warewulf: an empty map means the defaults
                        values[attr] = converted
                    continue
                try:
                    converted = _convert(kind[sub], item)
                except ValueError as e:
                    errors.append(doc.error((key, sub), str(e)))
                    continue
                if attr:
                    values[attr] = converted
            continue
        try:
            converted = _convert(kind, value) if value is not None else None
        except ValueError as e:
            errors.append(doc.error((key,), str(e)))
            continue
        if key == "image excludes" and converted is not None:
            values["image_excludes"] = converted
    _server_address(doc, data, values, errors)
    _dhcp_range(doc, data, values, errors)
    _ipxe_source(doc, data, values, errors)
    if isinstance(data.get("fqdn"), str):
        values["fqdn"] = data["fqdn"].strip()
    raise_all(errors)
    return Settings(path=path, digest=digest if digest is not None else sha256_bytes(text.encode()), **values)


def load(conf_dir):
    """Settings from `conf_dir` (defaults when neither file exists)."""
    path = settings_file(conf_dir)
    if path is None:
        return Settings()
    with open(path, "rb") as f:
        raw = f.read()
    return parse_settings(decode(raw, path), path, digest=sha256_bytes(raw))
