"""Publish the build: a content-addressed store of what nodes download, and the manifest naming it.

    STATE/store/<sha256 of the uncompressed input>.cpio.zst | .cpio.gz | .kernel | .ipxe
    STATE/publish/manifest.json     node -> artifacts (docs/formats.md); the commit point

Whether to run at all is the stage runner's decision (wwfast.runner, stages/compress.py); this module
publishes when called. Its memory between runs (input hashes by stat key, store hashes, retired store
files) is a dict the caller keeps: the compress stage's stamp.

Crash safety (kill -9 at any moment): store files appear only by rename of a whole temp file and are
never rewritten, because a name is fixed by its input's content; the manifest is replaced atomically
after every file it names is durable; store files the manifest no longer names are deleted only after a
grace period, so a node that fetched the old manifest's files keeps getting them. A killed run leaves
at most temp files, which the next run removes while holding the lock.
"""
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import os
import tempfile
import time

from wwfast import canonjson, fsutil, layout
from wwfast.publish import compress, packed
from wwfast.publish.progress import Progress

FORMAT = 1
# Bump when the same inputs would publish different bytes (compressor parameters, manifest layout).
STAGE_VERSION = "compress-2"
GRACE_SECONDS = 600
# A changed archive this large is hashed while it is compressed (one read, the hash beside the zstd
# workers) and named afterwards; smaller ones are hashed first, so unchanged content costs no compression.
FUSE_MIN = 16 << 20
ARCHIVES = (("image", "image_cpio"), ("system", "system"), ("runtime", "runtime"))
SUFFIXES = {"zst": ".cpio.zst", "gz": ".cpio.gz", "kernel": ".kernel", "ipxe": ".ipxe", "grub": ".grub",
            "efi": ".efi"}
# The GRUB chain (build.json fields only with grubboot): (manifest artifact, build.json field, store kind).
BOOT_LOADERS = (("grub", "grub", "grub"), ("shim", "shim", "efi"), ("grubefi", "grubefi", "efi"))
# What the manifest needs of a node, from build.json (the build stage copies it from nodes.json).
NODE_FIELDS = ("macs", "addresses", "asset_key")
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


class PublishError(Exception):
    """The build outputs cannot be published as they are (message says which file and why)."""


def store_dir(state_dir):
    return layout.store_dir(state_dir)


def publish_dir(state_dir):
    return layout.publish_dir(state_dir)


def manifest_path(state_dir):
    return layout.manifest(state_dir)


def build_dir(state_dir):
    return layout.build_dir(state_dir)


def load_manifest(state_dir):
    """The published manifest as a dict, or None before the first publish."""
    path = manifest_path(state_dir)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None
    except ValueError as e:  # cannot happen through us (atomic writes); say where if a person edited it
        raise PublishError(f"{path}: not valid JSON: {e}") from None


def manifest_files(manifest):
    """{store file name: (size, sha256)} of every file the manifest names."""
    files = {}

    def add(artifact):
        for entry in artifact.values():
            files[entry["file"]] = (entry["size"], entry["sha256"])

    if manifest.get("unknown_ipxe"):
        add(manifest["unknown_ipxe"])
    for node in manifest.get("nodes", {}).values():
        for artifact in node["artifacts"].values():
            add(artifact)
    return files


# ---- what the stage remembers between runs ----

def _stat_key(st):
    # A rebuilt file arrives by rename (new inode); an edit in place changes mtime and ctime.
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _settled_key(path, key):
    """The stat key to remember for an input read with `key`: the same, but with the ctime it has now
    when only that moved (the store took a hard link to it), so the link is no change next time."""
    try:
        now = _stat_key(os.stat(path))
    except FileNotFoundError:
        return key
    return now if [now[0], now[1], now[3]] == [key[0], key[1], key[3]] else key


def stale_items(state_dir, memory):
    """The compress stage's own check beside the runner's (per item, against its memory): build outputs
    whose stat moved since they were published, and store files the manifest names that are gone or
    changed size. Returns reasons ([] = nothing)."""
    reasons = []
    base = build_dir(state_dir)
    changed = []
    for rel, known in sorted(memory.get("inputs", {}).items()):
        try:
            if _stat_key(os.stat(os.path.join(base, rel))) != known[:4]:
                changed.append(rel)
        except FileNotFoundError:
            changed.append(rel + " (missing)")
    if changed:
        shown = ", ".join(changed[:3]) + (f" and {len(changed) - 3} more" if len(changed) > 3 else "")
        reasons.append(f"{len(changed)} build output(s) changed: {shown}")
    store = store_dir(state_dir)
    for name, (size, _) in sorted(memory.get("store", {}).items()):
        try:
            if os.stat(os.path.join(store, name)).st_size != size:
                reasons.append(f"store file {name} has the wrong size")
                break
        except FileNotFoundError:
            reasons.append(f"store file {name} is missing")
            break
    return reasons


def _settings_key(settings):
    from wwfast.define.cluster_settings import cache_tier
    return {"zstd_level": settings.zstd_level, "gzip": bool(settings.gzip),
            "secure": bool(settings.secure), "update_interval": settings.update_interval,
            "cache_group_tag": getattr(settings, "cache_group_tag", ""), "cache_tier": cache_tier(settings)}


def _read_bytes(path, what):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise PublishError(f"{path} does not exist: run the {what} stage first") from None


def _read_build(state_dir):
    path = layout.build_json(state_dir)
    raw = _read_bytes(path, "build")
    try:
        build = json.loads(raw)
        if build.get("format") != 1 or not isinstance(build.get("nodes"), dict):
            raise ValueError("expected {\"format\": 1, \"nodes\": {...}}")
    except (ValueError, AttributeError) as e:
        raise PublishError(f"{path}: {e}") from None
    return build, fsutil.sha256_bytes(raw)


def _build_inputs(build, path):
    """{relative path: kind} of every distinct build output to publish (kind: archive, kernel, ipxe, grub, efi)."""
    inputs = {}
    try:
        for node_id, entry in build["nodes"].items():
            inputs[entry["kernel"]] = "kernel"
            inputs[entry["ipxe"]] = "ipxe"
            for _, key in ARCHIVES:
                inputs[entry[key]] = "archive"
            for _, key, kind in BOOT_LOADERS:
                if entry.get(key):
                    inputs[entry[key]] = kind
        if build.get("unknown_ipxe"):
            inputs[build["unknown_ipxe"]] = "ipxe"
    except (KeyError, TypeError) as e:
        raise PublishError(f"{path}: node {node_id!r} lacks {e}") from None
    for rel in inputs:
        if os.path.isabs(rel) or ".." in rel.split("/"):
            raise PublishError(f"{path}: {rel!r} is not a path inside the build directory")
    return inputs


def _gzip_needed(build):
    """Archives (build-relative paths) of nodes whose kernel cannot unpack zstd: they are gzipped too."""
    from wwfast.builder.kernels import reads_zstd
    return {entry[key] for entry in build["nodes"].values() if not reads_zstd(entry.get("kernel_version"))
            for _, key in ARCHIVES}


# ---- publishing ----

class _Publisher:
    def __init__(self, state_dir, settings, progress_enabled):
        self.state_dir = state_dir
        self.settings = settings
        self.store = store_dir(state_dir)
        self.base = build_dir(state_dir)
        self.progress_enabled = progress_enabled
        self.encodings = ("zst", "gz") if settings.gzip else ("zst",)
        self.zstd = compress.ZstdEncoder(settings.zstd_level, settings.threads)
        # gzip also without `compression: gzip` for the archives of nodes whose kernel predates zstd
        self.gzip = compress.GzipEncoder(compress.GZIP_LEVEL, settings.threads)
        self.gzip_needed = set()
        self.compressed = 0      # store files written this run
        self.reused = 0

    def run(self, memory):
        build, _ = _read_build(self.state_dir)
        inputs = _build_inputs(build, os.path.join(self.base, "build.json"))
        with _as_publish_error():
            self.packs = packed.read(build, os.path.join(self.base, "build.json"))
        inputs.update((rel, "packed") for rel in self.packs)   # packed by the build: linked, not compressed
        self.gzip_needed = _gzip_needed(build)
        known_inputs = memory.get("inputs", {}) if memory.get("version") == STAGE_VERSION else {}
        known_store = dict(memory.get("store", {}))
        previous = load_manifest(self.state_dir)
        if previous:
            known_store.update({name: list(v) for name, v in manifest_files(previous).items()})

        os.makedirs(self.store, exist_ok=True)
        hashed, fused = self._hash_inputs(inputs, known_inputs)
        for rel, path, key in fused:
            hashed[rel] = self._compress_unhashed(path, key, known_store)
        entries = self._fill_store(inputs, hashed, known_store)
        _sync_filesystem(self.store)   # every file the manifest will name is durable before it
        manifest = self._manifest(build, entries)
        changed = previous is None or _body(previous) != _body(manifest)
        if changed:
            fsutil.atomic_write(manifest_path(self.state_dir), canonjson.dumps(manifest) + "\n")  # commit point
        else:
            manifest = previous
        recorded = {rel: _settled_key(os.path.join(self.base, rel), hashed[rel][0]) + [hashed[rel][1]]
                    for rel in inputs if inputs[rel] != "packed"}
        for rel in self.packs:   # a packed archive is checked next time by its files
            for enc, name in packed.files(self.packs[rel]).items():
                path = os.path.join(self.base, name)
                recorded[name] = _settled_key(path, _stat_key(os.stat(path))) + [self.packs[rel][enc]["sha256"]]
        memory.update({
            "version": STAGE_VERSION,
            "inputs": recorded,
            "store": {name: [size, sha] for name, (size, sha) in manifest_files(manifest).items()},
            "generation": manifest["generation"],
        })
        self.inputs = [os.path.join(self.base, name) for rel in sorted(inputs)
                       for name in (packed.files(self.packs[rel]).values() if rel in self.packs else [rel])]
        return manifest, changed

    def _hash_inputs(self, inputs, known):
        """({rel: (stat key, sha256 of the content)}, [(rel, path, stat key)] left to hash while
        compressing); unchanged files keep their recorded hash."""
        hashed, todo, fused = {}, [], []
        for rel in sorted(inputs):
            if inputs[rel] == "packed":   # the build recorded its content hash as it packed it
                with _as_publish_error():
                    hashed[rel] = (packed.stat_key(self.base, rel, self.packs[rel]), self.packs[rel]["sha256"])
                continue
            path = os.path.join(self.base, rel)
            try:
                key = _stat_key(os.stat(path))
            except FileNotFoundError:
                raise PublishError(f"{path} is named in build.json but does not exist: "
                                   f"run the build stage") from None
            old = known.get(rel)
            if old and old[:4] == key:
                hashed[rel] = (key, old[4])
            elif inputs[rel] == "archive" and key[0] >= FUSE_MIN:
                fused.append((rel, path, key))
            else:
                todo.append((rel, path, key))
        progress = Progress(sum(k[0] for _, _, k in todo), "hash    ", enabled=self.progress_enabled)
        for rel, path, key in todo:
            with open(path, "rb", buffering=0) as f:
                digest = _hash_file(f, progress)
                if _stat_key(os.fstat(f.fileno())) != key:
                    raise PublishError(f"{path} changed while it was read: is a build running?")
            hashed[rel] = (key, digest)
        progress.close()
        return hashed, fused

    def _compress_unhashed(self, path, key, known_store):
        """zstd-compress a changed archive while hashing it, then name the result by the hash.

        The temp file carries the temp prefix and suffix, so a killed run leaves only garbage that the
        next run removes. Returns (stat key, sha256); records the new store file in `known_store`.
        """
        digest = hashlib.sha256()
        progress = Progress(key[0], "compress", enabled=self.progress_enabled)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + "unnamed.", suffix=TEMP_SUFFIX, dir=self.store)
        try:
            with open(path, "rb", buffering=0) as src, os.fdopen(fd, "wb") as raw:
                if _stat_key(os.fstat(src.fileno())) != key:
                    raise PublishError(f"{path} changed while it was read: is a build running?")
                out = fsutil.HashingWriter(raw)
                self.zstd.compress(src, out, key[0], tap=digest.update,
                                   progress=lambda n: progress.advance(n - progress.done))
            progress.close()
            name = digest.hexdigest() + SUFFIXES["zst"]
            final = os.path.join(self.store, name)
            if os.path.exists(final):      # same content as a stored input: keep the stored file
                os.unlink(tmp)
            else:
                os.chmod(tmp, 0o644)
                os.replace(tmp, final)
                known_store[name] = [out.size, out.hash.hexdigest()]
                self.compressed += 1
                self.reused -= 1           # _fill_store counts the file it finds as reused
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return key, digest.hexdigest()

    def _fill_store(self, inputs, hashed, known_store):
        """Make sure every store file exists; {rel: {encoding: manifest entry}}."""
        work = []      # (rel, encoding, name)
        entries = {}
        for rel, kind in sorted(inputs.items()):
            sha = hashed[rel][1]
            archive = kind in ("archive", "packed")
            encodings = self.encodings if archive else (kind,)
            if archive and rel in self.gzip_needed and "gz" not in encodings:
                encodings += ("gz",)
            entries[rel] = {}
            for enc in encodings:
                name = sha + SUFFIXES[enc]
                path = os.path.join(self.store, name)
                try:
                    size = os.stat(path).st_size
                except FileNotFoundError:
                    work.append((rel, enc, name))
                    continue
                self.reused += 1
                known = known_store.get(name)
                if known and known[0] == size:
                    entries[rel][enc] = _entry(name, size, known[1])
                else:   # whole (it was renamed into place) but left by a run that died before recording it
                    with open(path, "rb", buffering=0) as f:
                        entries[rel][enc] = _entry(name, size, _hash_file(f))
        total = sum(hashed[rel][0][0] for rel, _, _ in work)
        progress = Progress(total, "compress", enabled=self.progress_enabled)
        for rel, enc, name in work:
            if inputs[rel] == "packed":
                entries[rel][enc] = self._store_packed(rel, enc, name)
            else:
                entries[rel][enc] = self._store_one(rel, enc, name, hashed[rel], progress)
            self.compressed += 1
        progress.close()
        return entries

    def _store_packed(self, rel, enc, name):
        """Store a file the build packed: a link to it (a copy where links fail), its recorded entry."""
        with _as_publish_error():
            path, size, sha = packed.entry(self.base, rel, self.packs[rel], enc)
            dest = os.path.join(self.store, name)
            if not packed.link_into(path, dest, TEMP_PREFIX, TEMP_SUFFIX):
                with fsutil.atomic_file(dest, fsync=False) as raw:
                    packed.copy_into(path, raw)
        return _entry(name, size, sha)

    def _store_one(self, rel, enc, name, hashed, progress):
        path = os.path.join(self.base, rel)
        key, content_sha = hashed
        if enc == "kernel":   # stored as it is: a link to the build's copy, so the disk holds it once
            with _as_publish_error():
                linked = packed.link_into(path, os.path.join(self.store, name), TEMP_PREFIX, TEMP_SUFFIX,
                                          expect=[key[0], key[1], key[3]])
            if linked:
                progress.advance(key[0])
                return _entry(name, key[0], content_sha)
        start = progress.done
        with open(path, "rb", buffering=0) as src:
            if _stat_key(os.fstat(src.fileno())) != key:
                raise PublishError(f"{path} changed while it was read: is a build running?")
            # fsync once for the whole store before the manifest, not per file
            with fsutil.atomic_file(os.path.join(self.store, name), fsync=False) as raw:
                out = fsutil.HashingWriter(raw)
                report = lambda n: progress.advance(start + n - progress.done)  # noqa: E731
                if enc == "zst":
                    self.zstd.compress(src, out, key[0], progress=report)
                elif enc == "gz":
                    self.gzip.compress(src, out, progress=report)
                else:   # kernel, ipxe, grub, efi: stored as they are
                    while chunk := src.read(compress.READ_SIZE):
                        out.write(chunk)
                        report(out.size)
        return _entry(name, out.size, out.hash.hexdigest())

    def _manifest(self, build, entries):
        """The manifest from build.json alone: what it needs of a node (MACs, addresses, asset key, tags)
        comes through the build's output, not from the node database."""
        out_nodes = {}
        for node_id, b in sorted(build["nodes"].items()):
            missing = [k for k in NODE_FIELDS if k not in b]
            if missing:
                raise PublishError(f"{layout.build_json(self.state_dir)}: node {node_id!r} lacks "
                                   f"{', '.join(missing)}: run the build stage")
            artifacts = {"ipxe": {"raw": entries[b["ipxe"]]["ipxe"]},
                         "kernel": {"raw": entries[b["kernel"]]["kernel"]}}
            for artifact, key in ARCHIVES:
                artifacts[artifact] = dict(entries[b[key]])
            for artifact, key, kind in BOOT_LOADERS:
                if b.get(key):
                    artifacts[artifact] = {"raw": entries[b[key]][kind]}
            out_nodes[node_id] = {
                "macs": list(b["macs"]),
                "addresses": list(b["addresses"]),
                "asset_key": b["asset_key"],
                "artifacts": artifacts,
            }
            if b[ARCHIVES[0][1]] in self.gzip_needed:
                out_nodes[node_id]["encoding"] = "gz"      # its kernel predates zstd initrds
            group = cache_group(b.get("tags", {}), self.settings)
            if group:           # serve lists this group's caches first in the node's script (scale-out)
                out_nodes[node_id]["cache_group"] = group
        manifest = {
            "format": FORMAT,
            "settings": {"secure": bool(self.settings.secure),
                         "update_interval": self.settings.update_interval},
            "nodes": out_nodes,
        }
        if build.get("unknown_ipxe"):
            manifest["unknown_ipxe"] = {"raw": entries[build["unknown_ipxe"]]["ipxe"]}
        digest = fsutil.sha256_bytes(canonjson.dumps(manifest).encode())
        manifest["generation"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + digest[:8]
        return manifest


@contextlib.contextmanager
def _as_publish_error():
    try:
        yield
    except packed.PackedError as e:
        raise PublishError(str(e)) from None


def cache_group(tags, settings):
    """The node's cache group with a cache tier: the value of its tag `cluster: cache group tag` ('' if none).
    `tags`: the node's tags as build.json carries them (or a records.Node)."""
    tags = getattr(tags, "tags", tags)
    from wwfast.cluster.placement import node_group
    from wwfast.define.cluster_settings import cache_tier
    if not cache_tier(settings):
        return ""
    return node_group(tags, settings.cache_group_tag)


def _entry(name, size, sha):
    return {"file": name, "size": size, "sha256": sha}


def _body(manifest):
    return {k: v for k, v in manifest.items() if k != "generation"}


def _hash_file(f, progress=None):
    h = hashlib.sha256()
    buf = bytearray(compress.READ_SIZE)
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
        if progress:
            progress.advance(n)
    return h.hexdigest()


def _sync_filesystem(path):
    """syncfs(2) on the store's filesystem: one flush for thousands of new files."""
    libc_name = ctypes.util.find_library("c")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        syncfs = getattr(ctypes.CDLL(libc_name, use_errno=True), "syncfs", None) if libc_name else None
        if syncfs is None or syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


# ---- garbage ----

def collect_garbage(state_dir, referenced, memory, grace=GRACE_SECONDS, now=None):
    """Remove temp files of killed runs, and store files not in `referenced` (the names the
    published manifest holds) for `grace` seconds.

    Call with the lock held. Updates memory["retired"] ({name: time first seen unreferenced});
    returns the names removed.
    """
    now = time.time() if now is None else now
    referenced = set(referenced)
    retired = dict(memory.get("retired", {}))
    removed = []
    for directory in (store_dir(state_dir), publish_dir(state_dir)):
        with contextlib.suppress(FileNotFoundError):
            for name in os.listdir(directory):
                if name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, name))
    present = set()
    with contextlib.suppress(FileNotFoundError):
        present = {n for n in os.listdir(store_dir(state_dir)) if not n.startswith(TEMP_PREFIX)}
    for name in sorted(present - referenced):
        since = retired.setdefault(name, now)
        if now - since >= grace:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(store_dir(state_dir), name))
            del retired[name]
            removed.append(name)
    memory["retired"] = {n: t for n, t in retired.items() if n in present and n not in referenced}
    return removed


class Result:
    def __init__(self, changed, manifest, generation, compressed=0, reused=0, inputs=()):
        self.changed = changed          # a new manifest was committed
        self.manifest = manifest        # the manifest this run published (or found current)
        self.generation = generation
        self.compressed = compressed    # store files written
        self.reused = reused            # store files already present (same input content)
        self.inputs = list(inputs)      # the build outputs it read (paths)


def run(state_dir, settings, memory, progress=None):
    """Publish the build (the caller holds the stage's lock and decided it must run). `memory`: the
    previous run's record, updated in place. `progress`: None = a bar when stderr is a terminal."""
    publisher = _Publisher(state_dir, settings, progress)
    manifest, changed = publisher.run(memory)
    return Result(changed, manifest, manifest["generation"], publisher.compressed, publisher.reused,
                  publisher.inputs)


def settings_key(settings):
    """The settings this stage reads."""
    return _settings_key(settings)
