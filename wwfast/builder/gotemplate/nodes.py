"""The parse tree of a Go template (the node kinds of text/template/parse, with their source lines)."""


class Node:
    __slots__ = ("line",)
    kind = "node"


class ListNode(Node):
    __slots__ = ("nodes",)
    kind = "list"

    def __init__(self, line):
        self.line, self.nodes = line, []


class TextNode(Node):
    __slots__ = ("text",)
    kind = "text"

    def __init__(self, line, text):
        self.line, self.text = line, text


class CommentNode(Node):
    __slots__ = ("text",)
    kind = "comment"

    def __init__(self, line, text):
        self.line, self.text = line, text


class PipeNode(Node):
    """decl: the variables declared (or assigned, is_assign) by the pipeline; cmds: the commands."""
    __slots__ = ("decl", "is_assign", "cmds")
    kind = "pipe"

    def __init__(self, line):
        self.line, self.decl, self.is_assign, self.cmds = line, [], False, []

    def __str__(self):
        text = " | ".join(str(c) for c in self.cmds)
        if self.decl:
            text = f"{', '.join(self.decl)} {'=' if self.is_assign else ':='} {text}"
        return text


class ActionNode(Node):
    __slots__ = ("pipe",)
    kind = "action"

    def __init__(self, line, pipe):
        self.line, self.pipe = line, pipe

    def __str__(self):
        return "{{" + str(self.pipe) + "}}"


class CommandNode(Node):
    __slots__ = ("args",)
    kind = "command"

    def __init__(self, line):
        self.line, self.args = line, []

    def __str__(self):
        return " ".join(f"({a})" if isinstance(a, PipeNode) else str(a) for a in self.args)


class FieldNode(Node):
    __slots__ = ("ident",)
    kind = "field"

    def __init__(self, line, ident):
        self.line, self.ident = line, ident

    def __str__(self):
        return "".join("." + i for i in self.ident)


class VariableNode(Node):
    """ident[0] is the variable ("$x"), the rest are fields: $x.A.B."""
    __slots__ = ("ident",)
    kind = "variable"

    def __init__(self, line, ident):
        self.line, self.ident = line, ident

    def __str__(self):
        return ".".join(self.ident)


class ChainNode(Node):
    """(pipeline).Field1.Field2 and the like: a term followed by fields."""
    __slots__ = ("node", "fields")
    kind = "chain"

    def __init__(self, line, node, fields):
        self.line, self.node, self.fields = line, node, fields

    def __str__(self):
        inner = f"({self.node})" if isinstance(self.node, PipeNode) else str(self.node)
        return inner + "".join("." + f for f in self.fields)


class IdentifierNode(Node):
    __slots__ = ("name",)
    kind = "identifier"

    def __init__(self, line, name):
        self.line, self.name = line, name

    def __str__(self):
        return self.name


class DotNode(Node):
    __slots__ = ()
    kind = "dot"

    def __init__(self, line):
        self.line = line

    def __str__(self):
        return "."


class NilNode(Node):
    __slots__ = ()
    kind = "nil"

    def __init__(self, line):
        self.line = line

    def __str__(self):
        return "nil"


class BoolNode(Node):
    __slots__ = ("value",)
    kind = "bool"

    def __init__(self, line, value):
        self.line, self.value = line, value

    def __str__(self):
        return "true" if self.value else "false"


class NumberNode(Node):
    """A number constant; like Go's, it may be valid as several types at once (1 is int, uint, float)."""
    __slots__ = ("text", "is_int", "is_uint", "is_float", "is_complex", "int", "float", "complex")
    kind = "number"

    def __init__(self, line, text):
        self.line, self.text = line, text
        self.is_int = self.is_uint = self.is_float = self.is_complex = False
        self.int = 0
        self.float = 0.0
        self.complex = 0j

    def __str__(self):
        return self.text


class StringNode(Node):
    __slots__ = ("quoted", "text")
    kind = "string"

    def __init__(self, line, quoted, text):
        self.line, self.quoted, self.text = line, quoted, text

    def __str__(self):
        return self.quoted


class BranchNode(Node):
    """if / range / with: pipeline, body, optional else body."""
    __slots__ = ("pipe", "list", "else_list")

    def __init__(self, line, pipe, body, else_list):
        self.line, self.pipe, self.list, self.else_list = line, pipe, body, else_list


class IfNode(BranchNode):
    __slots__ = ()
    kind = "if"


class RangeNode(BranchNode):
    __slots__ = ()
    kind = "range"


class WithNode(BranchNode):
    __slots__ = ()
    kind = "with"


class TemplateNode(Node):
    __slots__ = ("name", "pipe")
    kind = "template"

    def __init__(self, line, name, pipe):
        self.line, self.name, self.pipe = line, name, pipe


class BreakNode(Node):
    __slots__ = ()
    kind = "break"

    def __init__(self, line):
        self.line = line


class ContinueNode(Node):
    __slots__ = ()
    kind = "continue"

    def __init__(self, line):
        self.line = line


class EndNode(Node):
    __slots__ = ()
    kind = "end"

    def __init__(self, line):
        self.line = line


class ElseNode(Node):
    __slots__ = ("chained",)  # chained: "else if" / "else with"
    kind = "else"

    def __init__(self, line, chained=None):
        self.line, self.chained = line, chained
