"""What the server may serve: the published manifest, indexed by MAC, and its hot reload.

The manifest (docs/formats.md, "Store and manifest") is the only map from a
request to a file. A URL never names a file: it names a node and a stage, and
the file comes from the manifest, checked to be a plain name inside the store.
So nothing outside the store is ever served, whatever the path says.

A new manifest is swapped in as a whole new Catalog object; requests already
running keep the Catalog (and the open file) they started with.

One odd node never takes the manifest down: a node entry serve cannot index (a malformed
field, a file name outside the store, a MAC another node has) is left out with its reason in
`Catalog.unserved`, which the log and /status show, and every other node is served. Only a
file that is no format 1 manifest at all is refused as a whole (the last good one stays).
"""
import json
import logging
import os
import re

from wwfast import layout

log = logging.getLogger("wwfast.serve")

STAGES = ("ipxe", "kernel", "image", "system", "runtime")
# The GRUB chain (grubboot): the node's grub.cfg and its image's shim and GRUB binaries (wwfast.server.efiboot).
BOOT_LOADER_STAGES = ("grub", "shim", "grubefi")
ENCODINGS = ("zst", "gz", "raw")
# Store names are content addressed (docs/formats.md): anything else in a manifest is refused.
STORE_NAME = re.compile(r"^[0-9a-f]{64}\.(cpio\.zst|cpio\.gz|kernel|ipxe|grub|efi)$")
# Ethernet (6 octets), EUI-64 (8) and InfiniBand (20), as define accepts them; ':' or '-' throughout.
MAC = re.compile(r"^[0-9a-f]{2}(?:([:-])[0-9a-f]{2})(?:\1[0-9a-f]{2})*$")
MAC_OCTETS = (6, 8, 20)


class ManifestError(ValueError):
    """The manifest file is unreadable or does not follow the contract."""


def normalise_mac(text):
    """'52-54-00-AB-CD-EF' -> '52:54:00:ab:cd:ef'; None when it is not a 6, 8 or 20 octet address."""
    if not isinstance(text, str):
        return None
    mac = text.strip().lower()
    if not MAC.match(mac) or (mac.count(mac[2]) + 1) not in MAC_OCTETS:
        return None
    return mac.replace("-", ":")


def manifest_path(state_dir):
    return layout.manifest(state_dir)


def store_dir(state_dir):
    return layout.store_dir(state_dir)


class Artifact:
    """One stored file: its store path, size and content hash (the ETag)."""
    __slots__ = ("path", "name", "size", "sha256")

    def __init__(self, store, entry, where):
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected an object")
        name = entry.get("file")
        if not isinstance(name, str) or not STORE_NAME.match(name):
            raise ManifestError(f"{where}.file: {name!r} is not a store file name")
        sha = entry.get("sha256")
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ManifestError(f"{where}.sha256: {sha!r} is not a sha256")
        self.name = name
        self.path = os.path.join(store, name)
        self.size = entry.get("size")
        self.sha256 = sha


class Node:
    __slots__ = ("id", "macs", "addresses", "asset_key", "artifacts", "encoding", "cache_group")

    def __init__(self, node_id, entry, store):
        where = f"nodes.{node_id}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected an object")
        self.id = node_id
        for field, kind in (("macs", list), ("addresses", list), ("artifacts", dict)):
            if not isinstance(entry.get(field) or kind(), kind):
                raise ManifestError(f"{where}.{field}: expected {'a list' if kind is list else 'an object'}")
        self.macs = []
        for mac in entry.get("macs") or []:
            norm = normalise_mac(mac) if isinstance(mac, str) else None
            if norm is None:
                raise ManifestError(f"{where}.macs: {mac!r} is not a MAC address")
            self.macs.append(norm)
        self.addresses = [str(a) for a in entry.get("addresses") or []]
        self.asset_key = str(entry.get("asset_key") or "")
        # "gz" for a node whose kernel cannot unpack zstd: the encoding its script names (a request
        # without ?compress still gets zst, wwfast's default)
        self.encoding = entry.get("encoding")
        if self.encoding not in (None, "zst", "gz"):
            raise ManifestError(f"{where}.encoding: {self.encoding!r} is not zst or gz")
        self.cache_group = str(entry.get("cache_group") or "")     # scale-out: its caches come first
        self.artifacts = {}
        for stage, encodings in (entry.get("artifacts") or {}).items():
            if stage not in STAGES + BOOT_LOADER_STAGES or not isinstance(encodings, dict):
                raise ManifestError(f"{where}.artifacts.{stage}: unknown stage or not an object")
            self.artifacts[stage] = {
                enc: Artifact(store, e, f"{where}.artifacts.{stage}.{enc}")
                for enc, e in encodings.items() if enc in ENCODINGS}

    def artifact(self, stage, encoding=None):
        """The artifact for `stage` in `encoding` (None: zst, else raw, else gz), or None.

        A raw artifact (kernel, iPXE script) has a single encoding: it is the answer whatever
        `encoding` asks for (iPXE templates may add ?compress= to every URL).
        """
        encodings = self.artifacts.get(stage) or {}
        if encoding is not None:
            return encodings.get(encoding) or encodings.get("raw")
        for enc in ("zst", "raw", "gz"):
            if enc in encodings:
                return encodings[enc]
        return None


class Catalog:
    """One manifest, loaded and indexed; immutable once built."""

    def __init__(self, manifest, store, source=None):
        if not isinstance(manifest, dict) or manifest.get("format") != 1:
            raise ManifestError(f"{source}: not a format 1 manifest")
        nodes = manifest.get("nodes") or {}
        if not isinstance(nodes, dict):
            raise ManifestError(f"{source}: nodes: expected an object")
        self.generation = str(manifest.get("generation", ""))
        self.raw = None               # the manifest's bytes, when parsed from them
        settings = manifest.get("settings") if isinstance(manifest.get("settings"), dict) else {}
        self.secure = settings.get("secure") is True
        interval = settings.get("update_interval")
        self.update_interval = interval if isinstance(interval, int) and interval > 0 else 60
        self.unknown_ipxe = None
        self.unserved = {}            # node id -> why serve left it out
        unknown = manifest.get("unknown_ipxe")
        if unknown:
            try:
                self.unknown_ipxe = Artifact(store, unknown.get("raw") if isinstance(unknown, dict) else unknown,
                                             "unknown_ipxe.raw")
            except ManifestError as e:
                log.error("%s: %s; unknown MACs get a 404 instead of the unknown-node script", source, e)
        self.nodes = {}
        owners = {}                   # mac -> ids of the nodes that claim it
        for node_id, entry in nodes.items():
            try:
                node = Node(node_id, entry, store)
            except ManifestError as e:
                self.unserved[node_id] = str(e)
                continue
            if not node.macs:
                self.unserved[node_id] = f"nodes.{node_id}.macs: no MAC address: no request can name it"
                continue
            self.nodes[node_id] = node
            for mac in node.macs:
                owners.setdefault(mac, []).append(node_id)
        # A MAC two nodes claim could give a machine another's identity: neither is served.
        for mac, ids in owners.items():
            if len(ids) > 1:
                for node_id in ids:
                    others = ", ".join(i for i in ids if i != node_id)
                    self.unserved[node_id] = f"nodes.{node_id}.macs: {mac} is also the MAC of {others}"
                    self.nodes.pop(node_id, None)
        self.by_mac = {mac: self.nodes[ids[0]] for mac, ids in owners.items() if ids[0] in self.nodes}
        for node_id, reason in sorted(self.unserved.items()):
            log.error("manifest generation %s: node %s is not served: %s", self.generation, node_id, reason)

    @classmethod
    def empty(cls):
        return cls({"format": 1, "generation": "", "nodes": {}}, "/nonexistent")

    @classmethod
    def load(cls, state_dir):
        path = manifest_path(state_dir)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise ManifestError(f"{path}: {e}") from None
        return cls.parse(raw, store_dir(state_dir), path)

    @classmethod
    def parse(cls, raw, store, source):
        """The catalog of manifest bytes `raw`; keeps them as `.raw` (serve's supervisor hands them to
        its workers, so every worker indexes the very manifest the supervisor loaded)."""
        try:
            manifest = json.loads(raw)
        except ValueError as e:
            raise ManifestError(f"{source}: {e}") from None
        catalog = cls(manifest, store, source=source)
        catalog.raw = raw
        return catalog


def _identity(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class CatalogWatcher:
    """Holds the current Catalog and swaps in a new one when manifest.json changes.

    Polls the file's inode/mtime/size every `interval` seconds (publish replaces
    the file by rename, so the inode changes). A bad manifest is logged and the
    previous one stays in service.
    """

    def __init__(self, state_dir, interval=1.0, on_swap=None):
        self.state_dir = state_dir
        self.interval = interval
        self.on_swap = on_swap
        self.path = manifest_path(state_dir)
        self.current = Catalog.empty()
        self.loaded = False
        self._seen = None
        self._timer = None
        self._loop = None

    def check(self):
        """Reload when the file changed; True when a new catalog was swapped in."""
        ident = _identity(self.path)
        if ident == self._seen:
            return False
        self._seen = ident
        if ident is None:
            if self.loaded:
                log.warning("%s disappeared; still serving generation %s", self.path, self.current.generation)
            return False
        try:
            catalog = Catalog.load(self.state_dir)
        except ManifestError as e:
            log.error("manifest not loaded, keeping generation %r: %s", self.current.generation, e)
            return False
        old, self.current, self.loaded = self.current, catalog, True
        log.info("serving manifest generation %s (%d nodes)", catalog.generation, len(catalog.nodes))
        if self.on_swap:
            self.on_swap(old, catalog)
        return True

    def start(self, loop):
        self._loop = loop
        self.check()
        self._timer = loop.call_later(self.interval, self._tick)

    def _tick(self):
        try:
            self.check()
        finally:
            self._timer = self._loop.call_later(self.interval, self._tick)

    def stop(self):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
