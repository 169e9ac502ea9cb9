"""The pieces a node's overlay archive is made of, and the rules that keep the archives small.

An overlay's source tree is read once (OverlaySource: its entries, static contents and a digest); each
path of a node's merged overlay is an Item. Outside secure mode the system archive leaves out what the
runtime archive carries with the same bytes, and identical archives are written once and hard-linked
(dedupe_key, link_into_place). wwfast.builder.overlay_build plans and runs the build with these.
"""
import functools
import hashlib
import io
import os

from wwfast import cpio
from wwfast.builder import overlays

S_IFREG, S_IFDIR, S_IFLNK = 0o100000, 0o040000, 0o120000


class Item:
    """One path of a node's merged overlay: a file, a directory or a symlink, shared or per node."""

    __slots__ = ("rel", "data", "mode", "uid", "gid", "target", "shared_id", "prunable")

    def __init__(self, rel, data, mode, uid, gid, target=None, shared_id=None, prunable=False):
        self.rel, self.data, self.mode, self.uid, self.gid, self.target = rel, data, mode, uid, gid, target
        self.shared_id = shared_id  # set when the same object serves every node (dedupe key)
        # an overlay directory left empty (its templates aborted) is not sent: no stray /etc/NetworkManager
        self.prunable = prunable


def item_from_out(out, shared_id=None):
    return Item(out.rel, out.data, out.mode, out.uid, out.gid, out.target, shared_id)


class OverlaySource:
    """An overlay's entries, static file contents, and a digest of everything in it."""

    def __init__(self, name, tree):
        self.name = name
        self.tree = tree
        self.entries = overlays.walk(tree)
        h = hashlib.sha256(f"{name}\0{tree}\0".encode())
        self.static = {}  # rel -> Item for dirs, files and symlinks
        for e in self.entries:
            h.update(f"{e.rel}\0{e.kind}\0{e.mode:o}\0{e.uid}\0{e.gid}\0{e.target or ''}\0".encode())
            if e.kind in ("file", "template"):
                with open(e.source, "rb") as f:
                    data = f.read()
                h.update(hashlib.sha256(data).digest())
                if e.kind == "file":
                    self.static[e.rel] = Item(e.rel, data, e.mode, e.uid, e.gid)
            elif e.kind == "dir":
                self.static[e.rel] = Item(e.rel, None, e.mode, e.uid, e.gid, prunable=True)
            else:
                self.static[e.rel] = Item(e.rel, b"", 0o777, e.uid, e.gid, e.target)
        self.digest = h.hexdigest()


@functools.lru_cache(maxsize=None)
def parents(rel):
    """Ancestor directories of an archive path, nearest first ("a/b/c" -> ("a/b", "a"))."""
    out = []
    parent = os.path.dirname(rel)
    while parent:
        out.append(parent)
        parent = os.path.dirname(parent)
    return tuple(out)


def same_item(a, b):
    if a is b:
        return True
    return (a.data == b.data and a.target == b.target and a.mode == b.mode and a.uid == b.uid
            and a.gid == b.gid)


def drop_sent_by_runtime(system, runtime):
    """Leave out of the system archive the files the runtime archive carries with the same bytes and metadata.

    Outside secure mode the iPXE script loads both, system then runtime, and the kernel unpacks them in
    that order: the runtime copy lands on the same path anyway, so the node's tree is the same. This
    matters because /etc/hosts (in both default lists) grows with the cluster: without this every node's
    system archive would carry its own copy of a file listing all nodes. In secure mode the runtime
    overlay comes later (node agent), so the system archive keeps everything.
    """
    for rel, item in list(system.items()):
        if item.data is None and item.target is None:
            continue  # directories are tiny; keeping them keeps the system tree whole
        other = runtime.get(rel)
        if other is not None and same_item(item, other):
            del system[rel]


def dedupe_key(context, merged):
    h = hashlib.sha256(context.encode())
    for rel in sorted(merged):
        it = merged[rel]
        if it.shared_id is not None and it.shared_id >= 0:
            h.update(f"{rel}\0#{it.shared_id}\0".encode())
        else:
            h.update(f"{rel}\0{it.mode}\0{it.uid}\0{it.gid}\0{it.target}\0".encode())
            if it.data is not None:
                h.update(hashlib.sha256(it.data).digest())
    return h.digest()


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def holds(path, data):
    """Whether the file at `path` holds exactly `data`."""
    try:
        if os.stat(path).st_size != len(data):
            return False
        with open(path, "rb") as f:
            return f.read() == data
    except OSError:
        return False


def link_into_place(existing, path):
    """Hard-link an identical archive written earlier in this run to `path`, atomically.

    A new name is linked straight in (a link appears whole); an existing one is replaced by rename.
    """
    directory = os.path.dirname(path)
    try:
        os.link(existing, path)
        return True
    except FileExistsError:
        pass
    except FileNotFoundError:   # the node's directory is new (made only then: a mkdir takes the parent's lock)
        try:
            os.makedirs(directory, exist_ok=True)
            os.link(existing, path)
            return True
        except OSError:
            return False
    except OSError:
        return False
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.link")
    try:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(existing, tmp)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def file_sig(path):
    try:
        st = os.stat(path)
        return [st.st_mtime_ns, st.st_size, st.st_ino]
    except OSError:
        return None


def pack(merged, fileobj=None, dirs=None, mtime=0):
    """Write a merged overlay as newc (parents added as needed, sorted: parents before children).

    A parent missing from `merged` is taken from `dirs` (the whole merged overlay, when `merged` is only
    part of it: same mode and owner as in the whole archive) or made 0755 root. Into `fileobj` when
    given, else returns the bytes. `merged` is changed (empty prunable directories out, parents in).
    """
    used = set()
    for rel, it in merged.items():
        if not it.prunable:
            used.update(parents(rel))
    for rel in [r for r, it in merged.items() if it.prunable and r not in used]:
        del merged[rel]
    for rel in list(merged):
        for parent in parents(rel):
            if parent not in merged:
                known = dirs.get(parent) if dirs else None
                if known is None or known.data is not None or known.target is not None:
                    known = Item(parent, None, 0o755, 0, 0, shared_id=-1)
                merged[parent] = known
    buf = io.BytesIO() if fileobj is None else fileobj
    w = cpio.NewcWriter(buf, mtime=mtime)
    for rel in sorted(merged):
        it = merged[rel]
        if it.target is not None:
            w.add_symlink(rel, it.target, S_IFLNK | 0o777, it.uid, it.gid)
        elif it.data is None:
            w.add_dir(rel, S_IFDIR | it.mode, it.uid, it.gid)
        else:
            w.add_file(rel, it.data, S_IFREG | it.mode, it.uid, it.gid)
    w.close()
    return buf.getvalue() if fileobj is None else None
