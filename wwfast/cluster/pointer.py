"""The published generation shared through etcd: one key points at the manifest; every server follows it.

`<prefix>manifest/current` = {"generation", "sha256" (of the manifest file's bytes), "size", "origins"
(servers that hold every file of it), "published"}. A publish is one transaction (compare-and-swap on
the key's revision, so two publishers never interleave). The files themselves travel as files: a server
that lacks the manifest or any store file it names pulls it from an origin's /blob/sha256/<digest> (the
content address, checked on arrival) before it installs the manifest atomically as its own
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

from wwfast import fsutil, layout
from wwfast.cluster.etcd import Etcd
from wwfast.publish.manifest import manifest_files, manifest_path, store_dir

log = logging.getLogger("wwfast.cluster")
CHUNK = 1 << 20


class PublishConflict(RuntimeError):
    """Another publisher moved the pointer while this one was publishing."""


def pointer_key(prefix):
    return f"{prefix}manifest/current"


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


def publish(etcd, prefix, state_dir, origins):
    """Point the cluster at STATE/publish/manifest.json in one transaction; returns the pointer."""
    with open(manifest_path(state_dir), "rb") as f:
        data = f.read()
    manifest = json.loads(data)
    pointer = {"generation": manifest.get("generation", ""), "sha256": hashlib.sha256(data).hexdigest(),
               "size": len(data), "origins": list(origins), "published": time.time()}
    current, revision = read_pointer(etcd, prefix)
    if current is not None and current.get("sha256") == pointer["sha256"]:
        return current
    key = pointer_key(prefix)
    value = json.dumps(pointer, sort_keys=True)
    if not etcd.txn([Etcd.op_put(key, value)], compare=[Etcd.compare_mod_revision(key, revision)]):
        now, _ = read_pointer(etcd, prefix)       # a retried request may have landed already
        if now is None or now.get("sha256") != pointer["sha256"]:
            raise PublishConflict(f"another publish moved the pointer meanwhile (now generation "
                                  f"{(now or {}).get('generation', '?')}); run the publish again")
    return pointer


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
    """Follows the pointer: fetches what is missing, installs the manifest, records each switch."""

    def __init__(self, etcd, prefix, state_dir, on_switch=None, name=""):
        self.etcd, self.prefix, self.state_dir, self.on_switch, self.name = etcd, prefix, state_dir, on_switch, name
        self.switches = []          # (time installed, generation, sha256, pointer's published time, files pulled)
        self.errors = []
        self.current_sha = _sha256_of(manifest_path(state_dir))
        self._lock = threading.Lock()
        self.watch = None

    def start(self):
        pointer, revision = read_pointer(self.etcd, self.prefix)
        if pointer is not None:
            self.follow(pointer)
        self.watch = self.etcd.watch(pointer_key(self.prefix), self._events, start_revision=revision + 1)
        return self

    def _events(self, events):
        for kind, _, value, _ in events:
            if kind != "PUT":
                continue
            try:
                self.follow(json.loads(value))
            except ValueError:
                log.error("etcd pointer is not JSON; ignoring it")

    def follow(self, pointer):
        with self._lock:
            sha = pointer.get("sha256")
            if not sha or sha == self.current_sha:
                return
            # the pointer arrived; what follows (pulling what is missing) may take longer on a busy link
            log.info("%s: pointer to generation %s seen", self.name, pointer.get("generation"))
            try:
                pulled = self._install(pointer)
            except (OSError, ValueError) as e:
                self.errors.append((time.time(), str(e)))
                log.error("%s: cannot switch to generation %s: %s", self.name, pointer.get("generation"), e)
                return
            self.current_sha = sha
            self.switches.append((time.time(), pointer.get("generation"), sha, pointer.get("published"), pulled))
            log.info("%s: switched to generation %s (%d files fetched)", self.name, pointer.get("generation"),
                     pulled)
        if self.on_switch:
            self.on_switch(pointer)

    def _install(self, pointer):
        origins = pointer.get("origins") or []
        incoming = layout.publish_incoming(self.state_dir)
        os.makedirs(incoming, exist_ok=True)
        staged = os.path.join(incoming, f"{pointer['sha256']}.json")
        pulled = 0
        if _sha256_of(staged) != pointer["sha256"]:
            pull(origins, pointer["sha256"], staged)
            pulled += 1
        with open(staged, "rb") as f:
            data = f.read()
        manifest = json.loads(data)
        store = store_dir(self.state_dir)
        os.makedirs(store, exist_ok=True)
        for name, (size, digest) in sorted(manifest_files(manifest).items()):
            path = os.path.join(store, name)
            if os.path.exists(path) and os.path.getsize(path) == size:
                continue          # content-addressed name and the right size: a file we already hold
            pull(origins, digest, path, size)
            pulled += 1
        fsutil.atomic_write(manifest_path(self.state_dir), data)
        os.unlink(staged)
        return pulled

    def stop(self):
        if self.watch is not None:
            self.watch.stop()


def publish_from_settings(settings, state_dir):
    """The compress stage's last step in etcd mode: point the cluster at this server's manifest."""
    from wwfast.define.cluster_settings import server_url
    return publish(Etcd(settings.etcd_endpoints), settings.etcd_prefix, state_dir, [server_url(settings)])
