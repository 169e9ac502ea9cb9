"""Warewulf's own template functions for `.ww` files (reference A6), on top of Go's builtins and sprig.

Per-render state (the output files file() opens, abort, nobackup, the server files read) lives in a
RenderContext passed to the functions that need it, so each template is compiled only once.
"""
import os
import posixpath

from wwfast import layout
from wwfast.builder.gotemplate import INT, STRING, Abort, FuncError, gofunc
from wwfast.fsutil import resolve_in_root


class RenderContext:
    """What one render of one template for one node collects."""

    __slots__ = ("env", "node", "state", "files", "backup", "deps", "warnings")

    def __init__(self, env, node):
        self.env = env          # the WWRenderer (paths, images)
        self.node = node        # model.Node, or None for a node-independent render
        self.state = None       # the template's execution state (its output list), set by the renderer
        self.files = [["", 0, None]]  # [name, start index in the output, symlink target or None]
        self.backup = True
        self.deps = set()
        self.warnings = []


def _server_path(ctx, path):
    """Warewulf resolves relative names under <sysconfdir>/warewulf: here the conf dir. Its keys/ (the
    ssh host keys `wwctl configure ssh` makes) fall back to where wwfast keeps them, STATE/ssh."""
    if path.startswith("/"):
        return path
    full = os.path.join(ctx.env.conf_dir, path)
    if path.startswith("keys/") and not os.path.exists(full):
        return os.path.join(layout.ssh_dir(ctx.env.state_dir), path[len("keys/"):])
    return full


def _read(ctx, full):
    ctx.deps.add(full)
    with open(full, "rb") as f:
        data = f.read().decode("utf-8", "surrogateescape")
    return data[:-1] if data.endswith("\n") else data


@gofunc(STRING, ctx=True)
def include(ctx, path):
    """A server file, verbatim, one trailing newline trimmed; "" when unreadable (as Warewulf)."""
    full = _server_path(ctx, path)
    try:
        return _read(ctx, full)
    except OSError as e:
        ctx.warnings.append(f"Include: cannot read {full}: {e.strerror}")
        return ""


@gofunc(STRING, STRING, ctx=True)
def include_from(ctx, image, path):
    """A file from an image's root tree; "" (with a warning) when the image or the file is missing."""
    if not image:
        ctx.warnings.append(f"IncludeFrom: no image given for {path}")
        return ""
    root = ctx.env.image_root(image)
    ctx.deps.add(("image", image))
    if root is None:
        ctx.warnings.append(f"IncludeFrom: image {image!r} does not exist ({path})")
        return ""
    try:
        full = resolve_in_root(root, path)
        with open(full, "rb") as f:
            data = f.read().decode("utf-8", "surrogateescape")
    except (OSError, TypeError):
        ctx.warnings.append(f"IncludeFrom: {path} not found in image {image!r}")
        return ""
    return data[:-1] if data.endswith("\n") else data


@gofunc(STRING, STRING, ctx=True)
def include_block(ctx, path, marker):
    """The lines of a server file before the first one containing `marker`, then the marker."""
    full = _server_path(ctx, path)
    ctx.deps.add(full)
    return read_block(full, marker)


def read_block(path, marker):
    """IncludeBlock's text: the lines before the first containing `marker`, then the marker itself
    (just the marker when the file cannot be read)."""
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return marker
    kept = []
    for line in lines:
        if marker in line:
            break
        kept.append(line + "\n")
    return "".join(kept) + marker


def _eval_symlinks(ctx, path):
    ctx.deps.add(path)
    if not os.path.lexists(path):
        raise FuncError(f"lstat {path}: no such file or directory")
    resolved = os.path.realpath(path)
    if not os.path.exists(resolved):
        raise FuncError(f"lstat {resolved}: no such file or directory")
    return resolved


@gofunc(STRING, ctx=True)
def readlink(ctx, path):
    return _eval_symlinks(ctx, path)


@gofunc(STRING, ctx=True)
def file_(ctx, name):
    """From here on, the output goes to file `name` (relative: beside the template's output)."""
    ctx.files.append([name, len(ctx.state.out), None])
    return ""


@gofunc(STRING, ctx=True)
def softlink(ctx, target):
    """Make the current output file (the default one, or the last file()) a symlink to `target`."""
    ctx.files[-1][2] = target
    return ""


@gofunc(STRING, ctx=True)
def import_link(ctx, path):
    """Resolve a symlink on the server and make the current output a symlink to its target."""
    try:
        target = _eval_symlinks(ctx, path)
    except FuncError as e:
        raise FuncError(f'ImportLink: failed to resolve symlink "{path}": {e}') from None
    return softlink(ctx, target)


@gofunc(ctx=True)
def abort(ctx):
    raise Abort()


@gofunc(ctx=True)
def nobackup(ctx):
    ctx.backup = False
    return ""


@gofunc(STRING, INT, STRING)
def unique_field(sep, index, text):
    """Keep the first line per value of field `index`; lines without it (or with it empty) always."""
    out = []
    seen = set()
    for line in text.split("\n"):
        fields = line.split(sep) if sep else list(line)
        if len(fields) > index and fields[index] != "":
            if fields[index] in seen:
                continue
            seen.add(fields[index])
        out.append(line)
    return "\n".join(out)


def systemd_escape(text, is_path=False):
    """go-systemd's UnitNameEscape / UnitNamePathEscape (what systemd-escape [--path] prints)."""
    out = []
    in_slashes = False
    start = True
    for b in text.encode("utf-8", "surrogateescape"):
        c = chr(b)
        if is_path:
            if c == "/":
                in_slashes = True
                continue
            if in_slashes:
                if not start:
                    out.append("-")
                in_slashes = False
        if c.isascii() and (c.isalnum() or c in ":_" or (c == "." and not start)):
            out.append(c)
        elif c == "/":
            out.append("-")
        else:
            out.append(f"\\x{b:02x}")
        start = False
    if is_path and not out:
        return "-"
    return "".join(out)


@gofunc(ctx=True)
def ignition_json(ctx):
    from wwfast.builder.wwtemplate.ignition import ignition_json as build
    return build(ctx.node) if ctx.node is not None else ""


FUNCS = {
    "Include": include, "IncludeFrom": include_from, "IncludeBlock": include_block, "ImportLink": import_link,
    "basename": gofunc(STRING)(lambda p: posixpath.basename(p.rstrip("/")) or ("/" if p.startswith("/") else ".")),
    "inc": gofunc(INT)(lambda i: i + 1), "dec": gofunc(INT)(lambda i: i - 1),
    "file": file_, "softlink": softlink, "readlink": readlink, "IgnitionJson": ignition_json, "abort": abort,
    "nobackup": nobackup, "UniqueField": unique_field,
    "SystemdEscape": gofunc(STRING)(lambda s: systemd_escape(s)),
    "SystemdEscapePath": gofunc(STRING)(lambda s: systemd_escape(s, is_path=True)),
}
# Functions that make a template's output depend on something beyond the node and the settings.
SERVER_FILE_FUNCS = frozenset({"Include", "IncludeBlock", "ImportLink", "readlink"})
IMAGE_FUNCS = frozenset({"IncludeFrom"})
NODE_FUNCS = frozenset({"IgnitionJson"})
