"""Parser for Go's text/template: tokens → one parse tree per template name ({{define}} / {{block}}).

Checks what Go's parser checks: undefined variables and functions, break/continue outside range,
non-executable pipeline stages, "unexpected" tokens; every error carries the line.
"""
from wwfast.builder.gotemplate import lexer as L
from wwfast.builder.gotemplate import nodes as N
from wwfast.builder.gotemplate.literals import ParseError, number_node, unquote  # noqa: F401 (re-exported)


def parse(src, name, has_function):
    """{template name: ListNode}; the template `name` holds the text outside {{define}}s."""
    try:
        tokens = L.tokenize(src)
    except L.LexError as e:
        raise ParseError(str(e), e.line) from None
    trees = {}
    _Parser(tokens, has_function, trees).parse_top(name)
    return trees


def _is_empty(lst):
    for n in lst.nodes:
        if isinstance(n, N.TextNode):
            if n.text.strip(" \t\r\n"):
                return False
        elif not isinstance(n, N.CommentNode):
            return False
    return True


class _Parser:
    def __init__(self, tokens, has_function, trees):
        self.toks = tokens
        self.i = 0
        self.has_function = has_function
        self.trees = trees
        self.vars = ["$"]
        self.range_depth = 0

    # ---- token helpers
    def next(self):
        t = self.toks[self.i]
        self.i += 1
        return t

    def backup(self, n=1):
        self.i -= n

    def peek(self):
        return self.toks[self.i]

    def next_non_space(self):
        t = self.next()
        while t.kind == L.SPACE_T:
            t = self.next()
        return t

    def peek_non_space(self):
        t = self.next_non_space()
        self.backup()
        return t

    def error(self, message, line=None):
        raise ParseError(message, line if line is not None else self.toks[max(self.i - 1, 0)].line)

    def unexpected(self, token, context):
        if token.kind == L.EOF:
            self.error(f"unexpected EOF in {context}", token.line)
        self.error(f"unexpected {token.describe()} in {context}", token.line)

    def expect(self, kind, context):
        t = self.next_non_space()
        if t.kind != kind:
            self.unexpected(t, context)
        return t

    def _add(self, name, root):
        old = self.trees.get(name)
        if old is None or _is_empty(old):
            self.trees[name] = root
        elif not _is_empty(root):
            self.error(f"template: multiple definition of template {quote_name(name)}", root.line)

    # ---- structure
    def parse_top(self, name):
        root = N.ListNode(1)
        while self.peek().kind != L.EOF:
            if self.peek().kind == L.LEFT:
                save = self.i
                self.next()
                t = self.next_non_space()
                if t.kind == L.KEYWORD and t.val == "define":
                    self.parse_definition()
                    continue
                self.i = save
            n = self.text_or_action()
            if isinstance(n, (N.EndNode, N.ElseNode)):
                self.error(f"unexpected {'{{end}}' if isinstance(n, N.EndNode) else '{{else}}'}", n.line)
            root.nodes.append(n)
        self._add(name, root)

    def parse_definition(self):
        t = self.next_non_space()
        if t.kind not in (L.STRING, L.RAW):
            self.unexpected(t, "define clause")
        name = unquote(t.val, t.line)
        self.expect(L.RIGHT, "define clause")
        saved_vars, self.vars = self.vars, ["$"]
        body, end = self.item_list()
        self.vars = saved_vars
        if not isinstance(end, N.EndNode):
            self.error("unexpected {{else}} in define clause", end.line)
        self._add(name, body)

    def item_list(self):
        lst = N.ListNode(self.peek_non_space().line)
        while self.peek_non_space().kind != L.EOF:
            n = self.text_or_action()
            if isinstance(n, (N.EndNode, N.ElseNode)):
                return lst, n
            lst.nodes.append(n)
        self.error("unexpected EOF")

    def text_or_action(self):
        t = self.next_non_space()
        if t.kind == L.TEXT:
            return N.TextNode(t.line, t.val)
        if t.kind == L.LEFT:
            return self.action()
        if t.kind == L.COMMENT:
            return N.CommentNode(t.line, t.val)
        self.unexpected(t, "input")

    def action(self):
        t = self.next_non_space()
        if t.kind == L.KEYWORD:
            kw = t.val
            if kw == "block":
                return self.block_control(t)
            if kw in ("break", "continue"):
                nt = self.next_non_space()
                if nt.kind != L.RIGHT:
                    self.unexpected(nt, "{{" + kw + "}}")
                if self.range_depth == 0:
                    self.error("{{" + kw + "}} outside {{range}}", t.line)
                return N.BreakNode(t.line) if kw == "break" else N.ContinueNode(t.line)
            if kw == "else":
                p = self.peek_non_space()
                if p.kind == L.KEYWORD and p.val in ("if", "with"):
                    return N.ElseNode(p.line, p.val)
                self.expect(L.RIGHT, "else")
                return N.ElseNode(t.line)
            if kw == "end":
                self.expect(L.RIGHT, "end")
                return N.EndNode(t.line)
            if kw in ("if", "range", "with"):
                return self.control(kw, t.line)
            if kw == "template":
                return self.template_control(t)
        self.backup()
        line = self.peek().line
        return N.ActionNode(line, self.pipeline("command", L.RIGHT))

    def control(self, kw, line):
        mark = len(self.vars)
        pipe = self.pipeline(kw, L.RIGHT)
        if kw == "range":
            self.range_depth += 1
        body, nxt = self.item_list()
        if kw == "range":
            self.range_depth -= 1
        else_list = None
        if isinstance(nxt, N.ElseNode):
            if nxt.chained and nxt.chained == kw and kw in ("if", "with"):
                self.next_non_space()  # the if / with keyword
                else_list = N.ListNode(nxt.line)
                else_list.nodes.append(self.control(kw, nxt.line))
            else:
                if nxt.chained:
                    self.error(f"unexpected <{nxt.chained}> in else", nxt.line)
                else_list, end = self.item_list()
                if not isinstance(end, N.EndNode):
                    self.error("expected end; found {{else}}", end.line)
        del self.vars[mark:]
        cls = {"if": N.IfNode, "range": N.RangeNode, "with": N.WithNode}[kw]
        return cls(line, pipe, body, else_list)

    def block_control(self, t):
        name_tok = self.next_non_space()
        if name_tok.kind not in (L.STRING, L.RAW):
            self.unexpected(name_tok, "block clause")
        name = unquote(name_tok.val, name_tok.line)
        pipe = self.pipeline("block clause", L.RIGHT)
        saved_vars, saved_depth = self.vars, self.range_depth
        self.vars, self.range_depth = ["$"], 0
        body, end = self.item_list()
        self.vars, self.range_depth = saved_vars, saved_depth
        if not isinstance(end, N.EndNode):
            self.error("unexpected {{else}} in block clause", end.line)
        self._add(name, body)
        return N.TemplateNode(t.line, name, pipe)

    def template_control(self, t):
        name_tok = self.next_non_space()
        if name_tok.kind not in (L.STRING, L.RAW):
            self.unexpected(name_tok, "template clause")
        name = unquote(name_tok.val, name_tok.line)
        pipe = None
        if self.next_non_space().kind != L.RIGHT:
            self.backup()
            pipe = self.pipeline("template clause", L.RIGHT)
        return N.TemplateNode(t.line, name, pipe)

    # ---- pipelines
    def pipeline(self, context, end):
        pipe = N.PipeNode(self.peek_non_space().line)
        self._declarations(pipe, context)
        while True:
            t = self.next_non_space()
            if t.kind == end:
                if not pipe.cmds:
                    self.error(f"missing value for {context}", t.line)
                for k, c in enumerate(pipe.cmds[1:]):
                    if isinstance(c.args[0], (N.BoolNode, N.DotNode, N.NilNode, N.NumberNode, N.StringNode)):
                        self.error(f"non executable command in pipeline stage {k + 2}", t.line)
                return pipe
            if t.kind in (L.BOOL, L.CHAR, L.COMPLEX, L.DOT, L.FIELD, L.IDENT, L.NUMBER, L.RAW, L.STRING,
                          L.VAR, L.LPAREN) or (t.kind == L.KEYWORD and t.val == "nil"):
                self.backup()
                pipe.cmds.append(self.command())
            else:
                self.unexpected(t, context)

    def _declarations(self, pipe, context):
        while True:
            v = self.peek_non_space()
            if v.kind != L.VAR:
                return
            start = self.i
            self.next_non_space()
            nxt = self.peek_non_space()
            if nxt.kind in (L.ASSIGN, L.DECLARE):
                pipe.is_assign = nxt.kind == L.ASSIGN
                self.next_non_space()
                pipe.decl.append(v.val)
                if pipe.is_assign:
                    self._use_var(v.val, v.line)
                else:
                    self.vars.append(v.val)
                return
            if nxt.kind == L.CHARTOK and nxt.val == ",":
                self.next_non_space()
                pipe.decl.append(v.val)
                self.vars.append(v.val)
                if context == "range" and len(pipe.decl) < 2:
                    p = self.peek_non_space()
                    if p.kind in (L.VAR, L.RIGHT, L.RPAREN):
                        continue
                    self.error("range can only initialize variables", p.line)
                self.error(f"too many declarations in {context}", v.line)
            self.i = start
            return

    def command(self):
        cmd = N.CommandNode(self.peek_non_space().line)
        while True:
            self.peek_non_space()
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            t = self.next()
            if t.kind == L.SPACE_T:
                continue
            if t.kind in (L.RIGHT, L.RPAREN):
                self.backup()
            elif t.kind != L.PIPE:
                self.unexpected(t, "operand")
            break
        if not cmd.args:
            self.error("empty command")
        return cmd

    def operand(self):
        node = self.term()
        if node is None:
            return None
        if self.peek().kind == L.FIELD:
            fields = []
            while self.peek().kind == L.FIELD:
                fields.extend(self.next().val[1:].split("."))
            if isinstance(node, N.FieldNode):
                return N.FieldNode(node.line, node.ident + fields)
            if isinstance(node, N.VariableNode):
                return N.VariableNode(node.line, node.ident + fields)
            if isinstance(node, (N.BoolNode, N.StringNode, N.NumberNode, N.NilNode, N.DotNode)):
                self.error(f"unexpected . after term {str(node)!r}".replace("'", '"'))
            return N.ChainNode(node.line, node, fields)
        return node

    def term(self):
        t = self.next_non_space()
        k = t.kind
        if k == L.IDENT:
            if not self.has_function(t.val):
                self.error(f'function "{t.val}" not defined', t.line)
            return N.IdentifierNode(t.line, t.val)
        if k == L.DOT:
            return N.DotNode(t.line)
        if k == L.KEYWORD and t.val == "nil":
            return N.NilNode(t.line)
        if k == L.VAR:
            parts = t.val.split(".")
            self._use_var(parts[0], t.line)
            return N.VariableNode(t.line, parts)
        if k == L.FIELD:
            return N.FieldNode(t.line, t.val[1:].split("."))
        if k == L.BOOL:
            return N.BoolNode(t.line, t.val == "true")
        if k in (L.CHAR, L.COMPLEX, L.NUMBER):
            return number_node(t, self)
        if k == L.LPAREN:
            return self.pipeline("parenthesized pipeline", L.RPAREN)
        if k in (L.STRING, L.RAW):
            return N.StringNode(t.line, t.val, unquote(t.val, t.line))
        self.backup()
        return None

    def _use_var(self, name, line):
        if name not in self.vars:
            self.error(f'undefined variable "{name}"', line)


def quote_name(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
