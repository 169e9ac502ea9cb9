"""Render Warewulf `.ww` templates for wwfast nodes: compile once, render per node (or once for all
when the template does not look at the node), split the output into the files file() names.

Used by wwfast.builder.render.Renderer for every `.ww` file of an overlay; gives the same OutFile lists
and RenderError messages (file, line, node) as the Jinja2 side.
"""
import os
import posixpath

from wwfast.builder.gotemplate import Abort, Template, TemplateError
from wwfast.builder.wwtemplate import functions, model, tstruct
from wwfast.builder.wwtemplate.analyze import analyze

SUFFIX = ".ww"


class Compiled:
    __slots__ = ("path", "template", "uses")

    def __init__(self, path, template, uses):
        self.path, self.template, self.uses = path, template, uses

    @property
    def per_node(self):
        return self.uses.per_node

    @property
    def uses_all_nodes(self):
        return self.uses.all_nodes

    @property
    def uses_image(self):
        return self.uses.image

    @property
    def uses_server_files(self):
        return self.uses.server_files

    @property
    def names(self):
        """The same facts in the vocabulary of the Jinja2 side's Compiled.names (for the overlay builder)."""
        n = {"node"} if self.per_node else set()
        if self.uses.server_files:
            n.add("include")
        if self.uses.image:
            n.add("include_from")
        if self.uses.all_nodes:
            n.add("all_nodes")
        return frozenset(n)


def compile_file(path, funcs=None):
    """A Template for a `.ww` file, with Warewulf's functions (TemplateError on syntax errors)."""
    with open(path, "rb") as f:
        text = f.read().decode("utf-8", "surrogateescape")
    return Template(text, name=os.path.basename(path), funcs=dict(functions.FUNCS, **(funcs or {})),
                    filename=os.fspath(path))


class WWRenderer:
    """Per build: the server side of the template data, node structs made on demand, compiled templates."""

    def __init__(self, conf_dir, state_dir, settings, nodes, image_root, build_time=None):
        self.conf_dir, self.state_dir = os.fspath(conf_dir), os.fspath(state_dir)
        self.nodes = nodes            # {id: nodes.json node}
        self.image_root = image_root  # image name -> its rootfs dir or None
        self._structs = {}
        self._tstructs = {}
        self._all = None
        renderer = self

        class _Struct(tstruct.struct_type(settings, [], build_time)):
            __slots__ = ()
            AllNodes = property(lambda self: renderer.all_nodes())

        self.struct_cls = _Struct
        self._blank = tstruct.template_struct(_Struct, model.node_struct({"id": ""}))
        self.compiled = {}

    def all_nodes(self):
        if self._all is None:
            self._all = [self.node(n) for n in sorted(self.nodes)]
        return self._all

    def node(self, node_id):
        n = self._structs.get(node_id)
        if n is None:
            n = self._structs[node_id] = model.node_struct(self.nodes[node_id])
        return n

    def compile(self, path):
        path = os.fspath(path)
        c = self.compiled.get(path)
        if c is None:
            template = compile_file(path)
            c = self.compiled[path] = Compiled(path, template, analyze(template.uses))
        return c

    def render(self, path, out_rel, node_id, overlay=""):
        """([(rel, text or None, symlink target or None)], deps, warnings) for one node (None: any node).

        Raises TemplateError on failure; an abort() gives no files.
        """
        compiled = self.compiled.get(path) or self.compile(path)
        node = self.node(node_id) if node_id is not None else None
        if node is None:
            data = self._blank
        else:
            data = self._tstructs.get(node_id)
            if data is None:
                data = self._tstructs[node_id] = tstruct.template_struct(self.struct_cls, node)
        data.Overlay, data.BuildSource = overlay, os.fspath(path)
        ctx = functions.RenderContext(self, node)
        state = compiled.template.new_state(ctx)
        ctx.state = state
        try:
            compiled.template.run(state, data)
        except Abort:
            return [], ctx.deps, ctx.warnings
        return split_outputs(state.out, ctx.files, out_rel), ctx.deps, ctx.warnings


_CLEAN = {}


def _clean(rel):
    c = _CLEAN.get(rel)
    if c is None:
        c = _CLEAN[rel] = posixpath.normpath("/" + rel).lstrip("/")
    return c


def split_outputs(out, files, out_rel):
    """The rendered files: [(node-relative path, text, symlink target)].

    The text before the first file() call is dropped unless it was made a symlink (Warewulf); relative
    file() names sit beside the template's own output, absolute ones are anchored at the node's root.
    """
    if len(files) == 1:  # the common case: no file() call
        name, start, target = files[0]
        return [(_clean(out_rel), "".join(out), target)]
    results = []
    bounds = [f[1] for f in files] + [len(out)]
    for i, (name, start, target) in enumerate(files):
        if i == 0 and len(files) > 1 and target is None:
            continue
        if not name:
            rel = out_rel
        elif name.startswith("/"):
            rel = name
        else:
            rel = posixpath.join(posixpath.dirname(out_rel), name)
        norm = posixpath.normpath("/" + rel).lstrip("/")
        if not norm or norm.startswith("..") or posixpath.normpath(rel.lstrip("/")).startswith(".."):
            raise TemplateError(out_rel, None, f'file() path "{name}" escapes the node\'s tree')
        text = "".join(out[start:bounds[i + 1]])
        results.append((norm, text, target))
    return results
