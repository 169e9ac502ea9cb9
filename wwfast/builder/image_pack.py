"""Pack an image tree straight into its compressed archives: no raw archive is ever written.

One walk of the tree feeds the newc writer, whose output goes at once to sha256 (the store names an
archive by its uncompressed content), to zstd and, when the settings ask, to gzip, each compressed
stream hashed as it is written (the manifest's sha256, the HTTP ETag). The encoders are the compress
stage's (wwfast.publish.compress: one zstd frame with the archive's size pledged and a window the
kernel can unpack, gzip made as pigz makes it), so the files are byte for byte what compressing the
raw archive would give. The size zstd pledges comes from the writer's plan of the tree, before the
first byte (a tree that changes under the walk makes zstd refuse the frame: the build says so).

Written as <out>/<name>.cpio.zst and .cpio.gz, each a temp file renamed into place when whole.
"""
import contextlib
import hashlib
import os

import zstandard

from wwfast import cpio, fsutil
from wwfast.publish import compress

SUFFIXES = {"zst": ".cpio.zst", "gz": ".cpio.gz"}


class PackError(Exception):
    """The tree could not be packed (the message names it and why)."""


class _Fanout:
    """What the newc writer writes into: the content hash and every encoder, chunk by chunk.

    It has no fileno(), so the writer hands it its buffer instead of writing to a file itself."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.size = 0
        self.sinks = []

    def write(self, data):
        self.hash.update(data)      # drops the GIL: beside the compressors' own threads
        for sink in self.sinks:
            sink.write(data)
        self.size += len(data)
        return len(data)


class _Keep(Exception):
    """The packed content is what the files in place already hold: drop the new temp files."""


def pack_image(root, out_dir, name, encodings=("zst",), zstd_level=3, threads=0, excludes=(), mtime=None,
               keep=None):
    """Pack the tree under `root` into <out_dir>/<name>.cpio.<encoding> for each encoding ("zst",
    "gz"). Returns {"entries", "size" and "sha256" of the uncompressed archive, "files": {encoding:
    {"file", "size", "sha256"}}, "kept"}. `keep(result)`: when it says True (the files in place hold the
    same bytes), the new files are dropped and those stay: their inodes, and the links the store holds
    to them, are kept."""
    unknown = set(encodings) - set(SUFFIXES)
    if unknown or not encodings:
        raise ValueError(f"encodings: {sorted(encodings)}")
    fanout = _Fanout()
    outputs = {}
    try:
        with contextlib.ExitStack() as stack:
            files = {enc: stack.enter_context(fsutil.atomic_file(os.path.join(out_dir, name + SUFFIXES[enc])))
                     for enc in encodings}
            for enc, f in files.items():
                outputs[enc] = fsutil.HashingWriter(f, flush_behind=True)   # the fsync at the end waits less
            streams = {}
            if "gz" in encodings:
                streams["gz"] = compress.GzipEncoder(compress.GZIP_LEVEL, threads).stream(outputs["gz"])
                fanout.sinks.append(streams["gz"])

            def planned(tree_bytes):   # the walk is done, nothing written yet: zstd learns the size now
                if "zst" in encodings:
                    size = cpio.archive_size(tree_bytes)
                    streams["zst"] = compress.ZstdEncoder(zstd_level, threads).stream(outputs["zst"], size)
                    fanout.sinks.insert(0, streams["zst"])

            writer = cpio.NewcWriter(fanout, mtime=mtime)
            try:
                entries = writer.add_tree(root, excludes=excludes, planned=planned)
                writer.close()
                for stream in streams.values():
                    stream.close()
            except zstandard.ZstdError as e:   # the pledged size was not met: the tree changed while packed
                raise PackError(f"{root}: the tree changed while it was packed ({e}); build again") from None
            except cpio.CpioError as e:
                raise PackError(str(e)) from None
            result = {"entries": entries, "size": fanout.size, "sha256": fanout.hash.hexdigest(), "kept": False,
                      "files": {enc: {"file": name + SUFFIXES[enc], "size": out.size,
                                      "sha256": out.hash.hexdigest()} for enc, out in outputs.items()}}
            if keep is not None and keep(result):
                raise _Keep()     # out of the ExitStack: every temp file is removed, nothing renamed
    except _Keep:
        return dict(result, kept=True)
    return result
