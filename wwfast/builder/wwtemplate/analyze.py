"""What a compiled `.ww` template reads: decides whether it is rendered per node or once for all, and
which inputs (all nodes, the image, server files) its output depends on.

Fields read from the top-level struct (through `.` where dot is still the top, or `$`) that belong to
the node make it per node; so does handing the whole struct to a function or a {{template}}.
"""
from wwfast.builder.gotemplate import nodes as N
from wwfast.builder.wwtemplate.functions import IMAGE_FUNCS, NODE_FUNCS, SERVER_FILE_FUNCS
from wwfast.builder.wwtemplate.model import NODE_FIELDS

NODE_NAMES = frozenset(NODE_FIELDS) | {"Id", "Hostname", "ThisNode", "Container", "ContainerName"}


class Uses:
    __slots__ = ("fields", "funcs", "whole")

    def __init__(self):
        self.fields = set()   # top-level fields read
        self.funcs = set()    # functions called
        self.whole = False    # the whole top-level struct escapes (passed on): assume everything

    @property
    def per_node(self):
        return self.whole or bool(self.fields & NODE_NAMES) or bool(self.funcs & (NODE_FUNCS | IMAGE_FUNCS))

    @property
    def all_nodes(self):
        return self.whole or "AllNodes" in self.fields

    @property
    def image(self):
        return bool(self.funcs & IMAGE_FUNCS)

    @property
    def server_files(self):
        return bool(self.funcs & SERVER_FILE_FUNCS)


def analyze(trees):
    uses = Uses()
    for root in trees.values():
        _list(root, True, uses)
    return uses


def _list(lst, dot_is_top, uses):
    if lst is None:
        return
    for node in lst.nodes:
        if isinstance(node, N.ActionNode):
            _pipe(node.pipe, dot_is_top, uses)
        elif isinstance(node, (N.IfNode,)):
            _pipe(node.pipe, dot_is_top, uses)
            _list(node.list, dot_is_top, uses)
            _list(node.else_list, dot_is_top, uses)
        elif isinstance(node, (N.RangeNode, N.WithNode)):
            _pipe(node.pipe, dot_is_top, uses)
            inner_top = dot_is_top and len(node.pipe.cmds) == 1 and len(node.pipe.cmds[0].args) == 1 \
                and isinstance(node.pipe.cmds[0].args[0], N.DotNode) and isinstance(node, N.WithNode)
            _list(node.list, inner_top, uses)
            _list(node.else_list, dot_is_top, uses)
        elif isinstance(node, N.TemplateNode):
            if node.pipe is not None:
                _pipe(node.pipe, dot_is_top, uses)
                if _passes_top(node.pipe, dot_is_top):
                    uses.whole = True


def _passes_top(pipe, dot_is_top):
    last = pipe.cmds[-1]
    if len(last.args) != 1:
        return False
    a = last.args[0]
    return (isinstance(a, N.DotNode) and dot_is_top) or (isinstance(a, N.VariableNode) and a.ident == ["$"])


def _pipe(pipe, dot_is_top, uses):
    for cmd in pipe.cmds:
        for i, arg in enumerate(cmd.args):
            _arg(arg, dot_is_top, uses, as_value=i > 0 or len(cmd.args) == 1)


def _arg(arg, dot_is_top, uses, as_value):
    if isinstance(arg, N.FieldNode):
        if dot_is_top:
            uses.fields.add(arg.ident[0])
    elif isinstance(arg, N.VariableNode):
        if arg.ident[0] == "$":
            if len(arg.ident) > 1:
                uses.fields.add(arg.ident[1])
            else:
                uses.whole = True
    elif isinstance(arg, N.DotNode):
        if dot_is_top:
            uses.whole = True
    elif isinstance(arg, N.IdentifierNode):
        uses.funcs.add(arg.name)
    elif isinstance(arg, N.PipeNode):
        _pipe(arg, dot_is_top, uses)
    elif isinstance(arg, N.ChainNode):
        _arg(arg.node, dot_is_top, uses, True)
