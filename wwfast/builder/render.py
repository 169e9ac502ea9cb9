"""Jinja2 rendering of overlay templates, with Warewulf's template functions (reference A6).

Each template is compiled once per run and rendered per node. Undefined names are errors (StrictUndefined)
that name the template, the line and the node: a typo never becomes an empty string on a thousand nodes.

Template data:
  node       the node (NodeView: id, hostname, cluster, image, kernel.args/version, tags, resources, ipmi,
             asset_key, netdevs {name: NetDev}, primary (NetDev or None), ...)
  server     the provisioning server (address, netmask, prefixlen, network, cidr, port, update_interval, secure,
             tls, tls_port)
  settings   every server setting (Settings.as_dict())
  all_nodes  every node (NodeView), sorted by id: for hosts files
  overlay    the overlay's name
Functions: include(path[, default]), include_from_image(path[, default]), include_from(image, path[, default]),
  image_has(path), include_block(path, marker), file(name[, mode, uid, gid]), directory(name[, mode, uid, gid]),
  softlink(target), import_link(path),
  readlink(path), abort(), nobackup(), unique_field(sep, index, text) (also a filter), basename, inc, dec,
  systemd_escape_path.
"""
import ipaddress
import os
import posixpath
import re
import shlex
import sys

import jinja2
import jinja2.nodes

from wwfast import layout
# Warewulf's `.ww` templates (the Go template engine) are imported when a list names one: wwfast's own
# overlays are Jinja, and a build that needs no Go templates does not pay for loading the engine.
from wwfast.errors import ConfigError
from wwfast.fsutil import resolve_in_root

# Names a template may use that tie its output to something beyond the server settings.
NODE_NAMES = frozenset({"node"})
IMAGE_FUNCS = frozenset({"include_from_image", "image_has"})
SERVER_FILE_FUNCS = frozenset({"include", "include_block", "include_from", "import_link", "readlink"})
_FILE_MARK = "\x00wwfast-file:"
WW_SUFFIX = ".ww"  # Warewulf templates: Go's template language (wwfast.builder.wwtemplate)
_FILE_SPLIT = re.compile("\x00wwfast-file:(\\d+)\x00")


class RenderError(ConfigError):
    """A template failed: names the template file, its line and the node being rendered."""

    def __init__(self, template, line, node, message):
        super().__init__(template, line, f"node {node}" if node else "", message)
        self.template, self.node = template, node


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


# ----------------------------------------------------------------------------------------------- data

class View:
    """Attribute access over a dict of fields (Jinja looks attributes up first, so this is the fast path)."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def __getitem__(self, key):  # node["id"] works too
        try:
            return self.__dict__[key]
        except KeyError:
            raise KeyError(key) from None

    def __contains__(self, key):
        return key in self.__dict__

    def __repr__(self):
        return f"{type(self).__name__}({self.__dict__.get('id') or self.__dict__.get('name', '')})"


class NetDev(View):
    """A network device with CIDR helpers: prefixlen, network, cidr (ip/len), network_cidr, broadcast, cidr6."""


_NO_V4 = {"prefixlen": "", "network": "", "cidr": "", "network_cidr": "", "broadcast": ""}
_PREFIX_OF_MASK = {}


def _ip_int(text):
    parts = text.split(".")
    if len(parts) != 4:
        raise ValueError(text)
    value = 0
    for p in parts:
        octet = int(p)
        if not 0 <= octet <= 255:
            raise ValueError(text)
        value = value << 8 | octet
    return value


def _ip_text(value):
    return f"{value >> 24 & 255}.{value >> 16 & 255}.{value >> 8 & 255}.{value & 255}"


def _prefixlen(netmask):
    """Prefix length of a dotted netmask or a plain number ("" → 32)."""
    cached = _PREFIX_OF_MASK.get(netmask)
    if cached is None:
        cached = ipaddress.IPv4Network(f"0.0.0.0/{netmask or '32'}").prefixlen
        _PREFIX_OF_MASK[netmask] = cached
    return cached


def _v4_helpers(ipaddr, netmask):
    """CIDR helpers of an IPv4 address and netmask (plain integer arithmetic: this runs for every device)."""
    if not ipaddr:
        return dict(_NO_V4)
    try:
        address = _ip_int(ipaddr)
        prefix = _prefixlen(netmask)
    except ValueError:
        return dict(_NO_V4, cidr=ipaddr)
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    network = _ip_text(address & mask)
    return {"prefixlen": prefix, "network": network, "cidr": f"{ipaddr}/{prefix}",
            "network_cidr": f"{network}/{prefix}", "broadcast": _ip_text(address | (~mask & 0xFFFFFFFF))}


def netdev_view(dev):
    """Template view of a records.NetDev: its fields plus CIDR helpers."""
    prefix6, ip6 = dev.prefixlen6, dev.ipaddr6
    if "/" in ip6:  # "fd00::5/64" form fills prefixlen6
        ip6, prefix6 = ip6.split("/", 1)
    fields = {
        "name": dev.name, "device": dev.device or dev.name, "hwaddr": dev.hwaddr, "ipaddr": dev.ipaddr,
        "netmask": dev.netmask, "gateway": dev.gateway, "ipaddr6": ip6, "prefixlen6": prefix6,
        "gateway6": dev.gateway6, "mtu": dev.mtu, "type": dev.type, "onboot": dev.onboot, "primary": dev.primary,
        "tags": dev.tags, "cidr6": f"{ip6}/{prefix6 or 64}" if ip6 else "",
    }
    fields.update(_v4_helpers(dev.ipaddr, dev.netmask))
    return NetDev(**fields)


class NodeView(View):
    pass


def node_view(node):
    """Template view of a records.Node. Define has applied every default: the view only renames
    fields for templates and adds helpers (primary, macs, kernel.args_str)."""
    netdevs = {name: netdev_view(dev) for name, dev in node.network_devices.items()}
    primary = netdevs.get(node.primary_network)
    kernel = node.kernel
    ipmi = {k.replace(" ", "_"): v for k, v in node.ipmi.items()}
    return NodeView(
        id=node.id, hostname=node.id, comment=node.comment, cluster=node.cluster_name, image=node.image_name,
        ipxe_template=node.ipxe_template, profiles=list(node.profiles), system_overlay=list(node.system_overlay),
        runtime_overlay=list(node.runtime_overlay),
        kernel=View(version=kernel.version, args=list(kernel.args), args_str=" ".join(kernel.args)),
        init=node.init, root=node.root, asset_key=node.asset_key, discoverable=node.discoverable,
        primary_network=node.primary_network, primary=primary, netdevs=netdevs, macs=list(node.macs),
        ipmi=View(**ipmi), tags=node.tags, resources=node.resources, disks=node.disks,
        filesystems=node.filesystems,
    )


def server_view(settings):
    helpers = _v4_helpers(settings.address, settings.netmask)
    return View(address=settings.address, ipaddr=settings.address, netmask=settings.netmask,
                port=settings.http_port, update_interval=settings.update_interval, secure=bool(settings.secure),
                tls=bool(getattr(settings, "tls", False)), tls_port=getattr(settings, "tls_port", 9874),
                prefixlen=helpers["prefixlen"], network=helpers["network"], cidr=helpers["cidr"],
                network_cidr=helpers["network_cidr"])


# ------------------------------------------------------------------------------------------ functions

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


def _read_server_file(state, path, default, what):
    state.deps.add(path)
    try:
        with open(path, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        if default is not None:
            return default
        raise _FunctionError(f"{what}: cannot read {path}: {e.strerror}") from None
    return data[:-1] if data.endswith("\n") else data  # as Warewulf: one trailing newline trimmed


class _FunctionError(Exception):
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
    try:
        with open(full, "rb") as f:
            data = f.read().decode("utf-8", "replace")
    except (OSError, TypeError):
        if default is not None:
            return default
        raise _FunctionError(f"include_from: {path} not found in image {image!r}") from None
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
        raise _FunctionError(f"file: {name!r} is outside the node's tree")
    return norm


@jinja2.pass_context
def f_file(ctx, name, mode=None, uid=None, gid=None):
    """From here on, output goes into file `name` (Warewulf `file`)."""
    st = _state(ctx)
    rel = _clean_rel(st, name)
    st.files.append([rel, st.mode if mode is None else int(mode), st.uid if uid is None else int(uid),
                     st.gid if gid is None else int(gid), None])
    st.current = len(st.files) - 1
    return f"{_FILE_MARK}{st.current}\x00"


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


def _unique_field_filter(text, sep, index):
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


# ------------------------------------------------------------------------------------------- renderer

class _PathLoader(jinja2.BaseLoader):
    """Templates are named by their absolute path on the server."""

    def get_source(self, environment, template):
        try:
            with open(template, encoding="utf-8") as f:
                source = f.read()
        except OSError as e:
            raise jinja2.TemplateNotFound(template) from e
        mtime = os.path.getmtime(template)
        return source, template, lambda: os.path.getmtime(template) == mtime


def make_environment():
    env = jinja2.Environment(loader=_PathLoader(), undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True,
                             extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"], cache_size=-1)
    env.globals.update(FUNCTIONS)
    env.filters["unique_field"] = _unique_field_filter
    env.filters["basename"] = posixpath.basename
    env.tests["match_re"] = lambda value, pattern: re.match(pattern, str(value)) is not None
    env.filters["sh_quote"] = lambda v: shlex.quote(str(v))
    return env


class Compiled:
    """A compiled template and the names it uses (decides what its output depends on)."""

    __slots__ = ("path", "template", "names")

    def __init__(self, path, template, names):
        self.path, self.template, self.names = path, template, names

    @property
    def per_node(self):
        return bool(self.names & (NODE_NAMES | IMAGE_FUNCS))

    @property
    def uses_all_nodes(self):
        return "all_nodes" in self.names

    @property
    def uses_image(self):
        return bool(self.names & IMAGE_FUNCS)


def template_line(exc, path):
    """Line of `path` where `exc` was raised, from the traceback Jinja rewrites to template lines."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == path:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Renderer:
    """Compiles templates once and renders them for nodes."""

    def __init__(self, settings, nodes, conf_dir="conf", state_dir="var"):
        self.conf_dir = os.fspath(conf_dir)
        self.state_dir = os.fspath(state_dir)
        self.settings = settings
        self.env = make_environment()
        self.nodes = {nid: node_view(n) for nid, n in sorted(nodes.items())}
        self.base = dict(self.env.globals)
        self.base.update({
            "server": server_view(settings),
            "settings": settings.as_dict() if hasattr(settings, "as_dict") else {},
            "all_nodes": list(self.nodes.values()),
            # Absolute: templates include these paths, and a relative one would be read under the conf dir.
            "paths": View(conf=os.path.abspath(self.conf_dir), state=os.path.abspath(self.state_dir),
                          ssh=os.path.abspath(layout.ssh_dir(self.state_dir))),
        })
        self._compiled = {}
        self._image_roots = {}
        self.image_has_cache = {}
        self.raw_nodes = nodes
        self._ww = None
        self.warnings = set()  # from Warewulf templates (an Include of a missing file, ...)

    # ---- Warewulf `.ww` templates (Go template language, wwfast.builder.wwtemplate)
    def ww(self):
        if self._ww is None:
            from wwfast.builder.wwtemplate.render import WWRenderer
            self._ww = WWRenderer(self.conf_dir, self.state_dir, self.settings, self.raw_nodes, self.image_root,
                                  build_time=_build_time(self.state_dir))
        return self._ww

    def _ww_compile(self, path):
        from wwfast.builder.gotemplate import TemplateError
        try:
            return self.ww().compile(path)
        except TemplateError as e:
            raise RenderError(path, e.line, None, f"template syntax: {e.message}") from None
        except OSError as e:
            raise RenderError(path, None, None, f"template not readable: {e.strerror}") from None

    def _ww_render(self, path, out_rel, node, overlay, mode, uid, gid):
        from wwfast.builder.gotemplate import TemplateError
        ww = self.ww()
        if path not in ww.compiled:
            self._ww_compile(path)
        node_id = node.id if node is not None else None
        try:
            outs, deps, warnings = ww.render(path, out_rel, node_id, overlay)
        except TemplateError as e:
            where = f"executing {e.action}: " if e.action else ""
            raise RenderError(path, e.line, node_id, where + e.message) from None
        for w in warnings:
            self.warnings.add(f"{path}: node {node_id}: {w}" if node_id else f"{path}: {w}")
        files = []
        for rel, text, target in outs:
            if target is not None:
                files.append(OutFile(rel, b"", 0o777, uid, gid, target))
            else:
                files.append(OutFile(rel, text.encode("utf-8", "surrogateescape"), mode, uid, gid))
        return files, deps

    def _render_reporting(self, compiled, data, node):
        path = compiled.path
        node_id = node.id if node is not None else None
        try:
            return compiled.template.render(data)
        except Abort:
            return None
        except _FunctionError as e:
            raise RenderError(path, template_line(e, path), node_id, str(e)) from None
        except jinja2.UndefinedError as e:
            raise RenderError(path, template_line(e, path), node_id, f"undefined: {e.message}") from None
        except jinja2.TemplateError as e:
            raise RenderError(path, template_line(e, path), node_id, str(e)) from None
        except Exception as e:  # a bad filter argument and the like: still say where
            raise RenderError(path, template_line(e, path), node_id, f"{type(e).__name__}: {e}") from None

    def image_root(self, image):
        if image not in self._image_roots:
            root = layout.image_root(self.state_dir, image) if image else None
            self._image_roots[image] = root if root and os.path.isdir(root) else None
        return self._image_roots[image]

    def compile(self, path):
        path = os.fspath(path)
        if path.endswith(WW_SUFFIX):
            return self._ww_compile(path)
        c = self._compiled.get(path)
        if c is None:
            try:
                source = self.env.loader.get_source(self.env, path)[0]
                tree = self.env.parse(source, path, path)
                # every name read (find_undeclared_variables would hide the global functions we look for)
                names = {n.name for n in tree.find_all(jinja2.nodes.Name) if n.ctx == "load"}
                template = self.env.get_template(path)
            except jinja2.TemplateSyntaxError as e:
                raise RenderError(path, e.lineno, None, f"template syntax: {e.message}") from None
            except jinja2.TemplateNotFound:
                raise RenderError(path, None, None, "template not readable") from None
            c = self._compiled[path] = Compiled(path, template, frozenset(names))
        return c

    def render(self, path, out_rel, node, overlay="", mode=0o644, uid=0, gid=0):
        """Render template `path` for `node` (a NodeView, or None for node-independent templates).

        Returns (files: [OutFile], deps: set). `out_rel` is the default output path (template name minus .j2).
        """
        if os.fspath(path).endswith(WW_SUFFIX):
            return self._ww_render(os.fspath(path), out_rel, node, overlay, mode, uid, gid)
        compiled = self.compile(path)
        state = RenderState(self, node, path, out_rel, mode, uid, gid)
        data = dict(self.base, overlay=overlay, _ww=state)
        if node is not None:
            data["node"] = node
        template = compiled.template
        try:
            # Fast path: a shared context over our own dict (globals included in self.base).
            text = "".join(template.root_render_func(template.new_context(data, shared=True)))
        except Abort:
            return [], state.deps
        except Exception:
            # Render again the normal way: Jinja then maps the traceback to template lines for the message.
            state = RenderState(self, node, path, out_rel, mode, uid, gid)
            data["_ww"] = state
            text = self._render_reporting(compiled, data, node)
            if text is None:
                return [], state.deps
        return state.dirs + _split_outputs(text, state.files), state.deps


def _build_time(state_dir):
    """Warewulf's .BuildTime: when define last wrote nodes.json (the same for every node of a build)."""
    try:
        return int(os.stat(layout.nodes_json(state_dir)).st_mtime)
    except OSError:
        return 0


def _split_outputs(text, specs):
    parts = _FILE_SPLIT.split(text) if _FILE_MARK in text else [text]
    contents = {0: parts[0]}
    for i in range(1, len(parts), 2):
        contents[int(parts[i])] = parts[i + 1]
    out = []
    for index, (rel, mode, uid, gid, target) in enumerate(specs):
        if index == 0 and len(specs) > 1 and target is None:
            continue  # content before the first file() is dropped unless it was made a softlink (Warewulf)
        if target is not None:
            out.append(OutFile(rel, b"", 0o777, uid, gid, target))
        else:
            out.append(OutFile(rel, contents.get(index, "").encode(), mode, uid, gid))
    return out


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use `wwfast overlay show`")
