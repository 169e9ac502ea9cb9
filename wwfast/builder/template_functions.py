"""The functions a Jinja overlay template may call (Warewulf's template functions, reference A6):
include*, image_has, file, directory, softlink, readlink, import_link, abort, nobackup, unique_field,
basename, inc, dec, systemd_escape_path. They reach the render in progress through the `_ww` entry of
the Jinja context (RenderState) and record what the output depends on (server files, images) there.
"""
import os
import posixpath

import jinja2

from wwfast.fsutil import resolve_in_root

FILE_MARK = "\x00wwfast-file:"   # file() switches output here; the renderer splits the text at these marks


class Abort(BaseException):
    """abort() was called: the template writes no file.

    A BaseException so that Jinja passes it through untouched (it rewrites the traceback of every
    Exception, which costs more than the render on the abort path that network templates take often).
    """


class OutFile:
    """One rendered output: a file (data), a symlink (target) or a directory (data None, no target)."""

    __slots__ = ("rel", "data", "mode", "uid", "gid", "target")

    def __init__(self, rel, data, mode, uid, gid, target=None):
        self.rel, self.data, self.mode, self.uid, self.gid, self.target = rel, data, mode, uid, gid, target

    def __repr__(self):
        return f"OutFile({self.rel!r}, {'-> ' + self.target if self.target else len(self.data)})"



class RenderState:
    """Per-render state the template functions reach through the Jinja context (`_ww`)."""

    __slots__ = ("renderer", "node", "template", "out_rel", "mode", "uid", "gid", "files", "current", "deps", "dirs")

    def __init__(self, renderer, node, template, out_rel, mode, uid, gid):
        self.renderer, self.node, self.template = renderer, node, template
        self.out_rel, self.mode, self.uid, self.gid = out_rel, mode, uid, gid
        # files[0] is the default output (the template's own name); file() appends
        self.files = [[out_rel, mode, uid, gid, None]]
        self.current = 0
        self.deps = set()
        self.dirs = []


def _state(ctx):
    return ctx["_ww"]


def _read_text(renderer, path):
    """A file's text, or the OSError reading it raised: read once per build (the build holds its lock, and
    a template such as users includes the same files for every node)."""
    cache = renderer.file_cache
    if path not in cache:
        try:
            with open(path, "rb") as f:
                cache[path] = f.read().decode("utf-8", "replace")
        except OSError as e:
            cache[path] = e
    return cache[path]


def _read_server_file(state, path, default, what):
    state.deps.add(path)
    data = _read_text(state.renderer, path)
    if isinstance(data, OSError):
        if default is not None:
            return default
        raise FunctionError(f"{what}: cannot read {path}: {data.strerror}") from None
    return data[:-1] if data.endswith("\n") else data  # as Warewulf: one trailing newline trimmed


class FunctionError(Exception):
    """A template function failed on its input (becomes a RenderError with file and line)."""


def _server_path(state, path):
    path = str(path)
    if os.path.isabs(path):
        return path
    return os.path.join(state.renderer.conf_dir, path)


@jinja2.pass_context
def f_include(ctx, path, default=None):
    """A server file, verbatim; a relative path is relative to the conf dir."""
    st = _state(ctx)
    return _read_server_file(st, _server_path(st, path), default, "include")


@jinja2.pass_context
def f_include_block(ctx, path, marker):
    """Lines of a server file up to the first one containing `marker`, then the marker (Warewulf IncludeBlock)."""
    st = _state(ctx)
    full = _server_path(st, path)
    st.deps.add(full)
    from wwfast.builder.wwtemplate.functions import read_block
    return read_block(full, marker)


def _image_file(st, image, path):
    root = st.renderer.image_root(image)
    st.deps.add(("image", image))
    if root is None:
        return None
    try:
        return resolve_in_root(root, path)
    except OSError:  # a symlink loop: the file is as good as missing
        return None


@jinja2.pass_context
def f_include_from(ctx, image, path, default=None):
    """A file from an image's tree (Warewulf IncludeFrom)."""
    st = _state(ctx)
    full = _image_file(st, image, path)
    data = _read_text(st.renderer, full) if full is not None else None
    if data is None or isinstance(data, OSError):
        if default is not None:
            return default
        raise FunctionError(f"include_from: {path} not found in image {image!r}") from None
    return data[:-1] if data.endswith("\n") else data


@jinja2.pass_context
def f_include_from_image(ctx, path, default=None):
    """A file from the node's own image."""
    return f_include_from(ctx, _state(ctx).node.image, path, default)


@jinja2.pass_context
def f_image_has(ctx, path):
    """True when the node's image has `path` (after symlinks): lets a template abort() for missing tools."""
    st = _state(ctx)
    key = (st.node.image, path)
    cache = st.renderer.image_has_cache
    if key not in cache:
        full = _image_file(st, st.node.image, path)
        cache[key] = bool(full) and os.path.exists(full)
    st.deps.add(("image", st.node.image))
    return cache[key]


def _clean_rel(st, name):
    """Output name → path relative to the node root; relative names are beside the template's output."""
    name = str(name)
    if not name.startswith("/"):
        name = posixpath.join(posixpath.dirname(st.out_rel), name)
    norm = posixpath.normpath("/" + name).lstrip("/")
    if not norm or norm.startswith(".."):
        raise FunctionError(f"file: {name!r} is outside the node's tree")
    return norm


@jinja2.pass_context
def f_file(ctx, name, mode=None, uid=None, gid=None):
    """From here on, output goes into file `name` (Warewulf `file`)."""
    st = _state(ctx)
    rel = _clean_rel(st, name)
    st.files.append([rel, st.mode if mode is None else int(mode), st.uid if uid is None else int(uid),
                     st.gid if gid is None else int(gid), None])
    st.current = len(st.files) - 1
    return f"{FILE_MARK}{st.current}\x00"


@jinja2.pass_context
def f_directory(ctx, name, mode=0o755, uid=0, gid=0):
    """Emit a directory with its own mode/owner (e.g. /root/.ssh 0700), which git cannot carry."""
    st = _state(ctx)
    st.dirs.append(OutFile(_clean_rel(st, name), None, int(mode), int(uid), int(gid)))
    return ""


@jinja2.pass_context
def f_softlink(ctx, target):
    """Make the current output file a symlink to `target`."""
    st = _state(ctx)
    st.files[st.current][4] = str(target)
    return ""


@jinja2.pass_context
def f_readlink(ctx, path):
    st = _state(ctx)
    st.deps.add(str(path))
    return os.path.realpath(str(path))


@jinja2.pass_context
def f_import_link(ctx, path):
    """Resolve a server symlink and make the current output a symlink to the result (Warewulf ImportLink)."""
    return f_softlink(ctx, f_readlink(ctx, path))


def f_abort():
    raise Abort()


def f_nobackup():
    return ""  # only meaningful for Warewulf's host overlay; accepted for compatibility


def unique_field(sep, index, text):
    """Keep the first line per value of field `index` (lines without it always kept), in order."""
    seen = set()
    out = []
    for line in str(text).splitlines():
        fields = line.split(sep)
        if len(fields) <= int(index):
            out.append(line)
            continue
        key = fields[int(index)]
        if key in seen:
            continue
        seen.add(key)
        out.append(line)
    return "\n".join(out)


def unique_field_filter(text, sep, index):
    return unique_field(sep, index, text)


def systemd_escape_path(path):
    path = str(path).strip("/") or "-"
    out = []
    for i, ch in enumerate(path):
        if ch == "/":
            out.append("-")
        elif ch.isalnum() or ch in ":_" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.append("".join(f"\\x{b:02x}" for b in ch.encode()))
    return "".join(out)


FUNCTIONS = {
    "include": f_include, "include_block": f_include_block, "include_from": f_include_from,
    "include_from_image": f_include_from_image, "image_has": f_image_has, "file": f_file,
    "softlink": f_softlink, "directory": f_directory, "readlink": f_readlink, "import_link": f_import_link, "abort": f_abort,
    "nobackup": f_nobackup, "unique_field": unique_field, "basename": posixpath.basename,
    "inc": lambda i: int(i) + 1, "dec": lambda i: int(i) - 1, "systemd_escape_path": systemd_escape_path,
}
