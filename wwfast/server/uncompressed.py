"""`?compress=none`: an archive sent uncompressed, as Warewulf can send it.

The store keeps archives compressed only (zstd, and gzip where asked). The first request for an
uncompressed archive decompresses its stored file once into the store as `<sha256>.cpio`, named by the
sha256 of the uncompressed bytes exactly as the compressed files are; the bytes are checked against that
name while they are written (temp file + rename), so a corrupt store file is never passed on. Later
requests send that file with sendfile like any other. The compress stage's garbage collection removes it
with the manifest that named its archive; it is made again if asked again.
"""
import hashlib
import logging
import os
import tempfile
import threading
import zlib

import zstandard

log = logging.getLogger("wwfast.serve")

RAW_SUFFIX = ".cpio"
CHUNK = 1 << 20
_lock = threading.Lock()


class RawUnavailable(Exception):
    """The archive cannot be given uncompressed (the message says why)."""


class RawArtifact:
    """Quacks like catalog.Artifact for Provisioner.file_reply: path, name, size, sha256 (the ETag)."""
    __slots__ = ("path", "name", "size", "sha256")

    def __init__(self, path, sha):
        self.path = path
        self.name = os.path.basename(path)
        self.size = os.path.getsize(path)
        self.sha256 = sha


def raw_artifact(artifact):
    """The uncompressed form of a stored `.cpio.zst` / `.cpio.gz` artifact, made on first use."""
    sha, _, suffix = artifact.name.partition(".")
    path = os.path.join(os.path.dirname(artifact.path), sha + RAW_SUFFIX)
    if os.path.isfile(path):
        return RawArtifact(path, sha)
    if suffix not in ("cpio.zst", "cpio.gz"):
        raise RawUnavailable(f"{artifact.name} is not a compressed archive")
    with _lock:     # one decompression per archive, however many nodes ask at once
        if not os.path.isfile(path):
            _decompress(artifact.path, path, sha, suffix)
    return RawArtifact(path, sha)


def _chunks(src, suffix):
    if suffix == "cpio.zst":
        # every frame: a secure-mode system archive is two (its shared part, then its own)
        reader = zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True)
        while chunk := reader.read(CHUNK):
            yield chunk
        return
    inflater = zlib.decompressobj(wbits=31)
    while data := src.read(CHUNK):
        yield inflater.decompress(data)
        while inflater.unused_data:      # pigz-style output may hold several gzip members
            rest = inflater.unused_data
            inflater = zlib.decompressobj(wbits=31)
            yield inflater.decompress(rest)
    yield inflater.flush()


def _decompress(src_path, path, sha, suffix):
    fd, tmp = tempfile.mkstemp(prefix=".raw.", suffix=".tmp", dir=os.path.dirname(path))
    try:
        digest = hashlib.sha256()
        with open(src_path, "rb") as src, os.fdopen(fd, "wb") as out:
            for chunk in _chunks(src, suffix):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != sha:
            raise RawUnavailable(f"{os.path.basename(src_path)} does not decompress to its content hash")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        log.info("decompressed %s for ?compress=none (%d bytes)", os.path.basename(src_path),
                 os.path.getsize(path))
    except (OSError, zstandard.ZstdError, zlib.error) as e:
        raise RawUnavailable(f"cannot decompress {os.path.basename(src_path)}: {e}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
