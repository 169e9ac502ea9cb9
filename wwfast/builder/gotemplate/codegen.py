"""Compile parse trees to Python: one function per template name, run with a fresh state per execution.

Each action becomes straight-line Python (field lookups, typed function calls, if/for), so executing
a template costs no tree walking. Every generated line is mapped back to the template line and the
action it came from, so errors name them. Variables become Python locals, resolved at compile time
with Go's scoping (an action's variables live until the end of the enclosing if/with/range).
"""
from wwfast.builder.gotemplate import nodes as N
from wwfast.builder.gotemplate import runtime as R


class CompileError(Exception):
    def __init__(self, message, line):
        super().__init__(message)
        self.line = line


_LITERALS = (N.StringNode, N.NumberNode, N.BoolNode, N.NilNode)


class Compiler:
    def __init__(self, funcs):
        self.funcs = funcs
        self.out = []          # generated lines
        self.where = {}        # generated line number (1-based) -> (template line, action text)
        self.consts = {}       # name -> object the generated code refers to
        self.fn_names = {}     # id(fn) -> constant name
        self.n = 0
        self.cur = (0, "")

    # ---- helpers
    def fresh(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, value):
        name = self.fresh("_k")
        self.consts[name] = value
        return name

    def fn_const(self, name, fn):
        key = id(fn)
        if key not in self.fn_names:
            self.fn_names[key] = f"_f_{''.join(c if c.isalnum() else '_' for c in name)}_{len(self.fn_names)}"
            self.consts[self.fn_names[key]] = fn
        return self.fn_names[key]

    def emit(self, indent, text):
        self.out.append("    " * indent + text)
        self.where[len(self.out)] = self.cur

    def fail(self, message):
        return f"_raise({message!r})"

    # ---- templates
    def template(self, pyname, root):
        self.emit(0, f"def {pyname}(S, dot):")
        self.emit(1, "w = S.w")
        scope = [{"$": "dot"}]
        self.block(root, 1, "dot", scope, in_range=False)
        self.emit(1, "return None")

    def block(self, lst, ind, dot, scope, in_range):
        texts = []
        for node in lst.nodes:
            if isinstance(node, N.TextNode):
                texts.append(node.text)
                continue
            if texts:
                self.cur = (node.line, "text")
                self.emit(ind, f"w({''.join(texts)!r})")
                texts = []
            self.statement(node, ind, dot, scope, in_range)
        if texts:
            self.emit(ind, f"w({''.join(texts)!r})")
        self.emit(ind, "pass")

    def statement(self, node, ind, dot, scope, in_range):
        self.cur = (node.line, _action_text(node))
        if isinstance(node, N.CommentNode):
            return
        if isinstance(node, N.ActionNode):
            pipe = node.pipe
            value = self.pipeline(pipe, dot, scope)
            if pipe.decl:
                self.emit(ind, f"{self.declare(pipe, scope)} = {value}")
            else:
                self.emit(ind, f"w(_P({value}))")
        elif isinstance(node, N.IfNode):
            scope.append({})
            value = self.pipeline(node.pipe, dot, scope)
            if node.pipe.decl:
                tmp = self.declare(node.pipe, scope)
                self.emit(ind, f"{tmp} = {value}")
                value = tmp
            self.emit(ind, f"if _T({value}):")
            self.block(node.list, ind + 1, dot, scope, in_range)
            if node.else_list is not None:
                self.emit(ind, "else:")
                self.block(node.else_list, ind + 1, dot, scope, in_range)
            scope.pop()
        elif isinstance(node, N.WithNode):
            scope.append({})
            value = self.pipeline(node.pipe, dot, scope)
            new_dot = self.fresh("d")
            self.emit(ind, f"{new_dot} = {value}")
            if node.pipe.decl:
                self.emit(ind, f"{self.declare(node.pipe, scope)} = {new_dot}")
            self.emit(ind, f"if _T({new_dot}):")
            self.block(node.list, ind + 1, new_dot, scope, in_range)
            if node.else_list is not None:
                self.emit(ind, "else:")
                self.block(node.else_list, ind + 1, dot, scope, in_range)
            scope.pop()
        elif isinstance(node, N.RangeNode):
            self.range_(node, ind, dot, scope)
        elif isinstance(node, N.TemplateNode):
            value = self.pipeline(node.pipe, dot, scope) if node.pipe is not None else "_INVALID"
            self.emit(ind, f"S.call_template({node.name!r}, {value})")
        elif isinstance(node, N.BreakNode):
            self.emit(ind, "break")
        elif isinstance(node, N.ContinueNode):
            self.emit(ind, "continue")
        else:
            raise CompileError(f"unexpected {type(node).__name__}", node.line)

    def range_(self, node, ind, dot, scope):
        scope.append({})
        value = self.pipeline(node.pipe, dot, scope)
        coll = self.fresh("r")
        self.emit(ind, f"{coll} = {value}")
        decl = node.pipe.decl
        if len(decl) > 1:
            self.emit(ind, f"_R1({coll}, {len(decl)})")
        names = []
        for var in decl:
            py = self.fresh("v")
            scope[-1][var] = py
            names.append(py)
        key, elem = self.fresh("k"), self.fresh("d")
        flag = self.fresh("n") if node.else_list is not None else None
        if flag:
            self.emit(ind, f"{flag} = False")
        self.emit(ind, f"for {key}, {elem} in _RI({coll}):")
        if flag:
            self.emit(ind + 1, f"{flag} = True")
        if len(names) == 1:
            self.emit(ind + 1, f"{names[0]} = {elem}")
        elif len(names) == 2:
            self.emit(ind + 1, f"{names[0]} = {key}")
            self.emit(ind + 1, f"{names[1]} = {elem}")
        self.block(node.list, ind + 1, elem, scope, True)
        if flag:
            self.emit(ind, f"if not {flag}:")
            self.block(node.else_list, ind + 1, dot, scope, False)
        scope.pop()

    def declare(self, pipe, scope):
        var = pipe.decl[0]
        if pipe.is_assign:
            return self.lookup(var, scope)
        py = self.fresh("v")
        scope[-1][var] = py
        return py

    def lookup(self, var, scope):
        for frame in reversed(scope):
            if var in frame:
                return frame[var]
        raise CompileError(f'undefined variable "{var}"', self.cur[0])

    # ---- expressions
    def pipeline(self, pipe, dot, scope):
        value = None
        for cmd in pipe.cmds:
            value = self.command(cmd, dot, scope, value)
        return value

    def command(self, cmd, dot, scope, final):
        first = cmd.args[0]
        args = cmd.args[1:]
        if isinstance(first, N.FieldNode):
            return self.chain(dot, first.ident, args, final, dot, scope)
        if isinstance(first, N.ChainNode):
            if isinstance(first.node, N.NilNode):
                return self.fail(f"indirection through explicit nil in {first}")
            return self.chain(self.arg_value(first.node, dot, scope), first.fields, args, final, dot, scope)
        if isinstance(first, N.IdentifierNode):
            return self.call(first.name, args, final, dot, scope)
        if isinstance(first, N.VariableNode):
            base = self.lookup(first.ident[0], scope)
            if len(first.ident) == 1:
                if args or final is not None:
                    return self.fail(f"can't give argument to non-function {first}")
                return base
            return self.chain(base, first.ident[1:], args, final, dot, scope)
        if args or final is not None:
            return self.fail(f"can't give argument to non-function {first}")
        if isinstance(first, N.PipeNode):
            return self.pipeline(first, dot, scope)
        if isinstance(first, N.NilNode):
            return self.fail("nil is not a command")
        if isinstance(first, N.DotNode):
            return dot
        return self.ideal(first)

    def chain(self, recv, idents, args, final, dot, scope):
        for name in idents[:-1]:
            recv = f"_F({recv}, {name!r})"
        last = idents[-1]
        if not args and final is None:
            return f"_F({recv}, {last!r})"
        values = [self.arg_value(a, dot, scope) for a in args]
        if final is not None:
            values.append(final)
        return f"_FC({recv}, {last!r}, ({', '.join(values)}{',' if len(values) == 1 else ''}), {final is not None})"

    def arg_value(self, node, dot, scope):
        """An argument evaluated without a type to fit (methods, chain receivers, and/or)."""
        if isinstance(node, N.DotNode):
            return dot
        if isinstance(node, N.FieldNode):
            return self.chain(dot, node.ident, [], None, dot, scope)
        if isinstance(node, N.VariableNode):
            base = self.lookup(node.ident[0], scope)
            return base if len(node.ident) == 1 else self.chain(base, node.ident[1:], [], None, dot, scope)
        if isinstance(node, N.ChainNode):
            return self.chain(self.arg_value(node.node, dot, scope), node.fields, [], None, dot, scope)
        if isinstance(node, N.PipeNode):
            return self.pipeline(node, dot, scope)
        if isinstance(node, N.IdentifierNode):
            return self.call(node.name, [], None, dot, scope)
        if isinstance(node, N.NilNode):
            return "None"
        return self.ideal(node)

    def ideal(self, node):
        """A literal where no type is expected (Go's idealConstant)."""
        if isinstance(node, N.StringNode):
            return repr(node.text)
        if isinstance(node, N.BoolNode):
            return "True" if node.value else "False"
        if isinstance(node, N.NumberNode):
            text = node.text
            if node.is_complex:
                return repr(node.complex)
            hexint = text.lower().startswith(("0x", "-0x", "+0x")) and "p" not in text.lower()
            if node.is_float and not hexint and not text.startswith("'") and any(c in text for c in ".eEpP"):
                return repr(node.float)
            if node.is_int:
                return repr(node.int)
            return self.fail(f"{text} overflows int")
        if isinstance(node, N.DotNode):
            raise CompileError("dot as a literal", node.line)
        return self.fail(f"can't evaluate command {node}")

    def typed_arg(self, node, typ, dot, scope):
        """An argument for a parameter of Go type `typ` (Go's evalArg)."""
        if isinstance(node, N.NilNode):
            if typ in R.NILABLE:
                return self.const(R.nil_to(typ))
            return self.fail(f"cannot assign nil to {typ}")
        if isinstance(node, _LITERALS):
            if typ in (R.ANY, R.VALUE):
                return self.ideal(node)
            ok = ((typ == R.STRING and isinstance(node, N.StringNode))
                  or (typ == R.BOOL and isinstance(node, N.BoolNode))
                  or (typ in (R.INT, R.INT64) and isinstance(node, N.NumberNode) and node.is_int)
                  or (typ == R.FLOAT and isinstance(node, N.NumberNode) and node.is_float))
            if not ok:
                expected = {R.STRING: "string", R.BOOL: "bool", R.INT: "integer", R.INT64: "integer",
                            R.FLOAT: "float"}.get(typ)
                if expected is None:
                    return self.fail(f"can't handle {node} for arg of type {typ}")
                return self.fail(f"expected {expected}; found {node}")
            if isinstance(node, N.NumberNode):
                value = node.int if typ in (R.INT, R.INT64) else node.float
                if typ == R.INT64:
                    return f"_I64({value!r})"
                return repr(value)
            return self.ideal(node)
        value = self.arg_value(node, dot, scope)
        return self.convert(value, typ)

    def convert(self, value, typ):
        if typ == R.VALUE:
            return value
        if typ == R.ANY:
            return f"_CA({value})"
        if typ == R.STRING:
            return f"_CS({value})"
        return f"_C({value}, {self.const(typ)})"

    def call(self, name, args, final, dot, scope):
        fn = self.funcs.get(name)
        if fn is None:
            return self.fail(f'"{name}" is not a defined function')
        if name in ("and", "or"):
            return self.and_or(name, args, final, dot, scope)
        params, variadic, wants_ctx = R.signature(fn)
        params = params or ()
        count = len(args) + (final is not None)
        if variadic is None and count != len(params):
            return self.fail(f"wrong number of args for {name}: want {len(params)} got {count}")
        if variadic is not None and count < len(params):
            return self.fail(f"wrong number of args for {name}: want at least {len(params)} got {len(args)}")
        values = []
        for i, a in enumerate(args):
            values.append(self.typed_arg(a, params[i] if i < len(params) else variadic, dot, scope))
        if final is not None:
            i = len(args)
            values.append(self.convert(final, params[i] if i < len(params) else variadic))
        if wants_ctx:
            values.insert(0, "S.ctx")
        return f"{self.fn_const(name, fn)}({', '.join(values)})"

    def and_or(self, name, args, final, dot, scope):
        values = [self.arg_value(a, dot, scope) for a in args]
        if final is not None:
            values.append(final)
        if not values:
            return self.fail(f"wrong number of args for {name}: want at least 1 got 0")
        expr = values[-1]
        for v in reversed(values[:-1]):
            tmp = self.fresh("_t")
            test = f"not _T({tmp} := {v})" if name == "and" else f"_T({tmp} := {v})"
            expr = f"({tmp} if {test} else {expr})"
        return expr


def _action_text(node):
    if isinstance(node, N.ActionNode):
        return str(node)
    if isinstance(node, N.BranchNode):
        return "{{" + node.kind + " " + str(node.pipe) + "}}"
    if isinstance(node, N.TemplateNode):
        return "{{template " + repr(node.name) + "}}"
    return ""
