"""The node/profile field schema (Warewulf's nodes.conf keys) and value checks.

`normalize_entity` turns one raw YAML entry (a profile or a node) into a
"partial": only the fields it sets, values checked and made canonical (MACs
lower case with ':', WWbools as True/False, numbers as strings). Problems are
collected as (key path, message) so the caller can add file and line.
"""
import difflib
import ipaddress
import re

from wwfast.records import normalise_mac

# Field kinds
STR, LIST, BOOL, MAP, ANY = "str", "list", "bool", "map", "any"
MAC, IP4, MASK, IP6, UINT = "mac", "ip4", "mask", "ip6", "uint"
SCALARS = (STR, BOOL, MAC, IP4, MASK, IP6, UINT)


class Named:
    """A map of user-chosen names (netdevs, disks) to sub-entities of `schema`."""

    def __init__(self, schema):
        self.schema = schema


NETDEV = {
    "type": STR, "onboot": BOOL, "device": STR, "hwaddr": MAC, "ipaddr": IP4, "netmask": MASK,
    "gateway": IP4, "ipaddr6": IP6, "prefixlen6": UINT, "gateway6": IP6, "mtu": UINT, "tags": MAP,
}
IPMI = {
    "username": STR, "password": STR, "ipaddr": IP4, "netmask": MASK, "gateway": IP4, "port": STR,
    "interface": STR, "escapechar": STR, "write": BOOL, "template": STR, "tags": MAP,
}
PARTITION = {
    "number": STR, "size_mib": STR, "start_mib": STR, "type_guid": STR, "guid": STR,
    "wipe_partition_entry": BOOL, "should_exist": BOOL, "resize": BOOL,
}
DISK = {"wipe_table": BOOL, "partitions": Named(PARTITION)}
FILESYSTEM = {
    "format": STR, "path": STR, "wipe_filesystem": BOOL, "label": STR, "uuid": STR,
    "options": LIST, "mount_options": LIST,
}
PROFILE = {
    "profiles": LIST, "comment": STR, "cluster name": STR, "image name": STR, "ipxe template": STR,
    "runtime overlay": LIST, "system overlay": LIST, "kernel": {"version": STR, "args": LIST},
    "init": STR, "root": STR, "ipmi": IPMI, "network devices": Named(NETDEV), "tags": MAP,
    "primary network": STR, "disks": Named(DISK), "filesystems": Named(FILESYSTEM), "resources": ANY,
}
NODE_ONLY = {"discoverable": BOOL, "asset key": STR}
NODE = {**PROFILE, **NODE_ONLY}

# How a plain string given for a list field splits into items.
_LIST_SPLIT = {("kernel", "args"): None}  # None: split on whitespace; default: on commas

# Keys only node files from before Warewulf 4.6 have (`wwctl upgrade nodes` converts them; so does
# `wwfast upgrade nodes`, which define names when it meets one).
LEGACY_ENTITY_KEYS = frozenset({"container name", "kernel args", "kernel version", "kernel override", "keys",
                                "tagsdel", "disabled"} | {f"ipmi {f}" for f in (
                                    "escapechar", "gateway", "interface", "ipaddr", "netmask", "password", "port",
                                    "username", "write")})
LEGACY_SUB_KEYS = frozenset({"default", "primary", "prefix", "ipcidr", "ip6addr", "tagsdel", "override"})
UPGRADE_HINT = "a key of node files from before Warewulf 4.6: convert the file with `wwfast upgrade nodes`"

UNSET_VALUES = {"UNDEF", "UNSET"}  # Warewulf: a field set to these is cleared
BOOL_UNSET = {"unset", "delete", "undef", "--", "nil"}
_TRUE = {"true", "yes", "y", "on", "1", "t"}
_FALSE = {"false", "no", "n", "off", "0", "f"}

NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")


class _Unset:
    """Marker: the value asks for the field to be cleared."""


UNSET = _Unset()


def parse_bool(value):
    """WWbool: True/False, or UNSET for Warewulf's clear words; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text in UNSET_VALUES or text.lower() in BOOL_UNSET:
        return UNSET
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f'"{value}" is not a boolean (true/false/yes/no)')


def parse_mac(value):
    """Ethernet, EUI-64 or InfiniBand address, normalised (records.normalise_mac)."""
    mac = normalise_mac(str(value))
    if mac is None:
        raise ValueError(f'bad MAC "{value}"')
    return mac


_IP4_RE = re.compile(r"^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")


def parse_ip4(value):
    text = str(value).strip()
    if _IP4_RE.match(text):  # canonical dotted quad: the common case, no ipaddress object
        return text
    raise ValueError(f'bad IPv4 address "{value}"')


_MASKS = {str(ipaddress.IPv4Network(f"0.0.0.0/{n}").netmask): n for n in range(33)}


def parse_mask(value):
    """A dotted netmask, or a prefix length 0-32 turned into one; contiguous masks only."""
    text = str(value).strip()
    if text in _MASKS:
        return text
    if text.isdigit() and int(text) <= 32:
        return next(m for m, n in _MASKS.items() if n == int(text))
    raise ValueError(f'bad netmask "{value}"')


def parse_ip6(value):
    text = str(value).strip()
    try:
        return str(ipaddress.IPv6Address(text.split("/")[0])) + ("/" + text.split("/")[1] if "/" in text else "")
    except (ValueError, IndexError):
        raise ValueError(f'bad IPv6 address "{value}"') from None


def parse_uint(value):
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise ValueError(f'"{value}" is not a whole number')
    return str(int(text))


_PARSERS = {MAC: parse_mac, IP4: parse_ip4, MASK: parse_mask, IP6: parse_ip6, UINT: parse_uint}


def did_you_mean(word, choices):
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _scalar_text(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Normalizer:
    """Collects (path, message) problems while normalising entities."""

    def __init__(self, lenient=False):
        self.problems = []
        self.lenient = lenient  # an unmodified Warewulf nodes.conf: unknown keys are ignored, as Warewulf does
        self.ignored = []       # (path, message) warnings for those

    def problem(self, path, message):
        self.problems.append((tuple(path), message))

    def unknown(self, path, key, choices, legacy):
        """An unknown key: the upgrade command for old ones; ignored with a warning in a nodes.conf."""
        if key in legacy:
            self.problem(path, f'"{key}": {UPGRADE_HINT}')
        elif self.lenient:
            self.ignored.append((tuple(path), f'unknown key "{key}" ignored (as Warewulf ignores it)'
                                              f'{did_you_mean(key, choices)}'))
        else:
            self.problem(path, f'unknown key "{key}"{did_you_mean(key, choices)}')

    def entity(self, raw, schema, path):
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.problem(path, f"must be a mapping of fields, not {type(raw).__name__}")
            return {}
        out = {}
        for key, value in raw.items():
            kind = schema.get(key)
            if kind is None:
                if key in NODE_ONLY and schema is PROFILE:
                    self.problem(path + (key,), f'"{key}" can be set on a node only, not on a profile')
                else:
                    self.unknown(path + (key,), key, schema, LEGACY_ENTITY_KEYS)
                continue
            result = self.field(value, kind, path + (key,), path_in_entity=(key,))
            if result is not UNSET and result is not None:
                out[key] = result
        return out

    def field(self, value, kind, path, path_in_entity=()):
        """The canonical value, None when empty (inherit), UNSET to clear."""
        if value is None:
            return None
        if isinstance(kind, dict):
            sub = {}
            if not isinstance(value, dict):
                self.problem(path, f"must be a mapping, not {type(value).__name__}")
                return None
            for key, item in value.items():
                sub_kind = kind.get(key)
                if sub_kind is None:
                    self.unknown(path + (key,), key, kind, LEGACY_SUB_KEYS)
                    continue
                result = self.field(item, sub_kind, path + (key,), path_in_entity + (key,))
                if result is not None and result is not UNSET:
                    sub[key] = result
            return sub or None
        if isinstance(kind, Named):
            if not isinstance(value, dict):
                self.problem(path, f"must be a mapping of names, not {type(value).__name__}")
                return None
            named = {}
            for name, item in value.items():
                if not str(name).strip():
                    self.problem(path + (name,), "empty name")
                    continue
                if item is None:
                    named[name] = {}
                    continue
                if isinstance(item, str) and item in UNSET_VALUES:
                    continue
                result = self.field(item, kind.schema, path + (name,), path_in_entity + (name,))
                named[name] = result or {}
            return named or None
        if kind == LIST:
            return self._list(value, path, path_in_entity)
        if kind == MAP:
            if not isinstance(value, dict):
                self.problem(path, f"must be a mapping of key: value, not {type(value).__name__}")
                return None
            out = {}
            for k, v in value.items():
                if isinstance(v, (dict, list)):
                    self.problem(path + (k,), "a tag value must be a single value")
                elif v is not None and _scalar_text(v) not in UNSET_VALUES:
                    out[k] = _scalar_text(v)
            return out or None
        if kind == ANY:
            return value
        if isinstance(value, (dict, list)):
            self.problem(path, f"must be a single value, not a {'mapping' if isinstance(value, dict) else 'list'}")
            return None
        if kind == BOOL:
            try:
                return parse_bool(value)
            except ValueError as e:
                self.problem(path, str(e))
                return None
        text = _scalar_text(value)
        if text == "":
            return None
        if text in UNSET_VALUES:
            return UNSET
        parser = _PARSERS.get(kind)
        if parser is None:
            return text
        try:
            return parser(text)
        except ValueError as e:
            self.problem(path, str(e))
            return None

    def _list(self, value, path, path_in_entity):
        if isinstance(value, str):
            if value in UNSET_VALUES:
                return UNSET
            sep = _LIST_SPLIT.get(path_in_entity, ",")
            items = [v.strip() for v in value.split(sep)] if sep else value.split()
            return [v for v in items if v] or None
        if not isinstance(value, list):
            self.problem(path, f"must be a list, not {type(value).__name__}")
            return None
        items = []
        for i, item in enumerate(value):
            if isinstance(item, (dict, list)) or item is None:
                self.problem(path + (i,), "a list item must be a single value")
                continue
            items.append(_scalar_text(item))
        return items or None
