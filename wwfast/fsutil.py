"""Atomic writes, locks and hashing: every file wwfast writes goes through here.

A writer creates a temp file in the target's directory, fsyncs it and renames
it into place, so a reader sees the old file or the new one, never a torn one,
and a crash (even kill -9) leaves the old file whole.
"""
import contextlib
import errno
import fcntl
import hashlib
import itertools
import os
import time

HASH_CHUNK = 1 << 20


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


SYNC_EACH_MAX = 64       # up to this many files: an fsync each; more: one syncfs of their file system


def sync_files(paths, dirs=()):
    """Make files just written durable, with their directory entries (and the entries of `dirs`).

    A few files get an fsync each (and their directories one each): only what this run wrote goes to
    disk, not every dirty page other processes left on the same file system. Past SYNC_EACH_MAX files
    one syncfs(2) is cheaper than thousands of fsyncs."""
    paths = list(dict.fromkeys(os.fspath(p) for p in paths))     # each once, in order
    if not paths and not dirs:
        return
    if len(paths) > SYNC_EACH_MAX:
        syncfs(os.path.dirname(os.path.abspath(paths[0])))
        return
    for path in paths:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for directory in sorted({os.path.dirname(os.path.abspath(p)) for p in paths} | {os.fspath(d) for d in dirs}):
        fsync_dir(directory)


def syncfs(path):
    """Flush the file system holding `path` once (cheaper than an fsync per file for thousands)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if libc.syncfs(fd) == 0:
                return
        finally:
            os.close(fd)
    except (OSError, AttributeError):
        pass
    os.sync()


@contextlib.contextmanager
def atomic_file(path, mode="wb", perms=0o644, fsync=True):
    """Yield a file object; on success it replaces `path` atomically.

    On an exception the temp file is removed and `path` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = _create_temp(directory, os.path.basename(path), perms)
    except FileNotFoundError:   # made only when missing: a mkdir per file costs a syscall and the dir's lock
        os.makedirs(directory, exist_ok=True)
        fd, tmp = _create_temp(directory, os.path.basename(path), perms)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
        if fsync:
            fsync_dir(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_temp_names = itertools.count()


def _umask():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)   # no /proc: read it by setting it (at import, before any thread)
    os.umask(old)
    return old


_UMASK = _umask()


def _create_temp(directory, name, perms):
    """A new temp file `.<name>.<pid>-<n>.tmp` in `directory` with exactly `perms`: (fd, path).

    Created with its final mode (no separate chmod, unless the umask strips bits), one metadata
    change less per file for stages that write ten thousand of them.
    """
    while True:
        tmp = os.path.join(directory, f".{name}.{os.getpid()}-{next(_temp_names)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, perms)
        except FileExistsError:   # left by a killed process that had our pid: take the next name
            continue
        if perms & _UMASK:
            os.fchmod(fd, perms)
        return fd, tmp


def atomic_write(path, data, perms=0o644, fsync=True):
    """Write bytes or str to `path` atomically."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_file(path, "wb", perms=perms, fsync=fsync) as f:
        f.write(data)


def write_if_changed(path, data, fsync=False):
    """Write `data` (str or bytes) atomically unless the file already holds it; True when written. Per-file
    incremental output: an unchanged file keeps its inode and mtime, so the next stage sees it unchanged."""
    data = data.encode() if isinstance(data, str) else data
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return False
    except OSError:
        pass
    atomic_write(path, data, fsync=fsync)
    return True


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def resolve_in_root(root, path, max_links=40):
    """Resolve `path` as if `root` were '/': symlinks are followed as the node would follow them, and
    absolute targets restart from `root`, so the result never leaves the tree. Raises OSError(ELOOP)
    after `max_links` links."""
    root = os.path.abspath(root)
    parts = [p for p in str(path).split("/") if p not in ("", ".")]
    resolved = []
    links = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        if os.path.islink(candidate):
            links += 1
            if links > max_links:
                raise OSError(errno.ELOOP, f"{path}: too many levels of symbolic links in {root}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        resolved.append(part)
    return os.path.join(root, *resolved)


class LockBusy(RuntimeError):
    """Another process holds the lock and we were told not to wait."""


@contextlib.contextmanager
def locked(path, wait=True, timeout=None, what="another wwfast run", shared=False):
    """Hold an exclusive (or `shared`) flock on `path` (created if missing) for the block.

    The kernel drops the lock when the holder dies, so a kill -9 never leaves
    a stale lock behind. An exclusive holder writes its pid into the file.
    """
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
                break
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
                if not wait or (deadline is not None and time.monotonic() >= deadline):
                    raise LockBusy(f"{path} is held by {what}; try again when it finishes") from None
                time.sleep(0.05)
        if not shared:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


WRITEBACK_STEP = 8 << 20       # flush-behind: start writing back every 8 MiB written


def _sync_file_range():
    """libc's sync_file_range(2), or None (not Linux, no ctypes)."""
    try:
        import ctypes
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (ImportError, OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    return func


class HashingWriter:
    """Pass writes to `raw`, hashing and counting them: a written file's sha256 costs no extra read.

    flush_behind=True (`raw` a file with a fileno()): every WRITEBACK_STEP bytes the kernel is told to
    start writing the part written so far (sync_file_range WRITE, which does not wait), so the fsync at
    the end finds little left to write instead of the whole file. Durability is still the fsync's job."""

    _SYNC_FILE_RANGE_WRITE = 2

    def __init__(self, raw, flush_behind=False):
        self.raw = raw
        self.hash = hashlib.sha256()
        self.size = 0
        self._kick = _sync_file_range() if flush_behind else None
        self._kicked = 0

    def write(self, data):
        self.raw.write(data)
        self.hash.update(data)
        self.size += len(data)
        if self._kick is not None and self.size - self._kicked >= WRITEBACK_STEP:
            self._flush_behind()
        return len(data)

    def _flush_behind(self):
        self.raw.flush()
        if self._kick(self.raw.fileno(), self._kicked, self.size - self._kicked, self._SYNC_FILE_RANGE_WRITE):
            self._kick = None       # refused (e.g. the file system does not support it): leave it to fsync
        self._kicked = self.size

    def flush(self):
        self.raw.flush()
