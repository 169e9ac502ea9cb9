"""The published generation shared through etcd: the manifest itself in etcd, one key points at it.

Keys (under the prefix; docs/formats.md):
- `manifest/current` = {"generation", "sha256" (of the manifest file's bytes), "size", "origins" (servers
  that hold every file of it), "published"} and, when etcd carries the manifest, "encoding": "zstd",
  "parts" (count) and "packed" (compressed size);
- `manifest/data/<sha256>/<part>` = the zstd-compressed manifest, cut in parts of at most PART_BYTES.

A publish is one transaction: the pointer, compare-and-swap on its revision (two publishers never
interleave), together with the manifest's one part (a manifest that compresses to at most PART_BYTES,
about 5,000 nodes) and the removal of parts no pointer names any more. A larger manifest's parts go in
their own transactions first (etcd refuses a request over 1.5 MiB by default): content-addressed and
named by no pointer yet, they change nothing until the pointer's transaction names them. So a follower
gets the manifest from etcd, not as one more HTTP flow over a link a boot storm saturates; it reads the
parts from the watch event that carries the pointer (same revision) or from the etcd member it talks to.
Past IN_ETCD_MAX compressed bytes the manifest travels as its files do, pulled over HTTP.

The store files travel as files: a server that lacks one pulls it from an origin's /blob/sha256/<digest>
(the content address, checked on arrival) before it installs the manifest atomically as its own
STATE/publish/manifest.json, which its serve processes pick up. A server that holds everything already
(shared storage, a copy made beforehand) switches at once.
"""
import hashlib
import json
import logging
import os
import threading
import time
import urllib.request

import zstandard

from wwfast import fsutil, layout
from wwfast.cluster.etcd import Etcd, EtcdUnavailable
from wwfast.publish.manifest import manifest_files, manifest_path, store_dir

log = logging.getLogger("wwfast.cluster")
CHUNK = 1 << 20
# One part per etcd value: with the pointer in the same transaction the request stays under etcd's default
# --max-request-bytes (1.5 MiB), which counts the binary request (the JSON gateway's base64 is decoded first).
PART_BYTES = 1 << 20
IN_ETCD_MAX = 16 << 20      # compressed manifests larger than this are pulled over HTTP (etcd keeps history)
TXN_OPS = 128               # etcd's default --max-txn-ops
ZSTD_LEVEL = 9


class PublishConflict(RuntimeError):
    """Another publisher moved the pointer while this one was publishing."""


def pointer_key(prefix):
    return f"{prefix}manifest/current"


def data_key(prefix, sha="", part=None):
    return f"{prefix}manifest/data/" + (f"{sha}/" if sha else "") + ("" if part is None else f"{part:04d}")


def read_pointer(etcd, prefix):
    """(pointer dict or None, mod_revision)."""
    raw, revision = etcd.get(pointer_key(prefix))
    if raw is None:
        return None, 0
    try:
        return json.loads(raw), revision
    except ValueError:
        log.error("etcd %s is not JSON; ignoring it", pointer_key(prefix))
        return None, revision


def publish(etcd, prefix, state_dir, origins, part_bytes=PART_BYTES, in_etcd_max=IN_ETCD_MAX):
    """Point the cluster at STATE/publish/manifest.json in one transaction (the manifest rides along when
    it is small enough, see the module doc); returns the pointer."""
    with open(manifest_path(state_dir), "rb") as f:
        data = f.read()
    manifest = json.loads(data)
    sha = hashlib.sha256(data).hexdigest()
    pointer = {"generation": manifest.get("generation", ""), "sha256": sha, "size": len(data),
               "origins": list(origins), "published": time.time()}
    current, revision = read_pointer(etcd, prefix)
    if current is not None and current.get("sha256") == sha:
        return current
    ops = []
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(data)
    if len(packed) <= in_etcd_max:
        parts = [packed[i:i + part_bytes] for i in range(0, len(packed), part_bytes)] or [b""]
        pointer.update(encoding="zstd", parts=len(parts), packed=len(packed))
        if len(parts) == 1:
            ops.append(Etcd.op_put(data_key(prefix, sha, 0), parts[0]))
        else:
            for i, part in enumerate(parts):   # named by no pointer yet: invisible until the transaction below
                etcd.txn([Etcd.op_put(data_key(prefix, sha, i), part)])
    # the parts of manifests no pointer names any more: kept are the new one and the one it replaces
    keep = {sha, (current or {}).get("sha256")}
    stale = sorted({k[len(data_key(prefix)):].split("/", 1)[0] for k in etcd.keys(data_key(prefix))} - keep)
    ops += [Etcd.op_delete_prefix(data_key(prefix, old)) for old in stale[:TXN_OPS - len(ops) - 1]]
    key = pointer_key(prefix)
    ops.append(Etcd.op_put(key, json.dumps(pointer, sort_keys=True)))
    if not etcd.txn(ops, compare=[Etcd.compare_mod_revision(key, revision)]):
        now, _ = read_pointer(etcd, prefix)       # a retried request may have landed already
        if now is None or now.get("sha256") != sha:
            raise PublishConflict(f"another publish moved the pointer meanwhile (now generation "
                                  f"{(now or {}).get('generation', '?')}); run the publish again")
    return pointer


def manifest_from_etcd(etcd, prefix, pointer, parts=None):
    """The manifest bytes the pointer names, from its parts in etcd (`parts`: {key: value} already at hand,
    e.g. from the watch event that carried the pointer); checked against the pointer's sha256."""
    sha, count = pointer["sha256"], int(pointer["parts"])
    if pointer.get("encoding") != "zstd":
        raise ValueError(f"manifest encoding {pointer.get('encoding')!r} unknown")
    pieces = []
    for i in range(count):
        key = data_key(prefix, sha, i)
        value = (parts or {}).get(key)
        if value is None:
            value, _ = etcd.get(key)
        if value is None:
            raise ValueError(f"etcd has no {key} (a newer publish removed it?)")
        pieces.append(value)
    try:
        data = zstandard.ZstdDecompressor().decompress(b"".join(pieces), max_output_size=int(pointer["size"]))
    except zstandard.ZstdError as e:
        raise ValueError(f"manifest parts in etcd do not decompress: {e}") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"manifest from etcd does not match its sha256 {sha}")
    return data


def _sha256_of(path):
    try:
        return fsutil.sha256_file(path)
    except FileNotFoundError:
        return None


def pull(origins, digest, dest, size=None, timeout=30):
    """Fetch /blob/sha256/<digest> from the first origin that has it into `dest` (atomically, checked)."""
    errors = []
    for origin in origins:
        url = f"{origin.rstrip('/')}/blob/sha256/{digest}"
        try:
            h = hashlib.sha256()
            with urllib.request.urlopen(url, timeout=timeout) as r, fsutil.atomic_file(dest) as out:
                while True:
                    chunk = r.read(CHUNK)
                    if not chunk:
                        break
                    h.update(chunk)
                    out.write(chunk)
                if h.hexdigest() != digest:
                    raise ValueError(f"content does not match its address (got {h.hexdigest()})")
            return origin
        except (OSError, ValueError) as e:
            errors.append(f"{url}: {e}")
    raise OSError("could not fetch blob " + digest + ": " + "; ".join(errors))


class PointerFollower:
    """Follows the pointer: gets the manifest, fetches missing store files, installs it, records each switch."""

    def __init__(self, etcd, prefix, state_dir, on_switch=None, name=""):
        self.etcd, self.prefix, self.state_dir, self.on_switch, self.name = etcd, prefix, state_dir, on_switch, name
        # (time installed, generation, sha256, pointer's published time, store files pulled, where the
        # manifest came from: "etcd", "http", "staged" (STATE/publish/incoming) or "local" (installed already))
        self.switches = []
        self.errors = []
        self.current_sha = _sha256_of(manifest_path(state_dir))
        self._lock = threading.Lock()
        self.watch = None

    def start(self):
        pointer, revision = read_pointer(self.etcd, self.prefix)
        if pointer is not None:
            self.follow(pointer)
        # the whole manifest/ prefix: a publish's parts come in the same event batch as its pointer
        self.watch = self.etcd.watch(f"{self.prefix}manifest/", self._events, prefix=True,
                                     start_revision=revision + 1)
        return self

    def _events(self, events):
        parts, key = {}, pointer_key(self.prefix)
        for kind, name, value, _ in events:
            if kind != "PUT":
                continue
            if name != key:
                parts[name] = value
                continue
            try:
                pointer = json.loads(value)
            except ValueError:
                log.error("etcd pointer is not JSON; ignoring it")
                continue
            self.follow(pointer, parts)

    def follow(self, pointer, parts=None):
        with self._lock:
            sha = pointer.get("sha256")
            if not sha or sha == self.current_sha:
                return
            # the pointer arrived; what follows (pulling what is missing) may take longer on a busy link
            log.info("%s: pointer to generation %s seen", self.name, pointer.get("generation"))
            try:
                source, pulled = self._install(pointer, parts)
            except (OSError, ValueError) as e:
                self.errors.append((time.time(), str(e)))
                log.error("%s: cannot switch to generation %s: %s", self.name, pointer.get("generation"), e)
                return
            self.current_sha = sha
            self.switches.append((time.time(), pointer.get("generation"), sha, pointer.get("published"), pulled,
                                  source))
            log.info("%s: switched to generation %s (manifest from %s, %d store files fetched)", self.name,
                     pointer.get("generation"), source, pulled)
        if self.on_switch:
            self.on_switch(pointer)

    def _manifest(self, pointer, parts):
        """(manifest bytes, where they came from): what is on disk already, else etcd, else HTTP."""
        sha = pointer["sha256"]
        installed = manifest_path(self.state_dir)
        if _sha256_of(installed) == sha:           # the publishing server itself
            with open(installed, "rb") as f:
                return f.read(), "local"
        staged = os.path.join(layout.publish_incoming(self.state_dir), f"{sha}.json")
        source = "staged"
        if _sha256_of(staged) != sha:
            if pointer.get("parts"):
                try:
                    return manifest_from_etcd(self.etcd, self.prefix, pointer, parts), "etcd"
                except (EtcdUnavailable, ValueError, KeyError) as e:
                    log.warning("%s: manifest of generation %s not read from etcd (%s); pulling it",
                                self.name, pointer.get("generation"), e)
            os.makedirs(os.path.dirname(staged), exist_ok=True)
            pull(pointer.get("origins") or [], sha, staged)
            source = "http"
        with open(staged, "rb") as f:
            return f.read(), source     # removed once installed (a failed store pull keeps it for the retry)

    def _install(self, pointer, parts=None):
        origins = pointer.get("origins") or []
        data, source = self._manifest(pointer, parts)
        manifest = json.loads(data)
        store = store_dir(self.state_dir)
        os.makedirs(store, exist_ok=True)
        pulled = 0
        for name, (size, digest) in sorted(manifest_files(manifest).items()):
            path = os.path.join(store, name)
            if os.path.exists(path) and os.path.getsize(path) == size:
                continue          # content-addressed name and the right size: a file we already hold
            pull(origins, digest, path, size)
            pulled += 1
        if source != "local":
            fsutil.atomic_write(manifest_path(self.state_dir), data)
        if source in ("staged", "http"):
            os.unlink(os.path.join(layout.publish_incoming(self.state_dir), f"{pointer['sha256']}.json"))
        return source, pulled

    def stop(self):
        if self.watch is not None:
            self.watch.stop()


def publish_from_settings(settings, state_dir):
    """The compress stage's last step in etcd mode: point the cluster at this server's manifest."""
    from wwfast.define.cluster_settings import server_url
    return publish(Etcd(settings.etcd_endpoints), settings.etcd_prefix, state_dir, [server_url(settings)])
