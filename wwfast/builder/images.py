"""Imported OS images: STATE/images/<name>/rootfs/ (the node's root tree) + image.json.

`import_image` takes a directory (a chroot), a tarball (.tar, .tar.gz, .tar.zst, .tar.xz, .tar.bz2),
an OCI image layout (directory or tar) or a `docker save` archive (layers applied in order, whiteouts
and opaque directories honoured). Owners, modes, hard links, symlinks and devices are kept (we run as
root). Everything lands in a temp directory beside the store first and is renamed into place at the
end, so an import that fails, or is killed, never leaves a half image under the image's name.
"""
import contextlib
import datetime
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile

from wwfast import fsutil, layout
from wwfast.builder.inventory import list_images  # noqa: F401 (callers use images.list_images)
from wwfast.errors import UsageError

IMAGE_FORMAT = 1
NAME_RE = re.compile(r"^[\w\-.:]+$")   # Warewulf's image name rule
EXCLUDES_FILE = "etc/warewulf/excludes"
_TMP_MARK = ".work-"     # STORE/.<name>.work-XXXX: the temp tree of an import, exec or copy of <name>


class ImageError(UsageError):
    """An image cannot be imported or found (the message says what and where)."""


def images_dir(state_dir):
    return layout.images_dir(state_dir)


def image_dir(state_dir, name):
    return layout.image_dir(state_dir, name)


def image_root(state_dir, name):
    """STATE/images/<name>/rootfs (not checked: see require_image)."""
    return layout.image_root(state_dir, name)


def load_info(state_dir, name):
    """image.json of an image (raises ImageError naming the known images when it is missing)."""
    path = layout.image_info(state_dir, name)
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        known = ", ".join(list_images(state_dir)) or "none"
        raise ImageError(f"image {name!r} is not imported (known images: {known}); "
                         f"run: wwfast image import SOURCE {name}") from None
    except ValueError as e:
        raise ImageError(f"{path}: not valid JSON ({e}); re-import with --update") from None


def require_image(state_dir, name):
    """image_root() of an image that exists, else ImageError."""
    load_info(state_dir, name)
    return image_root(state_dir, name)


def check_name(name):
    if not NAME_RE.match(name or "") or name.startswith("."):
        raise ImageError(f"bad image name {name!r}: use letters, digits, '_', '-', '.', ':' "
                         f"(not starting with '.')")


def read_excludes(rootfs):
    """Patterns of the image's own etc/warewulf/excludes (one per line; blank and # lines skipped)."""
    path = os.path.join(rootfs, EXCLUDES_FILE)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


# ---- fingerprints ------------------------------------------------------------------------------

def tree_digest(root, content=True):
    """sha256 over every entry's path, type, mode, owner, size, mtime, device and link target, and
    (content=True) its bytes. content=False also covers ctime: a cheap 'did anything change' stamp."""
    h = hashlib.sha256()
    count = total = 0
    first_link = {}
    root_b = os.fsencode(root)
    stack = [b""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root_b, rel_dir) if rel_dir else root_b) as it:
            children = sorted(it, key=lambda e: e.name)
        subdirs = []
        for child in children:
            rel = rel_dir + b"/" + child.name if rel_dir else child.name
            st = child.stat(follow_symlinks=False)
            count += 1
            fields = [rel, b"%o" % st.st_mode, b"%d:%d" % (st.st_uid, st.st_gid)]
            if content:   # whole seconds: what tar and newc keep, so a dir and its tarball agree
                fields.append(b"%d" % (st.st_mtime_ns // 1_000_000_000))
            else:
                fields.append(b"%d %d" % (st.st_mtime_ns, st.st_ctime_ns))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
                fields.append(b"%d" % st.st_size)
                if content:
                    fields.append(fsutil.sha256_file(child.path).encode())
                    if st.st_nlink > 1:   # hard-link identity, as the first path of the inode
                        fields.append(b"link:" + first_link.setdefault((st.st_dev, st.st_ino), rel))
            elif stat.S_ISLNK(st.st_mode):
                fields.append(os.readlink(child.path))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                fields.append(b"%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append(rel)
            h.update(b"\0".join(fields) + b"\n")
        stack.extend(reversed(subdirs))
    return h.hexdigest(), count, total


# ---- import ------------------------------------------------------------------------------------

def detect_kind(source):
    """'dir', 'oci-dir', 'tar' (a root tree), 'oci-tar' or 'docker-archive'."""
    if os.path.isdir(source):
        if os.path.isfile(os.path.join(source, "oci-layout")) and os.path.isfile(os.path.join(source, "index.json")):
            return "oci-dir"
        return "dir"
    if not os.path.exists(source):
        raise ImageError(f"{source}: no such file or directory")
    if not os.path.isfile(source):
        raise ImageError(f"{source}: not a directory, tarball or container archive")
    from wwfast.builder.layers import LayerError, outer_members
    try:
        names = outer_members(source)
    except LayerError as e:
        raise ImageError(f"{source}: {e}") from None
    if "manifest.json" in names:
        return "docker-archive"
    if "oci-layout" in names and "index.json" in names:
        return "oci-tar"
    return "tar"


def import_image(source, name, state_dir, update=False, log=print, pull=None, syncuser_etc=None):
    """Import `source` as image `name`; returns the image.json dict. A `docker://` or `docker-daemon:`
    source is pulled first (registry.pull, with `pull` = registry.PullOptions) into the import's
    temp directory, so a failed pull leaves nothing behind either. syncuser_etc: align the tree's
    UIDs/GIDs with the passwd/group there before it is installed (Warewulf's import --syncuser)."""
    from wwfast.builder import registry
    check_name(name)
    remote = registry.is_remote(source)
    if not remote:
        source = os.path.abspath(source)
    dest = image_dir(state_dir, name)
    with image_lock(state_dir, name):
        if os.path.exists(dest) and not update:
            raise ImageError(f"image {name!r} already exists; add --update to re-import it")
        kind = "registry" if remote else detect_kind(source)
        tmp = work_dir(state_dir, name)
        try:
            rootfs = os.path.join(tmp, "rootfs")
            os.mkdir(rootfs, 0o755)
            info = {"format": IMAGE_FORMAT, "name": name, "source": source, "kind": kind}
            if remote:
                download = os.path.join(tmp, "download")
                pulled = registry.pull(source, download, pull or registry.PullOptions(), tmp, log=log)
                info.update(platform=pulled["platform"], manifest=pulled["manifest"])
                log(f"importing {source} ({pulled['platform']}, {pulled['blobs']} blobs checked) as {name}")
                info["layers"] = _fill("oci-dir", download, rootfs, what=source)
                for leftover in os.listdir(tmp):   # the download, skopeo's temp files, the auth file
                    if leftover != "rootfs":
                        _remove_path(os.path.join(tmp, leftover))
            else:
                log(f"importing {source} ({kind}) as {name}")
                info["layers"] = _fill(kind, source, rootfs)
            if syncuser_etc:
                from wwfast.builder import syncuser
                syncuser.sync(rootfs, syncuser_etc, log=log)
            info["imported"] = now_utc()
            write_info(tmp, info)
            commit(state_dir, tmp, dest, log=log)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log(f"image {name}: {info['entries']} entries, {info['bytes']} bytes, fingerprint {info['fingerprint'][:16]}")
    return info


def _remove_path(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def now_utc():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def write_info(tree, info):
    """Recompute the content fingerprint of tree/rootfs into `info` and write tree/image.json."""
    info["fingerprint"], info["entries"], info["bytes"] = tree_digest(os.path.join(tree, "rootfs"))
    fsutil.atomic_write(os.path.join(tree, "image.json"), json.dumps(info, sort_keys=True, indent=1) + "\n")
    return info


# ---- locks and the swap into place ----------------------------------------------------------------

@contextlib.contextmanager
def image_lock(state_dir, name):
    """One operation on an image at a time (import, exec, copy, rename, delete); stale temp trees of
    a killed operation are removed once we hold it (nobody else can be using them)."""
    store = images_dir(state_dir)
    os.makedirs(store, exist_ok=True)
    with fsutil.locked(os.path.join(store, f".{name}.lock"), wait=False,
                       what=f"another operation on image {name}"):
        _remove_stale(store, name)
        yield


def work_dir(state_dir, name):
    """A fresh temp directory beside the store for a new tree of `name` (caller holds image_lock)."""
    return tempfile.mkdtemp(prefix=f".{name}{_TMP_MARK}", dir=images_dir(state_dir))


@contextlib.contextmanager
def build_locked(state_dir, log=print):
    """The build stage's lock: a build never reads a tree while it is being swapped or removed.
    Waits for a running build (and says so)."""
    path = layout.build_lock(state_dir)
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(fsutil.locked(path, wait=False))
        except fsutil.LockBusy:
            log(f"image: waiting for the build run holding {path} to finish")
            stack.enter_context(fsutil.locked(path, what="a build run"))
        yield


def commit(state_dir, tmp, dest, log=print):
    """Swap the finished tree `tmp` into `dest` atomically, under the build lock."""
    os.chmod(tmp, 0o755)
    with build_locked(state_dir, log=log):
        previous = _install(tmp, dest)
    if previous:   # removed after the lock is released: a build waits only for the swap itself
        shutil.rmtree(previous, ignore_errors=True)


def _fill(kind, source, rootfs, what=None):
    """Put the image tree into rootfs; returns the number of layers applied."""
    # tar, zstd and friends only when importing (define and build read images without them)
    from wwfast.builder.layer_apply import apply_layer
    from wwfast.builder.layers import LayerError, open_layer_stream
    try:
        if kind == "dir":
            _copy_dir(source, rootfs)
            return 0
        if kind == "tar":
            with open_layer_stream(source) as stream:
                apply_layer(stream, rootfs, whiteouts=False, label=source)
            return 1
        from wwfast.builder.layers import container_layers
        count = 0
        for label, opener in container_layers(kind, source):
            with opener() as stream:
                apply_layer(stream, rootfs, whiteouts=True, label=label)
            count += 1
        return count
    except LayerError as e:
        raise ImageError(f"{what or source}: {e}") from None


def _copy_dir(source, rootfs):
    # GNU cp -a keeps owners, modes, hard links, devices, fifos, xattrs and times; it stays on the
    # source's file system, so a chroot with /proc or /sys mounted does not drag those in.
    run = subprocess.run(["cp", "-a", "--one-file-system", "--", source + "/.", rootfs + "/"],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise ImageError(f"{source}: copy failed: {run.stderr.strip()}")


_RENAME_EXCHANGE = 2


def _install(tmp, dest):
    """Put the new image in place: an atomic swap when it replaces one (renameat2 RENAME_EXCHANGE).
    Returns the path now holding the previous image (inside the store's work-tree names, so a crash
    before it is removed leaves it for the next operation to clean), or None."""
    if not os.path.exists(dest):
        os.rename(tmp, dest)
        fsutil.fsync_dir(os.path.dirname(dest))
        return None
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    swapped = hasattr(libc, "renameat2") and libc.renameat2(
        at_fdcwd, os.fsencode(tmp), at_fdcwd, os.fsencode(dest), _RENAME_EXCHANGE) == 0
    if not swapped:   # old kernel or file system without the flag: two renames, old tree kept to the end
        old = tmp + ".old"
        os.rename(dest, old)
        os.rename(tmp, dest)
        tmp = old
    fsutil.fsync_dir(os.path.dirname(dest))
    return tmp      # now holds the previous image


def _remove_stale(store, name):
    """Temp trees of an import of `name` that was killed (we hold its lock, so none is running)."""
    prefix = f".{name}{_TMP_MARK}"
    for entry in os.listdir(store):
        if entry.startswith(prefix):
            with contextlib.suppress(OSError):
                shutil.rmtree(os.path.join(store, entry))
