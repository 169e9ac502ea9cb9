"""Change site overlays (CONF/overlays/NAME): create, delete, write files, mkdir, chmod, chown, list variables.

Only site overlays change. A change to a built-in overlay first copies the whole built-in tree into the
site (the copy then shadows it, as overlays.list_overlays resolves names) and says so through `log`.
Paths inside an overlay never leave it (no "..", no symlink out); every file is written atomically; one
lock (CONF/overlays/.lock) serialises changes.
"""
import os
import pathlib
import shutil
import stat

import jinja2
import jinja2.nodes

from wwfast import fsutil
from wwfast.builder import overlays
from wwfast.builder.render import make_environment
from wwfast.builder.template_functions import FUNCTIONS
from wwfast.errors import ConfigError, UsageError


def lock(conf_dir):
    return fsutil.locked(overlays.site_dir(conf_dir) / ".lock", what="another overlay change")


def _check_name(name):
    if not overlays.NAME_RE.match(name or "") or name.startswith("."):
        raise UsageError(f"bad overlay name {name!r} (letters, digits, - . _ : only)")


def site_tree(conf_dir, name, log=print):
    """The site tree of `name`, copying a built-in overlay into the site first."""
    _check_name(name)
    site = overlays.site_dir(conf_dir) / name
    if site.is_dir():
        return overlays._tree(site)
    builtin = overlays.BUILTIN_DIR / name
    if not builtin.is_dir():
        raise UsageError(f"no overlay {name!r} (create it with `wwfast overlay create {name}`)")
    tmp = site.with_name(f".{name}.copy-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(builtin, tmp, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    os.replace(tmp, site)
    log(f"overlay {name}: built-in overlay copied to the site as {site} (it now shadows the built-in one)")
    return overlays._tree(site)


def inside(tree, rel):
    """Absolute path of `rel` in `tree`; UsageError if it would leave the tree (.., symlinks)."""
    rel = str(rel).strip("/")
    if not rel or any(part in ("..",) for part in rel.split("/")):
        raise UsageError(f"{rel!r}: give a path inside the overlay (no ..)")
    tree = pathlib.Path(tree).resolve()
    path = tree / rel
    parent = path.parent.resolve()
    if parent != tree and tree not in parent.parents:
        raise UsageError(f"{rel!r} leads outside the overlay through a symbolic link")
    return parent / path.name


def existing(tree, rel):
    """`rel`, or `rel`.j2 when only the template exists (users name files as the node sees them)."""
    path = inside(tree, rel)
    if not path.exists() and not path.is_symlink() and not rel.endswith(overlays.TEMPLATE_SUFFIX):
        template = inside(tree, rel + overlays.TEMPLATE_SUFFIX)
        if template.exists():
            return template
    return path


def create(conf_dir, name):
    _check_name(name)
    site = overlays.site_dir(conf_dir) / name
    if site.exists():
        raise UsageError(f"overlay {name!r} already exists in {site}")
    if (overlays.BUILTIN_DIR / name).is_dir():
        raise UsageError(f"{name!r} is a built-in overlay: edit it (it is copied into the site first)")
    site.mkdir(parents=True)
    fsutil.fsync_dir(site.parent)
    return site


def overlay_users(conf_dir, name):
    """Nodes and profiles whose overlay lists name `name` (from the node file)."""
    from wwfast.define import nodefile
    config = nodefile.read_config(conf_dir)
    users = []
    for what, entries in (("profile", config.profiles), ("node", config.nodes)):
        for entry_name, partial in entries.items():
            if name in (partial.get("system overlay") or []) + (partial.get("runtime overlay") or []):
                users.append(f"{what} {entry_name}")
    return sorted(set(users))


def delete(conf_dir, name, files=(), force=False, parents=False):
    """Delete a site overlay, or files in it; returns what was removed."""
    _check_name(name)
    site = overlays.site_dir(conf_dir) / name
    if not site.is_dir():
        where = "a built-in overlay, which cannot be deleted" if (overlays.BUILTIN_DIR / name).is_dir() else "not found"
        raise UsageError(f"overlay {name!r}: {where}")
    if not files:
        users = [] if (overlays.BUILTIN_DIR / name).is_dir() else overlay_users(conf_dir, name)
        if users and not force:
            raise UsageError(f"overlay {name!r} is used by {', '.join(users)}: --force deletes it anyway")
        if any(site.iterdir()) and not force:
            raise UsageError(f"overlay {name!r} is not empty: --force deletes it with its files")
        tmp = site.with_name(f".{name}.deleted-{os.getpid()}")
        os.replace(site, tmp)  # one rename: the overlay is whole or gone
        shutil.rmtree(tmp)
        return [str(site)]
    tree = overlays._tree(site)
    removed = []
    for rel in files:
        path = existing(tree, rel)
        if path.is_dir() and not path.is_symlink():
            if any(path.iterdir()) and not force:
                raise UsageError(f"{rel}: directory not empty: --force deletes it with its files")
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            raise UsageError(f"overlay {name!r} has no {rel!r}")
        removed.append(str(path.relative_to(pathlib.Path(tree).resolve())))
        if parents:
            parent = path.parent
            while parent != pathlib.Path(tree).resolve() and not any(parent.iterdir()):
                parent.rmdir()
                parent = parent.parent
    return removed


def _mode(text, what="mode"):
    try:
        mode = int(str(text), 8)
    except ValueError:
        raise UsageError(f'{what} "{text}" is not an octal mode such as 0644') from None
    if not 0 <= mode <= 0o7777:
        raise UsageError(f'{what} "{text}" is out of range')
    return mode


def _parent(path, parents, rel):
    if not path.parent.is_dir():
        if not parents:
            raise UsageError(f"{rel}: directory {path.parent.name!r} does not exist (--parents creates it)")
        path.parent.mkdir(parents=True)


def write_file(path, data, mode=None, parents=False, rel=""):
    """Replace `path` atomically, keeping its mode (or `mode` for a new file, default 0644)."""
    path = pathlib.Path(path)
    _parent(path, parents, rel or path.name)
    if mode is None:
        mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fsutil.atomic_write(path, data, perms=mode)


def import_file(tree, source, rel, overwrite=False, parents=False, mode=None):
    path = inside(tree, rel)
    if path.exists() and not overwrite:
        raise UsageError(f"{rel} already exists in the overlay (--overwrite replaces it)")
    try:
        with open(source, "rb") as f:
            data = f.read()
        source_mode = stat.S_IMODE(os.stat(source).st_mode)
    except OSError as e:
        raise UsageError(f"{source}: {e.strerror}") from None
    write_file(path, data, mode if mode is not None else source_mode, parents, rel)
    return path


def mkdir(tree, rel, mode="0755", parents=True):
    path = inside(tree, rel)
    if path.exists():
        raise UsageError(f"{rel} already exists in the overlay")
    _parent(path, parents, rel)
    path.mkdir(mode=_mode(mode))
    os.chmod(path, _mode(mode))  # mkdir's mode is cut by the umask
    return path


def chmod(tree, rel, mode):
    path = existing(tree, rel)
    if not path.exists():
        raise UsageError(f"the overlay has no {rel!r}")
    os.chmod(path, _mode(mode))
    return path


def chown(tree, rel, uid, gid=None):
    path = existing(tree, rel)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"the overlay has no {rel!r}")
    try:
        uid, gid = int(uid), int(gid) if gid is not None else path.lstat().st_gid
    except ValueError:
        raise UsageError("chown takes numeric ids: UID [GID]") from None
    os.lchown(path, uid, gid)
    return path


# ------------------------------------------------------------------------------- template variables

def _dotted(node):
    """"node.ipmi.username" for Getattr/Getitem chains over a Name, else None."""
    parts = []
    while isinstance(node, (jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        if isinstance(node, jinja2.nodes.Getattr):
            parts.append(node.attr)
        elif isinstance(node.arg, jinja2.nodes.Const):
            parts.append(str(node.arg.value))
        else:
            parts.append("[...]")
        node = node.node
    if isinstance(node, jinja2.nodes.Name):
        parts = parts[::-1]
        while parts and parts[-1] in _METHODS:  # node.tags.get("x"): the data is node.tags
            parts.pop()
        return ".".join([node.name] + parts)
    return None


_METHODS = frozenset("get items keys values split join lower upper strip startswith endswith replace".split())


def check_template(path, text):
    """ConfigError at the line of a Jinja syntax error."""
    try:
        make_environment().parse(text, str(path), str(path))
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(path, e.lineno, "", f"template syntax: {e.message}") from None


def template_variables(path):
    """(variables, functions) a template uses: dotted data names, template functions called."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    env = make_environment()
    try:
        tree = env.parse(text, str(path), str(path))
    except jinja2.TemplateSyntaxError as e:
        raise ConfigError(path, e.lineno, "", f"template syntax: {e.message}") from None
    local = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx in ("store", "param")}
    variables, functions = set(), set()
    for call in tree.find_all(jinja2.nodes.Call):
        if isinstance(call.node, jinja2.nodes.Name) and call.node.name in FUNCTIONS:
            functions.add(call.node.name)
    chained = set()
    for node in tree.find_all((jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        name = _dotted(node)
        if name:
            chained.add(name)
    for node in tree.find_all(jinja2.nodes.Name):
        if node.ctx == "load" and node.name not in FUNCTIONS and node.name not in local:
            variables.add(node.name)
    for name in chained:
        if name.split(".")[0] not in local:
            variables.add(name)
    # keep the longest chains: node.ipmi.username says more than node.ipmi or node
    keep = {v for v in variables if not any(o != v and o.startswith(v + ".") for o in variables)}
    return sorted(keep), sorted(functions)
