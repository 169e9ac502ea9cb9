"""Jinja2 rendering of overlay templates: compile once, render per node, say where a template failed.

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
The views are wwfast.builder.template_views, the functions wwfast.builder.template_functions.
"""
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
from wwfast.builder.template_functions import (FILE_MARK, FUNCTIONS, Abort, FunctionError, OutFile,
                                               RenderState, unique_field_filter)
from wwfast.builder.template_views import View, node_view, server_view

# Names a template may use that tie its output to something beyond the server settings.
NODE_NAMES = frozenset({"node"})
IMAGE_FUNCS = frozenset({"include_from_image", "image_has"})
SERVER_FILE_FUNCS = frozenset({"include", "include_block", "include_from", "import_link", "readlink"})
WW_SUFFIX = ".ww"  # Warewulf templates: Go's template language (wwfast.builder.wwtemplate)
_FILE_SPLIT = re.compile("\x00wwfast-file:(\\d+)\x00")


class RenderError(ConfigError):
    """A template failed: names the template file, its line and the node being rendered."""

    def __init__(self, template, line, node, message):
        super().__init__(template, line, f"node {node}" if node else "", message)
        self.template, self.node = template, node


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
    env.filters["unique_field"] = unique_field_filter
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
        self.file_cache = {}     # path -> text or the OSError (template_functions._read_text)
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
        except FunctionError as e:
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
    parts = _FILE_SPLIT.split(text) if FILE_MARK in text else [text]
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
