"""What the server may serve: the published manifest, indexed by MAC, and its hot reload.

The manifest (docs/formats.md, "Store and manifest") is the only map from a
request to a file. A URL never names a file: it names a node and a stage, and
the file comes from the manifest, checked to be a plain name inside the store.
So nothing outside the store is ever served, whatever the path says.

A new manifest is swapped in as a whole new Catalog object; requests already
running keep the Catalog (and the open file) they started with.
"""
import json
import logging
import os
import re

from wwfast import layout

log = logging.getLogger("wwfast.serve")

STAGES = ("ipxe", "kernel", "image", "system", "runtime")
ENCODINGS = ("zst", "gz", "raw")
# Store names are content addressed (docs/formats.md): anything else in a manifest is refused.
STORE_NAME = re.compile(r"^[0-9a-f]{64}\.(cpio\.zst|cpio\.gz|kernel|ipxe)$")
MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


class ManifestError(ValueError):
    """The manifest file is unreadable or does not follow the contract."""


def normalise_mac(text):
    """'52-54-00-AB-CD-EF' -> '52:54:00:ab:cd:ef'; None when it is not a MAC address."""
    mac = text.strip().lower().replace("-", ":")
    return mac if MAC.match(mac) else None


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
    __slots__ = ("id", "macs", "addresses", "asset_key", "artifacts")

    def __init__(self, node_id, entry, store):
        where = f"nodes.{node_id}"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: expected an object")
        self.id = node_id
        self.macs = []
        for mac in entry.get("macs") or []:
            norm = normalise_mac(mac) if isinstance(mac, str) else None
            if norm is None:
                raise ManifestError(f"{where}.macs: {mac!r} is not a MAC address")
            self.macs.append(norm)
        self.addresses = [str(a) for a in entry.get("addresses") or []]
        self.asset_key = str(entry.get("asset_key") or "")
        self.artifacts = {}
        for stage, encodings in (entry.get("artifacts") or {}).items():
            if stage not in STAGES or not isinstance(encodings, dict):
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
        self.generation = str(manifest.get("generation", ""))
        settings = manifest.get("settings") or {}
        self.secure = bool(settings.get("secure", False))
        self.update_interval = int(settings.get("update_interval", 60) or 60)
        unknown = (manifest.get("unknown_ipxe") or {}).get("raw")
        self.unknown_ipxe = Artifact(store, unknown, "unknown_ipxe.raw") if unknown else None
        self.nodes = {}
        self.by_mac = {}
        for node_id, entry in (manifest.get("nodes") or {}).items():
            node = Node(node_id, entry, store)
            self.nodes[node_id] = node
            for mac in node.macs:
                self.by_mac[mac] = node

    @classmethod
    def empty(cls):
        return cls({"format": 1, "generation": "", "nodes": {}}, "/nonexistent")

    @classmethod
    def load(cls, state_dir):
        path = manifest_path(state_dir)
        try:
            with open(path, "rb") as f:
                manifest = json.load(f)
        except (OSError, ValueError) as e:
            raise ManifestError(f"{path}: {e}") from None
        return cls(manifest, store_dir(state_dir), source=path)


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


def script_mac(path):
    """The MAC of a per-node iPXE script name asked over TFTP, or None for any other file.

    `<mac>.ipxe`, `ipxe/<mac>` and `ipxe/<mac>.ipxe` (MAC with ':' or '-', any case).
    """
    name = path.lstrip("/")
    in_ipxe_dir = name.startswith("ipxe/")
    if in_ipxe_dir:
        name = name[5:]
    if name.endswith(".ipxe"):
        name = name[:-5]
    elif not in_ipxe_dir:
        return None          # a bare name without .ipxe is a file in the TFTP root
    return normalise_mac(name)


def tftp_resolver(watcher, pins=None):
    """resolve(path) for the TFTP server: per-node iPXE scripts by MAC, from the current manifest.

    Answers the names script_mac() knows: the node's script, or the unknown-node script for a
    MAC no node has. Anything else is None, so the TFTP server looks in its root directory.
    With `pins` (wwfast.server.pins.BootPins) the script fetch starts the node's boot, as
    GET /ipxe does: its later HTTP requests come from the generation this script came from.
    """
    def resolve(path):
        mac = script_mac(path)
        if mac is None:
            return None
        catalog = pins.catalog_for(mac, "ipxe", watcher.current) if pins is not None else watcher.current
        node = catalog.by_mac.get(mac)
        artifact = node.artifact("ipxe") if node else catalog.unknown_ipxe
        if artifact is None:
            return None
        try:
            with open(artifact.path, "rb") as f:
                return f.read()
        except OSError as e:
            log.error("TFTP %s: store file missing: %s", path, e)
            return None
    return resolve
