"""Overlay discovery: built-in overlays shipped with wwfast, site overlays in CONF/overlays.

An overlay is a directory tree copied onto the node's root; files ending in `.j2` are Jinja2 templates
and files ending in `.ww` Warewulf's Go templates, rendered per node (suffix dropped). As in Warewulf, a `rootfs/` subdirectory is the tree when present,
and a site overlay with the same name as a built-in one shadows it completely (no file merge).
"""
import os
import pathlib
import re
import stat

from wwfast.errors import ConfigError

BUILTIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "data" / "overlays"
TEMPLATE_SUFFIX = ".j2"
TEMPLATE_SUFFIXES = (".j2", ".ww")  # Jinja2 (wwfast's own), Go template language (Warewulf's)
NAME_RE = re.compile(r"^[a-zA-Z0-9\-._:]+$")
# Warewulf's other names for built-in overlays (debian.interfaces is its old name of ifupdown).
ALIASES = {"debian.interfaces": "ifupdown", "wwclient.x86_64": "wwclient", "wwclient.aarch64": "wwclient"}
# Modes of built-in files that git and wheels cannot carry (NetworkManager ignores keyfiles not 0600).
BUILTIN_MODES = {"NetworkManager/etc/NetworkManager/system-connections/ww4-managed.ww": 0o600,
                 "wwinit/warewulf/config.ww": 0o600}


class OverlayError(ConfigError):
    """A missing or unusable overlay (names the overlay and, when known, the node asking for it)."""

    def __init__(self, message, file=None, field=""):
        super().__init__(file, None, field, message)


def _tree(path):
    rootfs = path / "rootfs"
    return rootfs if rootfs.is_dir() else path


def site_dir(conf_dir):
    return pathlib.Path(conf_dir) / "overlays"


def list_overlays(conf_dir):
    """{name: tree path} of every overlay; site ones shadow built-in ones of the same name."""
    found = {}
    for base in (BUILTIN_DIR, site_dir(conf_dir) if conf_dir else None):
        if base is None or not base.is_dir():
            continue
        for entry in sorted(base.iterdir()):
            if entry.is_dir() and NAME_RE.match(entry.name):
                found[entry.name] = _tree(entry)
    for alias, target in ALIASES.items():
        if alias not in found and (BUILTIN_DIR / target).is_dir():
            found[alias] = _tree(BUILTIN_DIR / target)
    return dict(sorted(found.items()))


def is_builtin(tree):
    return BUILTIN_DIR in pathlib.Path(tree).parents


def overlay_tree(conf_dir, name):
    """The tree of overlay `name`, or OverlayError."""
    if not NAME_RE.match(name or ""):
        raise OverlayError(f"bad overlay name {name!r} (letters, digits, - . _ : only)")
    site = site_dir(conf_dir) / name if conf_dir else None
    if site is not None and site.is_dir():
        return _tree(site)
    builtin = BUILTIN_DIR / ALIASES.get(name, name)
    if builtin.is_dir():
        return _tree(builtin)
    raise OverlayError(f"overlay {name!r} not found (looked in {site_dir(conf_dir)} and the built-in overlays)")


class Entry:
    """One item of an overlay tree: a directory, a file, a template or a symlink."""

    __slots__ = ("rel", "kind", "source", "mode", "uid", "gid", "target")

    def __init__(self, rel, kind, source, mode, uid, gid, target=None):
        self.rel = rel            # path in the node's tree, no leading slash
        self.kind = kind          # "dir" | "file" | "template" | "symlink"
        self.source = source      # absolute path on the server
        self.mode = mode          # permission bits (07777)
        self.uid = uid
        self.gid = gid
        self.target = target      # symlink target


def walk(tree, keep_owners=None):
    """Entries of an overlay tree in sorted, parents-first order.

    Owners come from the source files only when `keep_owners` (default: when running as root and the
    overlay is a site one): a tree checked out by a normal user must not give nodes files owned by
    that user's uid. Otherwise everything is root's, as on a Warewulf server.
    """
    tree = pathlib.Path(tree)
    builtin = is_builtin(tree)
    if keep_owners is None:
        keep_owners = os.geteuid() == 0 and not builtin
    modes = {}
    if builtin:
        prefix = tree.relative_to(BUILTIN_DIR).as_posix() + "/"
        modes = {k[len(prefix):]: v for k, v in BUILTIN_MODES.items() if k.startswith(prefix)}
    out = []

    def visit(directory, prefix):
        with os.scandir(directory) as it:
            names = sorted(it, key=lambda e: e.name)
        for e in names:
            if e.name in ("__pycache__",) or e.name.endswith((".pyc", "~")):
                continue
            rel = prefix + e.name
            st = e.stat(follow_symlinks=False)
            uid, gid = (st.st_uid, st.st_gid) if keep_owners else (0, 0)
            perms = modes.get(rel, stat.S_IMODE(st.st_mode))
            if stat.S_ISLNK(st.st_mode):
                out.append(Entry(rel, "symlink", e.path, 0o777, uid, gid, os.readlink(e.path)))
            elif stat.S_ISDIR(st.st_mode):
                out.append(Entry(rel, "dir", e.path, perms, uid, gid))
                visit(e.path, rel + "/")
            elif stat.S_ISREG(st.st_mode):
                if rel.endswith(TEMPLATE_SUFFIXES):
                    out.append(Entry(rel[: -len(".ww" if rel.endswith(".ww") else TEMPLATE_SUFFIX)], "template",
                                     e.path, perms, uid, gid))
                else:
                    out.append(Entry(rel, "file", e.path, perms, uid, gid))
            # sockets, fifos and devices have no place in an overlay: skipped

    visit(tree, "")
    return out
