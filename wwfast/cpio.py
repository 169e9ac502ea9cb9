"""newc cpio writer: the public facade over the compiled (_cpio) and pure (_cpio_py) twins.

    w = NewcWriter(fileobj, mtime=None)
    w.add_tree(root, excludes=(), one_file_system=True)
    w.add_file(name, data, mode=0o100644, uid=0, gid=0, mtime=None)
    w.add_dir(name, mode=0o40755, ...); w.add_symlink(name, target, mode=0o120777, ...)
    w.close()
    pack_tree(root, out_path, excludes=(), mtime=None)   # atomic output file
    archive_size(tree_bytes)      # size of an archive of one tree, from add_tree(..., planned=callback)

Archives end with TRAILER!!! so they concatenate (image + system + runtime overlays).
"""
import os

from wwfast import fsutil
from wwfast._cpio_common import (  # noqa: F401
    BLOCK, HEADER_SIZE, TRAILER_NAME, WRITER_VERSION, CpioError, Excludes, FileTooLarge)
from wwfast._impl import pick

_impl, COMPILED = pick("wwfast._cpio", "wwfast._cpio_py")
NewcWriter = _impl.NewcWriter


def source_date_epoch(environ=os.environ):
    """SOURCE_DATE_EPOCH as an int (reproducible builds convention), or None when unset/invalid."""
    value = environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else None


def pack_tree(root, out_path, excludes=(), mtime=None, one_file_system=True):
    """Write the tree under `root` to `out_path` atomically; returns the number of entries."""
    with fsutil.atomic_file(out_path) as f:
        writer = NewcWriter(f, mtime=mtime)
        count = writer.add_tree(root, excludes=excludes, one_file_system=one_file_system)
        writer.close()
    return count


def archive_size(tree_bytes):
    """Bytes of an archive holding one tree whose entries take `tree_bytes` (what add_tree's `planned`
    callback is given): those, the trailer, and zeros up to the 512-byte block."""
    end = tree_bytes + ((HEADER_SIZE + len(TRAILER_NAME) + 1 + 3) & ~3)
    return end + (-end % BLOCK)
