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
    "tftp": {"enabled": "bool", "port": "port", "bind": "ip", "tftproot": "str", "ipxe": "map",
             "systemd name": "str"},
    "dhcp": {"enabled": "bool", "range start": "ip", "range end": "ip", "range6 start": "str",
             "range6 end": "str", "template": "str", "systemd name": "str"},
    "compression": {"zstd level": "zstdlevel", "gzip": "bool", "threads": "uint"},
    "image excludes": "strlist",
    "nfs": _ANY, "ssh": _ANY, "image mounts": _ANY, "container mounts": _ANY, "paths": _ANY,
    "wwclient": _ANY, "api": _ANY, "mount options": "str", "ipv6net": "str",
    "cluster": "cluster",  # wwfast: scale-out (wwfast.define.cluster_settings)
}

DEFAULTS = {
    "address": "127.0.0.1", "netmask": "255.255.255.0",
    "http_port": 9873, "http_bind": "0.0.0.0", "secure": True, "update_interval": 60,
    "tftp_enabled": True, "tftp_port": 69, "tftp_bind": "0.0.0.0", "tftp_root": "/usr/lib/ipxe",
    "ipxe_binaries": {"00:00": "undionly.kpxe", "00:07": "ipxe.efi", "00:09": "ipxe.efi"},
    "dhcp_enabled": False, "dhcp_range_start": "", "dhcp_range_end": "",
    "zstd_level": 3, "gzip": True, "threads": 0, "image_excludes": [],
    **cluster_settings.DEFAULTS,
}

# (section, key) in the file -> attribute
_ATTRS = {
    ("warewulf", "port"): "http_port", ("warewulf", "bind"): "http_bind", ("warewulf", "secure"): "secure",
    ("warewulf", "update interval"): "update_interval", ("tftp", "enabled"): "tftp_enabled",
    ("tftp", "port"): "tftp_port", ("tftp", "bind"): "tftp_bind", ("tftp", "tftproot"): "tftp_root",
    ("tftp", "ipxe"): "ipxe_binaries", ("dhcp", "enabled"): "dhcp_enabled",
    ("dhcp", "range start"): "dhcp_range_start", ("dhcp", "range end"): "dhcp_range_end",
    ("compression", "zstd level"): "zstd_level", ("compression", "gzip"): "gzip",
    ("compression", "threads"): "threads",
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
    if kind == "map":
        if not isinstance(value, dict):
            raise ValueError("must be a mapping")
        return {str(k): str(v) for k, v in value.items()}
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
