"""Applying one layer onto a root tree: a tar stream extracted safely, OCI whiteouts honoured.

Members with an absolute path or a '..' component, and members that would be written through a
symlink, are refused: an image must never write outside its own tree. OCI whiteouts (`.wh.NAME`
deletes NAME from lower layers, `.wh..wh..opq` empties a directory of lower-layer content) are
honoured when `whiteouts` is set. Directory mtimes are put back after their children changed them.
Opening the stream (decompression, container layers, digests) is wwfast.builder.layers'.
"""
import lzma
import os
import posixpath
import shutil
import tarfile

import zstandard

from wwfast.builder.layers import LayerError, _clean, _why

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


def _check_member_path(name, label, what="member"):
    if name.startswith("/"):
        raise LayerError(f"{label}: {what} {name!r} has an absolute path: refused")
    if ".." in name.split("/"):
        raise LayerError(f"{label}: {what} {name!r} climbs out of the image with '..': refused")


def apply_layer(stream, rootfs, whiteouts=True, label="layer"):
    """Extract one tar stream onto rootfs (later layers replace earlier entries)."""
    created = set()          # paths this layer wrote: whiteouts only hide lower layers
    safe_dirs = {""}         # directories known to be real (not symlinks) inside rootfs
    dir_times = []
    lower_dir_times = {}     # lower-layer directories this layer changes: their mtime is put back
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in tf:
                raw_name = member.name
                if raw_name.startswith("/"):
                    _check_member_path(raw_name, label)
                name = _clean(raw_name)
                if not name or name == ".":
                    continue
                _check_member_path(name, label)
                parent, base = posixpath.split(name)
                _ensure_parent(rootfs, parent, safe_dirs, label, name)
                if parent not in created and parent not in lower_dir_times:
                    lower_dir_times[parent] = os.lstat(os.path.join(rootfs, parent) if parent else rootfs).st_mtime_ns
                if whiteouts and base.startswith(WHITEOUT):
                    if base == OPAQUE:
                        _make_opaque(rootfs, parent, created)
                    else:
                        target = posixpath.join(parent, base[len(WHITEOUT):])
                        if target not in created:
                            _remove(os.path.join(rootfs, target))
                    continue
                if member.islnk():
                    link = _clean(member.linkname)
                    _check_member_path(link, label, what=f"hard link {name!r} to")
                    _check_real_parents(rootfs, posixpath.dirname(link), label, name)
                    member.linkname = link
                target = os.path.join(rootfs, name)
                if os.path.lexists(target) and not (member.isdir() and _is_real_dir(target)):
                    _remove(target)
                member.name = name
                tf.extract(member, rootfs, set_attrs=True, numeric_owner=True, filter="fully_trusted")
                if member.issym():   # tarfile leaves a symlink's own mtime at "now"
                    os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)
                created.add(name)
                if member.isdir():
                    safe_dirs.add(name)
                    dir_times.append((target, member.mtime))
    except LayerError:
        raise
    except (tarfile.TarError, EOFError, OSError, zstandard.ZstdError, lzma.LZMAError, ValueError) as e:
        raise LayerError(f"{label}: corrupt or truncated archive ({_why(e)})") from None
    # Children changed the directories' mtimes: restore them (so the same source always gives the
    # same tree), the lower layers' first, then this layer's own, deepest first.
    for rel, mtime_ns in lower_dir_times.items():
        path = os.path.join(rootfs, rel) if rel else rootfs
        if rel not in created and _is_real_dir(path):
            os.utime(path, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
    for path, mtime in reversed(dir_times):
        if _is_real_dir(path):
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def _is_real_dir(path):
    return os.path.isdir(path) and not os.path.islink(path)


def _ensure_parent(rootfs, parent, safe_dirs, label, name):
    """Every directory above a member must be a real directory in rootfs (created if missing)."""
    if parent in safe_dirs:
        return
    path = ""
    for part in parent.split("/"):
        path = posixpath.join(path, part) if path else part
        if path in safe_dirs:
            continue
        full = os.path.join(rootfs, path)
        if os.path.islink(full):
            raise LayerError(f"{label}: member {name!r} would be written through the symlink {path!r}: refused")
        if not os.path.lexists(full):
            os.mkdir(full, 0o755)
        elif not os.path.isdir(full):
            _remove(full)
            os.mkdir(full, 0o755)
        safe_dirs.add(path)


def _check_real_parents(rootfs, parent, label, name):
    """A hard link's target must be reached through real directories only (no symlink hops)."""
    path = rootfs
    for part in parent.split("/") if parent else ():
        path = os.path.join(path, part)
        if os.path.islink(path):
            raise LayerError(f"{label}: hard link {name!r} points through the symlink {part!r}: refused")


def _make_opaque(rootfs, directory, created):
    full = os.path.join(rootfs, directory) if directory else rootfs
    if not _is_real_dir(full):
        return
    prefix = directory + "/" if directory else ""
    for entry in os.listdir(full):
        if prefix + entry not in created:
            _remove(os.path.join(full, entry))


def _remove(path):
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    else:
        shutil.rmtree(path)
