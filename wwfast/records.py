"""Typed records that cross stages: Node and NetDev (define -> build), Artifact and Manifest (compress -> serve).

Each record is a frozen dataclass with `from_json` / `to_json` for the JSON form docs/formats.md
describes; define writes nodes.json through `write_nodes`, build reads it through `read_nodes`,
compress writes the manifest through `write_manifest`, serve reads it through `read_manifest`.
Defaults are applied once, by define: a record read back carries every field, so no reader fills
gaps again. Sub-maps (tags, ipmi, disks, ...) are plain dicts shared between records: treat them
as read-only.

`normalise_mac` is the one MAC normaliser: Ethernet (6 octets), EUI-64 (8) and InfiniBand (20).
"""
import dataclasses
import json
import re

from wwfast import canonjson, fsutil

NODES_FORMAT = 1
MANIFEST_FORMAT = 1

# Warewulf's defaults for fields nothing sets; define fills them in, once.
DEFAULT_IPXE_TEMPLATE = "default"
DEFAULT_INIT = "/sbin/init"
DEFAULT_ROOT = "initramfs"
DEFAULT_NETDEV_TYPE = "ethernet"

# ---------------------------------------------------------------------------------------------- MACs

ETHERNET_OCTETS = 6
MAC_OCTETS = {6: "ethernet", 8: "eui64", 20: "infiniband"}
_MAC_RE = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2})*$")


def normalise_mac(text, ethernet_only=False):
    """'52-54-00-AB-CD-EF' -> '52:54:00:ab:cd:ef'; None when it is not a hardware address.

    Accepts 6 (Ethernet), 8 (EUI-64) and 20 (InfiniBand) octets, separated all by ':' or all by
    '-'; with `ethernet_only` only 6 (what a PXE client sends).
    """
    if not isinstance(text, str):
        return None
    mac = text.strip().lower()
    m = _MAC_RE.match(mac)
    if m is None:
        return None
    octets = mac.count(m.group(1)) + 1
    if octets not in MAC_OCTETS or (ethernet_only and octets != ETHERNET_OCTETS):
        return None
    return mac.replace("-", ":")


def mac_kind(mac):
    """'ethernet', 'eui64' or 'infiniband' for a normalised MAC (None for anything else)."""
    if normalise_mac(mac) is None:
        return None
    return MAC_OCTETS[mac.count(":") + 1]


def is_ethernet_mac(mac):
    """True for a 6-octet address (the kind firmware and iPXE boot by)."""
    return mac_kind(mac) == "ethernet"


class RecordError(ValueError):
    """A JSON document does not hold the record it should; the message names the field."""


def _require(cond, where, message):
    if not cond:
        raise RecordError(f"{where}: {message}")


# ----------------------------------------------------------------------------------- nodes.json

@dataclasses.dataclass(frozen=True, slots=True)
class NetDev:
    """One network device of a node (key `name` in the node's `network devices`)."""
    name: str
    device: str = ""
    hwaddr: str = ""
    ipaddr: str = ""
    netmask: str = ""
    gateway: str = ""
    ipaddr6: str = ""
    prefixlen6: str = ""
    gateway6: str = ""
    mtu: str = ""
    type: str = DEFAULT_NETDEV_TYPE
    onboot: bool = True
    primary: bool = False
    tags: dict = dataclasses.field(default_factory=dict)

    JSON_FIELDS = ("device", "hwaddr", "ipaddr", "netmask", "gateway", "ipaddr6", "prefixlen6", "gateway6",
                   "mtu", "type", "onboot", "primary", "tags")

    @classmethod
    def from_json(cls, name, doc):
        return cls(name, doc["device"], doc["hwaddr"], doc["ipaddr"], doc["netmask"], doc["gateway"],
                   doc["ipaddr6"], doc["prefixlen6"], doc["gateway6"], doc["mtu"], doc["type"], doc["onboot"],
                   doc["primary"], doc["tags"])

    def to_json(self):
        return {"device": self.device, "hwaddr": self.hwaddr, "ipaddr": self.ipaddr, "netmask": self.netmask,
                "gateway": self.gateway, "ipaddr6": self.ipaddr6, "prefixlen6": self.prefixlen6,
                "gateway6": self.gateway6, "mtu": self.mtu, "type": self.type, "onboot": self.onboot,
                "primary": self.primary, "tags": self.tags}

    @property
    def is_ethernet(self):
        return is_ethernet_mac(self.hwaddr)


@dataclasses.dataclass(frozen=True, slots=True)
class Kernel:
    version: str = ""
    args: tuple = ()


# JSON key (Warewulf's node-file key) -> attribute, in nodes.json's field order.
_NODE_KEYS = (
    ("id", "id"), ("profiles", "profiles"), ("comment", "comment"), ("cluster name", "cluster_name"),
    ("image name", "image_name"), ("ipxe template", "ipxe_template"), ("system overlay", "system_overlay"),
    ("runtime overlay", "runtime_overlay"), ("kernel", "kernel"), ("init", "init"), ("root", "root"),
    ("asset key", "asset_key"), ("discoverable", "discoverable"), ("primary network", "primary_network"),
    ("network devices", "network_devices"), ("ipmi", "ipmi"), ("tags", "tags"), ("resources", "resources"),
    ("disks", "disks"), ("filesystems", "filesystems"),
)


@dataclasses.dataclass(frozen=True, slots=True)
class Node:
    """A node with every profile merged and every default applied (what define writes)."""
    id: str
    profiles: tuple = ()
    comment: str = ""
    cluster_name: str = ""
    image_name: str = ""
    ipxe_template: str = DEFAULT_IPXE_TEMPLATE
    system_overlay: tuple = ()
    runtime_overlay: tuple = ()
    kernel: Kernel = Kernel()
    init: str = DEFAULT_INIT
    root: str = DEFAULT_ROOT
    asset_key: str = ""
    discoverable: bool = False
    primary_network: str = ""
    network_devices: dict = dataclasses.field(default_factory=dict)   # name -> NetDev, sorted by name
    ipmi: dict = dataclasses.field(default_factory=dict)
    tags: dict = dataclasses.field(default_factory=dict)
    resources: dict = dataclasses.field(default_factory=dict)
    disks: dict = dataclasses.field(default_factory=dict)
    filesystems: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_json(cls, doc):
        try:
            kernel = doc["kernel"]
            return cls(
                doc["id"], tuple(doc["profiles"]), doc["comment"], doc["cluster name"], doc["image name"],
                doc["ipxe template"], tuple(doc["system overlay"]), tuple(doc["runtime overlay"]),
                Kernel(kernel["version"], tuple(kernel["args"])), doc["init"], doc["root"], doc["asset key"],
                doc["discoverable"], doc["primary network"],
                {name: NetDev.from_json(name, dev) for name, dev in sorted(doc["network devices"].items())},
                doc["ipmi"], doc["tags"], doc["resources"], doc["disks"], doc["filesystems"])
        except (KeyError, TypeError, AttributeError) as e:
            raise RecordError(f"node {doc.get('id', '?') if isinstance(doc, dict) else '?'}: "
                              f"missing or bad field {e}") from None

    def to_json(self):
        out = {}
        for key, attr in _NODE_KEYS:
            value = getattr(self, attr)
            if attr == "kernel":
                value = {"version": value.version, "args": list(value.args)}
            elif attr == "network_devices":
                value = {name: dev.to_json() for name, dev in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out

    @property
    def primary(self):
        """The primary NetDev, or None when the node has no network device."""
        return next((d for d in self.network_devices.values() if d.primary), None)

    def _primary_first(self):
        devs = self.network_devices
        return [devs[n] for n in sorted(devs, key=lambda n: (not devs[n].primary, n))]

    @property
    def macs(self):
        """Every hardware address, the primary network's first (Ethernet, EUI-64 and InfiniBand)."""
        return [d.hwaddr for d in self._primary_first() if d.hwaddr]

    @property
    def addresses(self):
        """Every IPv4 address, the primary network's first."""
        return [d.ipaddr for d in self._primary_first() if d.ipaddr]


def render_nodes(nodes):
    """Canonical bytes of nodes.json for {id: Node or its JSON dict}: sorted keys, 1-space indent.

    Dicts are accepted as they are (define builds them with shared subtrees, which canonjson
    encodes once); Node records are turned into their JSON form first.
    """
    docs = {nid: n.to_json() if isinstance(n, Node) else n for nid, n in nodes.items()}
    return (canonjson.dumps({"format": NODES_FORMAT, "nodes": docs}) + "\n").encode()


def write_nodes(path, nodes):
    fsutil.atomic_write(path, render_nodes(nodes))


def parse_nodes(raw, where="nodes.json"):
    """{id: Node} from nodes.json bytes."""
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RecordError(f"{where}: not valid JSON: {e}") from None
    _require(isinstance(doc, dict) and doc.get("format") == NODES_FORMAT and isinstance(doc.get("nodes"), dict),
             where, f'expected {{"format": {NODES_FORMAT}, "nodes": {{...}}}}')
    try:
        return {nid: Node.from_json(n) for nid, n in doc["nodes"].items()}
    except RecordError as e:
        raise RecordError(f"{where}: {e}") from None


def read_nodes(path):
    """{id: Node} from a nodes.json file (FileNotFoundError says to run define)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist: run the define stage first") from None
    return parse_nodes(raw, path)


# ---------------------------------------------------------------------------------- manifest

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclasses.dataclass(frozen=True, slots=True)
class Artifact:
    """One stored file of one encoding: its name in the store, its size and the sha256 of its bytes."""
    file: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, doc, where="artifact"):
        _require(isinstance(doc, dict), where, "expected an object")
        name, size, sha = doc.get("file"), doc.get("size"), doc.get("sha256")
        _require(isinstance(name, str) and name and "/" not in name and not name.startswith("."),
                 f"{where}.file", f"{name!r} is not a store file name")
        _require(isinstance(size, int) and not isinstance(size, bool) and size >= 0, f"{where}.size",
                 f"{size!r} is not a size")
        _require(isinstance(sha, str) and _SHA256.match(sha), f"{where}.sha256", f"{sha!r} is not a sha256")
        return cls(name, size, sha)

    def to_json(self):
        return {"file": self.file, "size": self.size, "sha256": self.sha256}


def _encodings_from_json(doc, where):
    """{encoding: Artifact} (e.g. {"zst": ..., "gz": ...} or {"raw": ...})."""
    _require(isinstance(doc, dict) and doc, where, "expected an object of encodings")
    return {enc: Artifact.from_json(entry, f"{where}.{enc}") for enc, entry in doc.items()}


def _encodings_to_json(encodings):
    return {enc: a.to_json() for enc, a in encodings.items()}


@dataclasses.dataclass(frozen=True, slots=True)
class PublishedNode:
    """What serve knows of a node: how to recognise it and what it downloads (stage -> encoding -> file)."""
    id: str
    macs: tuple
    addresses: tuple
    asset_key: str
    artifacts: dict      # stage -> {encoding: Artifact}

    @classmethod
    def from_json(cls, node_id, doc):
        where = f"nodes.{node_id}"
        _require(isinstance(doc, dict), where, "expected an object")
        macs = []
        for mac in doc.get("macs") or []:
            norm = normalise_mac(mac)
            _require(norm is not None, f"{where}.macs", f"{mac!r} is not a hardware address")
            macs.append(norm)
        artifacts = doc.get("artifacts") or {}
        _require(isinstance(artifacts, dict), f"{where}.artifacts", "expected an object")
        return cls(node_id, tuple(macs), tuple(str(a) for a in doc.get("addresses") or ()),
                   str(doc.get("asset_key") or ""),
                   {stage: _encodings_from_json(encs, f"{where}.artifacts.{stage}") for stage, encs in
                    artifacts.items()})

    def to_json(self):
        return {"macs": list(self.macs), "addresses": list(self.addresses), "asset_key": self.asset_key,
                "artifacts": {stage: _encodings_to_json(encs) for stage, encs in self.artifacts.items()}}


@dataclasses.dataclass(frozen=True, slots=True)
class Manifest:
    """The published manifest: the commit point of a rebuild (docs/formats.md)."""
    generation: str
    secure: bool
    update_interval: int
    nodes: dict                  # id -> PublishedNode
    unknown_ipxe: dict = None    # {encoding: Artifact} or None
    rejected: dict = dataclasses.field(default_factory=dict)   # id -> reason (from_json with strict=False)

    @classmethod
    def from_json(cls, doc, strict=True):
        """The manifest of a parsed JSON document. With strict=False a node that does not parse is
        left out and its reason kept in `rejected`, so one odd node never takes the others down."""
        _require(isinstance(doc, dict) and doc.get("format") == MANIFEST_FORMAT, "manifest",
                 f"not a format {MANIFEST_FORMAT} manifest")
        settings = doc.get("settings") or {}
        _require(isinstance(settings, dict), "settings", "expected an object")
        try:
            interval = int(settings.get("update_interval", 60) or 60)
        except (TypeError, ValueError):
            raise RecordError(f"settings.update_interval: {settings.get('update_interval')!r} is not a number") \
                from None
        unknown = doc.get("unknown_ipxe")
        nodes_doc = doc.get("nodes") or {}
        _require(isinstance(nodes_doc, dict), "nodes", "expected an object")
        nodes, rejected = {}, {}
        for node_id, entry in nodes_doc.items():
            try:
                nodes[node_id] = PublishedNode.from_json(node_id, entry)
            except RecordError as e:
                if strict:
                    raise
                rejected[node_id] = str(e)
        return cls(str(doc.get("generation", "")), bool(settings.get("secure", False)), interval, nodes,
                   _encodings_from_json(unknown, "unknown_ipxe") if unknown else None, rejected)

    def to_json(self, with_generation=True):
        doc = {"format": MANIFEST_FORMAT,
               "settings": {"secure": self.secure, "update_interval": self.update_interval},
               "nodes": {nid: n.to_json() for nid, n in sorted(self.nodes.items())}}
        if self.unknown_ipxe:
            doc["unknown_ipxe"] = _encodings_to_json(self.unknown_ipxe)
        if with_generation:
            doc["generation"] = self.generation
        return doc

    def files(self):
        """{store file name: Artifact} of every file the manifest names."""
        out = {}
        for encs in ([self.unknown_ipxe] if self.unknown_ipxe else []) + \
                [e for n in self.nodes.values() for e in n.artifacts.values()]:
            for artifact in encs.values():
                out[artifact.file] = artifact
        return out


def render_manifest(manifest):
    return (canonjson.dumps(manifest.to_json()) + "\n").encode()


def write_manifest(path, manifest):
    """Replace the manifest atomically (the commit point)."""
    fsutil.atomic_write(path, render_manifest(manifest))


def read_manifest(path, strict=True):
    """The Manifest in `path`, or None when there is none yet; RecordError names the file and field."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise RecordError(f"{path}: not valid JSON: {e}") from None
    try:
        return Manifest.from_json(doc, strict=strict)
    except RecordError as e:
        raise RecordError(f"{path}: {e}") from None
