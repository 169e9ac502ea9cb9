"""The content-addressed store: STATE/store/<sha256 of the uncompressed input>.cpio.zst | .cpio.gz |
.kernel | .ipxe | .grub | .efi. Hashes the build's outputs (an unchanged one keeps its recorded hash),
then compresses, copies or links each into the store file its content names, once.

A store file appears only by rename of a whole temp file (temp prefix and suffix, so a killed run
leaves only garbage that the next run removes) and is never rewritten: its name fixes its content.
"""
import contextlib
import functools
import hashlib
import io
import os
import tempfile

from wwfast import fsutil, layout
from wwfast.publish import PublishError, compress, packed
from wwfast.publish.build_outputs import stat_key
from wwfast.publish.manifest import entry
from wwfast.publish.progress import Progress

# A changed archive this large is hashed while it is compressed (one read, the hash beside the zstd
# workers) and named afterwards; smaller ones are hashed first, so unchanged content costs no compression.
FUSE_MIN = 16 << 20
SUFFIXES = {"zst": ".cpio.zst", "gz": ".cpio.gz", "kernel": ".kernel", "ipxe": ".ipxe", "grub": ".grub",
            "efi": ".efi"}
HASH_BUF_MIN = 64 << 10
TEMP_PREFIX = "."
TEMP_SUFFIX = ".tmp"


class StoreWriter:
    """Fills the store for one run. `packs`: build.json's packed archives (packed.read); `gzip_needed`:
    archives gzipped too whatever the settings say. Counts the store files it wrote and found."""

    def __init__(self, state_dir, settings, progress_enabled, packs, gzip_needed, prefixes=None):
        self.store = layout.store_dir(state_dir)
        self.prefixes = prefixes or {}   # archive -> shared part published ahead of it (build_outputs.prefixes)
        self._shared = {}                # shared part -> SharedPart
        self.base = layout.build_dir(state_dir)
        self.progress_enabled = progress_enabled
        self.packs = packs
        self.gzip_needed = gzip_needed
        self.encodings = ("zst", "gz") if settings.gzip else ("zst",)
        self.zstd = compress.ZstdEncoder(settings.zstd_level, settings.threads)
        # gzip also without `compression: gzip` for the archives of nodes whose kernel predates zstd
        self.gzip = compress.GzipEncoder(compress.GZIP_LEVEL, settings.threads)
        self.compressed = 0      # store files written this run
        self.reused = 0
        self.written = []        # their paths (and whole files an earlier run left unrecorded): to make durable

    def hash_inputs(self, inputs, known):
        """({rel: (stat key, sha256 of the content)}, [(rel, path, stat key)] left to hash while
        compressing); unchanged files keep their recorded hash. An archive with a shared part is named by
        the hash of both (the shared part's bytes, then its own), and its record holds the shared part's
        hash too: a new shared part is a new name (overlay_shared), so the archive is hashed again."""
        hashed, fused = {}, []
        shared = sorted(rel for rel in inputs if inputs[rel] == "prefix")
        self._hash_some(shared, inputs, known, hashed, fused)
        self._hash_some(sorted(set(inputs) - set(shared)), inputs, known, hashed, fused)
        return hashed, fused

    def _hash_some(self, rels, inputs, known, hashed, fused):
        todo = []
        for rel in rels:
            if inputs[rel] == "packed":   # the build recorded its content hash as it packed it
                with as_publish_error():
                    hashed[rel] = (packed.stat_key(self.base, rel, self.packs[rel]), self.packs[rel]["sha256"])
                continue
            path = os.path.join(self.base, rel)
            try:
                key = stat_key(os.stat(path))
            except FileNotFoundError:
                raise PublishError(f"{path} is named in build.json but does not exist: "
                                   f"run the build stage") from None
            old = known.get(rel)
            prefix = self.prefixes.get(rel)
            if old and old[:4] == key and old[5:] == ([hashed[prefix][1]] if prefix else []):
                hashed[rel] = (key, old[4])
            elif inputs[rel] == "archive" and key[0] >= FUSE_MIN and not prefix:
                fused.append((rel, path, key))
            else:
                todo.append((rel, path, key))
        progress = Progress(sum(k[0] for _, _, k in todo), "hash    ", enabled=self.progress_enabled)
        seen = {}   # (stat key, shared part): one file under many names (hard links) is hashed once
        for rel, path, key in todo:
            prefix = self.prefixes.get(rel)
            same = (tuple(key), prefix)
            if same in seen:
                hashed[rel] = (key, seen[same])
                progress.advance(key[0])
                continue
            with open(path, "rb", buffering=0) as f:
                digest = hash_file(f, progress, self._shared_part(prefix).hash_state if prefix else None)
                if stat_key(os.fstat(f.fileno())) != key:
                    raise PublishError(f"{path} changed while it was read: is a build running?")
            hashed[rel] = (key, digest)
            seen[same] = digest
        progress.close()

    def _shared_part(self, rel):
        part = self._shared.get(rel)
        if part is None:
            part = self._shared[rel] = SharedPart(os.path.join(self.base, rel), self.zstd, self.gzip)
        return part

    def compress_unhashed(self, path, key, known_store):
        """zstd-compress a changed archive while hashing it, then name the result by the hash.

        Returns (stat key, sha256); records the new store file in `known_store`.
        """
        digest = hashlib.sha256()
        progress = Progress(key[0], "compress", enabled=self.progress_enabled)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + "unnamed.", suffix=TEMP_SUFFIX, dir=self.store)
        try:
            with open(path, "rb", buffering=0) as src, os.fdopen(fd, "wb") as raw:
                if stat_key(os.fstat(src.fileno())) != key:
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
                self.written.append(final)
                known_store[name] = [out.size, out.hash.hexdigest()]
                self.compressed += 1
                self.reused -= 1           # fill counts the file it finds as reused
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return key, digest.hexdigest()

    def fill(self, inputs, hashed, known_store):
        """Make sure every store file exists; {rel: {encoding: manifest entry}}."""
        work = []      # (rel, encoding, name)
        queued, same = {}, []   # name -> the rel that makes it; (rel, encoding, that rel) made by another
        entries = {}
        for rel, kind in sorted(inputs.items()):
            if kind == "prefix":    # published only inside the archives that name it
                continue
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
                    if name in queued:    # the same content under another name (hard-linked archives)
                        same.append((rel, enc, queued[name]))
                    else:
                        queued[name] = rel
                        work.append((rel, enc, name))
                    continue
                self.reused += 1
                known = known_store.get(name)
                if known and known[0] == size:
                    entries[rel][enc] = entry(name, size, known[1])
                else:   # whole (it was renamed into place) but left by a run that died before recording it
                    self.written.append(path)
                    with open(path, "rb", buffering=0) as f:
                        entries[rel][enc] = entry(name, size, hash_file(f))
        total = sum(hashed[rel][0][0] for rel, _, _ in work)
        progress = Progress(total, "compress", enabled=self.progress_enabled)
        for rel, enc, name in work:
            if inputs[rel] == "packed":
                entries[rel][enc] = self._store_packed(rel, enc, name)
            else:
                entries[rel][enc] = self._store_one(rel, enc, name, hashed[rel], progress)
            self.written.append(os.path.join(self.store, name))
            self.compressed += 1
        progress.close()
        for rel, enc, first in same:
            entries[rel][enc] = entries[first][enc]
        return entries

    def _store_packed(self, rel, enc, name):
        """Store a file the build packed: a link to it (a copy where links fail), its recorded entry."""
        with as_publish_error():
            path, size, sha = packed.entry(self.base, rel, self.packs[rel], enc)
            dest = os.path.join(self.store, name)
            if not packed.link_into(path, dest, TEMP_PREFIX, TEMP_SUFFIX):
                with fsutil.atomic_file(dest, fsync=False) as raw:
                    packed.copy_into(path, raw)
        return entry(name, size, sha)

    def _store_one(self, rel, enc, name, hashed, progress):
        path = os.path.join(self.base, rel)
        key, content_sha = hashed
        if enc == "kernel":   # stored as it is: a link to the build's copy, so the disk holds it once
            with as_publish_error():
                linked = packed.link_into(path, os.path.join(self.store, name), TEMP_PREFIX, TEMP_SUFFIX,
                                          expect=[key[0], key[1], key[3]])
            if linked:
                progress.advance(key[0])
                return entry(name, key[0], content_sha)
        start = progress.done
        shared = self._shared_part(self.prefixes[rel]) if rel in self.prefixes else None
        with open(path, "rb", buffering=0) as src:
            if stat_key(os.fstat(src.fileno())) != key:
                raise PublishError(f"{path} changed while it was read: is a build running?")
            # fsync once for the whole store before the manifest, not per file
            with fsutil.atomic_file(os.path.join(self.store, name), fsync=False) as raw:
                out = fsutil.HashingWriter(raw)
                report = lambda n: progress.advance(start + n - progress.done)  # noqa: E731
                if enc == "zst":
                    if shared:   # two frames, each a whole archive: the kernel unpacks one after the other
                        out.write(shared.zstd_frame)
                    self.zstd.compress(src, out, key[0], progress=report)
                elif enc == "gz":   # one member (iPXE's imgextract reads one), the shared part deflated once
                    self.gzip.compress(src, out, progress=report, after=shared.gzip_prefix if shared else None)
                else:   # kernel, ipxe, grub, efi: stored as they are
                    while chunk := src.read(compress.READ_SIZE):
                        out.write(chunk)
                        report(out.size)
        return entry(name, out.size, out.hash.hexdigest())


class SharedPart:
    """A secure-mode shared part (wwfast.builder.overlay_shared), read once per run and made into what
    each archive naming it starts with, each only when first asked for: the sha256 state after its
    bytes, its zstd frame, its gzip head (compress.GzipPrefix)."""

    def __init__(self, path, zstd, gzip):
        self.path, self._zstd, self._gzip = path, zstd, gzip

    @functools.cached_property
    def data(self):
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise PublishError(f"{self.path} is named in build.json but does not exist: "
                               f"run the build stage") from None

    @functools.cached_property
    def hash_state(self):
        return hashlib.sha256(self.data)

    @functools.cached_property
    def zstd_frame(self):
        out = io.BytesIO()
        self._zstd.compress(io.BytesIO(self.data), out, len(self.data))
        return out.getvalue()

    @functools.cached_property
    def gzip_prefix(self):
        return self._gzip.prefix(self.data)


@contextlib.contextmanager
def as_publish_error():
    """build.json's packed records are build output like any other: their faults are PublishErrors."""
    try:
        yield
    except packed.PackedError as e:
        raise PublishError(str(e)) from None


def hash_file(f, progress=None, start=None):
    """sha256 of what `f` holds (after the bytes `start`, a sha256 object, was fed: copied, not changed)."""
    h = hashlib.sha256() if start is None else start.copy()
    # A buffer as large as the file (up to READ_SIZE): a 4 MiB one for each of 20,000 small archives and
    # scripts was an mmap, page faults and an munmap each, most of a publish's hashing time.
    buf = bytearray(max(HASH_BUF_MIN, min(compress.READ_SIZE, os.fstat(f.fileno()).st_size + 1)))
    view = memoryview(buf)
    while n := f.readinto(buf):
        h.update(view[:n])
        if progress:
            progress.advance(n)
    return h.hexdigest()


def sync_written(store):
    """Every file the manifest will name durable before it: the files this run wrote (an fsync each, one
    syncfs past fsutil.SYNC_EACH_MAX) and the store's directory. Linked files are the build's, which it
    fsynced when it wrote them; nothing else on the file system is flushed on this run's clock."""
    fsutil.sync_files(store.written, dirs=[store.store])
