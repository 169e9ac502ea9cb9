"""newc cpio writer, pure-Python twin of _cpio (the spec: both write the same bytes).

Header: "070701" + 13 fields of 8 upper-case hex digits (ino, mode, uid, gid, nlink, mtime,
filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check); header + name + NUL
padded to 4 bytes, data padded to 4 bytes; TRAILER!!! last, the archive padded to 512.
Inodes are renumbered from 1 in archive order, device numbers are 0 (so 64-bit inode numbers
never collide into false hard links), and hard-link data is written once, on the last link.
"""
import io
import os
import stat

from wwfast._cpio_common import (
    BLOCK, MAX_FILE_SIZE, TRAILER_NAME, CpioError, FileTooLarge, archive_name, clamp_u32)
from wwfast._cpio_walk import link_groups as _link_groups, scan_tree as _scan_tree  # helpers, not the API

# Bodies are read into one reused 1 MiB buffer (os.readv: no new bytes object per read) and leave
# through a 1 MiB output buffer. copy_file_range for large bodies was measured slower here (see
# _cpio.pyx): 1.35 s against 1.2 s of CPU on the benchmark tree.
_FLUSH_AT = 1 << 20          # output buffer size: one write() per MiB, not per entry
_SCRATCH = 1 << 20           # reused read buffer for file bodies
_FILE_TYPES = (io.FileIO, io.BufferedWriter, io.BufferedRandom)
_HEADER = b"070701" + b"%08X" * 13
_ZEROS = b"\0" * 4


def _output_fd(fileobj):
    """The fd of `fileobj` when it is a plain file object on a regular file, else None.

    Only io's own file classes: a wrapper (a compressor's stream writer) may expose its inner
    file's fileno(), and writing there would bypass the wrapper."""
    if not isinstance(fileobj, _FILE_TYPES):
        return None
    try:
        fd = fileobj.fileno()
        return fd if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (AttributeError, OSError, ValueError):
        return None


class NewcWriter:
    def __init__(self, fileobj, mtime=None):
        self._out = fileobj
        self._mtime = None if mtime is None else clamp_u32(mtime)
        self._buf = bytearray()
        self._written = 0          # bytes emitted so far, buffered or not (for the 512 padding)
        self._ino = 0
        self._closed = False
        self._scratch = None
        self._fd = _output_fd(fileobj)
        if self._fd is not None:
            fileobj.flush()        # from here on we write to the fd, after what it already holds

    # -- public API ---------------------------------------------------------------------------
    def add_file(self, name, data, mode=0o100644, uid=0, gid=0, mtime=None):
        name = archive_name(name)
        data = memoryview(data).cast("B")
        if len(data) > MAX_FILE_SIZE:
            raise FileTooLarge(name, len(data))
        self._header(name, self._next_ino(), stat.S_IFREG | stat.S_IMODE(mode), uid, gid, 1,
                     self._when(mtime), len(data), 0, 0)
        self._buf += data
        self._pad(len(data))
        self._maybe_flush()

    def add_dir(self, name, mode=0o40755, uid=0, gid=0, mtime=None):
        self._header(archive_name(name), self._next_ino(), stat.S_IFDIR | stat.S_IMODE(mode), uid, gid, 2,
                     self._when(mtime), 0, 0, 0)
        self._maybe_flush()

    def add_symlink(self, name, target, mode=0o120777, uid=0, gid=0, mtime=None):
        target = os.fsencode(target)
        if not target:
            raise CpioError(f"{os.fsdecode(name)}: empty symlink target")
        self._header(archive_name(name), self._next_ino(), stat.S_IFLNK | stat.S_IMODE(mode), uid, gid, 1,
                     self._when(mtime), len(target), 0, 0)
        self._buf += target
        self._pad(len(target))
        self._maybe_flush()

    def add_tree(self, root, excludes=(), one_file_system=True, planned=None):
        """Archive everything under `root` (not `root` itself); returns the number of entries.

        `planned(nbytes)`, when given, is called once the tree is walked and before any of it is
        written, with the bytes its entries take (a streaming compressor pledges the archive size)."""
        self._check_open()
        entries = _scan_tree(root, excludes, one_file_system)
        links = _link_groups(entries)
        targets = {}   # symlink targets, read once: their lengths are part of the plan
        for i, (rel, path, st) in enumerate(entries):
            if stat.S_ISLNK(st.st_mode):
                try:
                    targets[i] = os.readlink(path)
                except OSError as e:
                    raise CpioError(f"{os.fsdecode(path)}: cannot read link: {e.strerror}") from None
        if planned is not None:
            planned(_tree_bytes(entries, links, targets))
        link_ino = {}
        fixed = self._mtime
        for i, (rel, path, st) in enumerate(entries):
            mode = st.st_mode
            mtime = fixed if fixed is not None else clamp_u32(st.st_mtime_ns // 1_000_000_000)
            if stat.S_ISREG(mode):
                group = links.get(i)
                if group is None:
                    ino, nlink, size = self._next_ino(), 1, st.st_size
                else:
                    if i == group[0]:
                        link_ino[group[0]] = self._next_ino()
                    ino, nlink = link_ino[group[0]], len(group)
                    size = st.st_size if i == group[-1] else 0
                self._header(rel, ino, mode, st.st_uid, st.st_gid, nlink, mtime, size, 0, 0)
                if size:
                    self._body(path, size)
            elif stat.S_ISLNK(mode):
                target = targets[i]
                self._header(rel, self._next_ino(), mode, st.st_uid, st.st_gid, 1, mtime, len(target), 0, 0)
                self._buf += target
                self._pad(len(target))
            elif stat.S_ISDIR(mode):
                self._header(rel, self._next_ino(), mode, st.st_uid, st.st_gid, 2, mtime, 0, 0, 0)
            else:  # character/block devices, fifos, sockets: metadata only
                rdev = st.st_rdev
                self._header(rel, self._next_ino(), mode, st.st_uid, st.st_gid, 1, mtime, 0,
                             os.major(rdev), os.minor(rdev))
            if len(self._buf) >= _FLUSH_AT:
                self._flush()
        return len(entries)

    def close(self):
        """Write the trailer, pad the archive to 512 bytes and flush (the file object stays open)."""
        if self._closed:
            return
        self._header(TRAILER_NAME, 0, 0, 0, 0, 1, 0, 0, 0, 0)
        self._buf += bytes(-(self._written + len(self._buf)) % BLOCK)
        self._flush()
        if self._fd is None and hasattr(self._out, "flush"):
            self._out.flush()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()

    # -- internals ----------------------------------------------------------------------------
    def _check_open(self):
        if self._closed:
            raise CpioError("the archive is closed")

    def _next_ino(self):
        self._ino += 1
        return self._ino

    def _when(self, mtime):
        if mtime is not None:
            return clamp_u32(mtime)
        return self._mtime if self._mtime is not None else 0

    def _header(self, name, ino, mode, uid, gid, nlink, mtime, size, rmajor, rminor):
        self._check_open()
        namesize = len(name) + 1
        self._buf += _HEADER % (ino, mode, uid, gid, nlink, mtime, size, 0, 0, rmajor, rminor, namesize, 0)
        self._buf += name
        # NUL terminator plus padding of header (110) + name + NUL to 4 bytes.
        self._buf += _ZEROS[:1 + (-(110 + namesize) & 3)]

    def _pad(self, size):
        self._buf += _ZEROS[:-size & 3]

    def _maybe_flush(self):
        if len(self._buf) >= _FLUSH_AT:
            self._flush()

    def _flush(self):
        buf = self._buf
        if not buf:
            return
        if self._fd is not None:
            view = memoryview(buf)
            done = 0
            while done < len(buf):
                done += os.write(self._fd, view[done:])
            view.release()
        else:
            _write_all(self._out, buf)
        self._written += len(buf)
        del buf[:]

    def _body(self, path, size):
        """Append `size` bytes of the file at `path` (and the padding)."""
        try:
            src = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            raise CpioError(f"{os.fsdecode(path)}: cannot open: {e.strerror}") from None
        try:
            self._copy_read(src, size, path)
        finally:
            os.close(src)
        self._pad(size)

    def _copy_read(self, src, size, path):
        if self._scratch is None:
            self._scratch = memoryview(bytearray(_SCRATCH))
        scratch = self._scratch
        left = size
        while left:
            n = os.readv(src, [scratch[:min(left, _SCRATCH)]])
            if n == 0:
                raise CpioError(f"{os.fsdecode(path)}: file shrank while being archived")
            self._buf += scratch[:n]
            left -= n
            if len(self._buf) >= _FLUSH_AT:
                self._flush()


def _tree_bytes(entries, links, targets):
    """Bytes add_tree writes for `entries`: padded headers and names, bodies (hard-link data once,
    on the last link) and symlink targets."""
    total = 0
    for i, (rel, _path, st) in enumerate(entries):
        total += (110 + len(rel) + 1 + 3) & ~3
        if i in targets:
            total += (len(targets[i]) + 3) & ~3
        elif stat.S_ISREG(st.st_mode):
            group = links.get(i)
            if group is None or i == group[-1]:
                total += (st.st_size + 3) & ~3
    return total


def _write_all(out, data):
    view = memoryview(data)
    while view:
        n = out.write(view)
        if n is None or n >= len(view):
            break
        view = view[n:]
