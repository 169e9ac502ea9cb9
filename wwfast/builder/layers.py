"""Reading image tarballs and container layers: each layer's tar stream, decompressed and verified.

A layer is a tar stream (plain, gzip, zstd, xz or bzip2: recognised by its magic bytes, not its
name). A container archive (OCI layout directory or tar, docker save archive) gives its layers
bottom first; blobs named by a sha256 digest are verified. Applying a layer onto a root tree
(path checks, whiteouts) is wwfast.builder.layer_apply's.
"""
import bz2
import contextlib
import gzip
import hashlib
import json
import lzma
import os
import re
import tarfile

import zstandard

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"BZh", "bzip2"),
)
_CONTAINER_HINT = re.compile(r"^(blobs/|oci-layout$|index\.json$|manifest\.json$|repositories$|[0-9a-f]{64}(/|\.json$))")
_PLATFORM = ("linux", "amd64")


class LayerError(Exception):
    """A tarball or container archive is unusable; the message names the member or blob."""


# ---- opening streams ---------------------------------------------------------------------------

def _compression(head):
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return None


@contextlib.contextmanager
def open_layer_stream(source, label=None):
    """A readable stream of tar bytes from a path or a binary file object, decompressed by magic."""
    label = label or str(source)
    raw = open(source, "rb") if isinstance(source, (str, bytes, os.PathLike)) else source
    try:
        head = _peek(raw, 6)
        kind = _compression(head)
        if kind == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif kind == "zstd":
            stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        elif kind == "xz":
            stream = lzma.LZMAFile(raw)
        elif kind == "bzip2":
            stream = bz2.BZ2File(raw)
        else:
            stream = raw
        yield stream
    finally:
        if raw is not source:
            raw.close()


def _peek(raw, n):
    if raw.seekable():
        pos = raw.tell()
        head = raw.read(n)
        raw.seek(pos)
        return head
    raise LayerError("internal: stream is not seekable")  # all our sources are files or tar members


# ---- the outer archive -------------------------------------------------------------------------

def outer_members(path):
    """Member names of the tar at `path` (enough of them to tell a container archive from a root tree)."""
    kind = None
    try:
        with open(path, "rb") as raw:
            head = raw.read(512)
        kind = _compression(head)
        if kind is None:
            if head[257:262] != b"ustar" and not tarfile.is_tarfile(path):
                raise LayerError("not a tar archive, OCI layout or docker save archive (unknown format)")
            kind = "tar"
            with tarfile.open(path, "r:") as tf:
                return set(_clean(n) for n in tf.getnames())
        # Compressed: a root tree is only streamed once; look at the first members for container hints.
        with open_layer_stream(path) as stream, tarfile.open(fileobj=stream, mode="r|") as tf:
            first = []
            for member in tf:
                first.append(_clean(member.name))
                if len(first) >= 64:
                    break
        if not any(_CONTAINER_HINT.match(n) for n in first):
            return set(first)
        if kind == "zstd":
            raise LayerError("a zstd-compressed container archive: decompress it first (zstd -d)")
        with tarfile.open(path, "r:*") as tf:
            return set(_clean(n) for n in tf.getnames())
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError, lzma.LZMAError) as e:
        what = f"{kind}-compressed archive" if kind not in (None, "tar") else "tar archive"
        raise LayerError(f"corrupt or truncated {what} ({_why(e)})") from None


def container_layers(kind, source):
    """Yield (label, opener) per layer, bottom first; opener() is a context manager giving tar bytes."""
    if kind == "oci-dir":
        yield from _oci_layers(_DirBlobs(source))
    elif kind in ("oci-tar", "docker-archive"):
        try:
            outer = tarfile.open(source, "r:*")
        except (tarfile.TarError, OSError) as e:
            raise LayerError(f"cannot open the archive ({_why(e)})") from None
        with outer:
            blobs = _TarBlobs(outer)
            if kind == "oci-tar":
                yield from _oci_layers(blobs)
            else:
                yield from _docker_layers(blobs)
    else:
        raise LayerError(f"unknown container kind {kind}")


class _DirBlobs:
    def __init__(self, root):
        self.root = root

    def open(self, rel):
        path = os.path.join(self.root, *rel.split("/"))
        try:
            return open(path, "rb")
        except OSError as e:
            raise LayerError(f"{rel}: {e.strerror}") from None


class _TarBlobs:
    def __init__(self, tf):
        self.tf = tf
        self.members = {}
        for m in tf.getmembers():
            self.members[_clean(m.name)] = m

    def open(self, rel):
        member = self.members.get(_clean(rel))
        if member is None:
            raise LayerError(f"{rel}: missing from the archive")
        f = self.tf.extractfile(member)
        if f is None:
            raise LayerError(f"{rel}: not a regular file in the archive")
        return f


def _read_json(blobs, rel):
    with blobs.open(rel) as f:
        try:
            return json.loads(f.read())
        except ValueError as e:
            raise LayerError(f"{rel}: not valid JSON ({e})") from None


def _blob_path(digest):
    algo, _, hexd = (digest or "").partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexd):
        raise LayerError(f"unsupported blob digest {digest!r}")
    return f"blobs/sha256/{hexd}"


def _pick_manifest(blobs, index, where):
    manifests = index.get("manifests") or []
    if not manifests:
        raise LayerError(f"{where}: no manifests")
    chosen = next((m for m in manifests
                   if (m.get("platform") or {}).get("os") == _PLATFORM[0]
                   and (m.get("platform") or {}).get("architecture") == _PLATFORM[1]), manifests[0])
    doc = _read_json(blobs, _blob_path(chosen.get("digest")))
    if "manifests" in doc:         # a nested image index (multi-platform)
        return _pick_manifest(blobs, doc, chosen.get("digest"))
    return doc


def _oci_layers(blobs):
    index = _read_json(blobs, "index.json")
    manifest = _pick_manifest(blobs, index, "index.json")
    layers = manifest.get("layers")
    if not isinstance(layers, list):
        raise LayerError("image manifest has no layers list")
    for desc in layers:
        rel = _blob_path(desc.get("digest"))
        yield rel, _opener(blobs, rel, desc.get("digest"))


def _docker_layers(blobs):
    manifest = _read_json(blobs, "manifest.json")
    if not isinstance(manifest, list) or not manifest:
        raise LayerError("manifest.json: expected a list of images")
    layers = manifest[0].get("Layers")
    if not isinstance(layers, list):
        raise LayerError("manifest.json: the image has no Layers")
    for rel in layers:
        m = re.fullmatch(r"blobs/sha256/([0-9a-f]{64})", _clean(rel))
        yield rel, _opener(blobs, rel, f"sha256:{m.group(1)}" if m else None)


def _opener(blobs, rel, digest):
    @contextlib.contextmanager
    def open_stream():
        raw = blobs.open(rel)
        checked = _Verified(raw, digest, rel) if digest else raw
        try:
            with open_layer_stream(checked, label=rel) as stream:
                yield stream
            if digest:
                checked.finish()
        finally:
            raw.close()
    return open_stream


class _Verified:
    """Hashes what is read through it; finish() reads the rest and compares with the digest."""

    def __init__(self, raw, digest, label):
        self.raw = raw
        self.expected = digest.partition(":")[2]
        self.label = label
        self.h = hashlib.sha256()
        self.pos = 0

    def read(self, n=-1):
        data = self.raw.read(n)
        self.h.update(data)
        self.pos += len(data)
        return data

    def readinto(self, b):
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self):
        return True

    def seekable(self):
        return True

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        # Only the magic sniff rewinds, before anything was hashed past it.
        if whence != 0 or pos > self.pos:
            raise OSError("unsupported seek")
        if pos != self.pos:
            self.raw.seek(pos)
            self.h = hashlib.sha256()
            self.pos = 0
            if pos:
                self.read(pos)
        return self.pos

    def close(self):
        pass

    def finish(self):
        while self.read(1 << 20):
            pass
        if self.h.hexdigest() != self.expected:
            raise LayerError(f"{self.label}: content does not match its sha256 digest (corrupt download?)")


# ---- names and errors --------------------------------------------------------------------------

def _clean(name):
    while name.startswith("./"):
        name = name[2:]
    return name.rstrip("/")


def _why(e):
    return str(e) or e.__class__.__name__
