"""A Go template compiled once to Python and executed many times.

    t = Template(text, name="hosts.ww", funcs={...}, filename="/path/hosts.ww")
    text = t.execute(data, ctx=None)

`funcs` adds to (and overrides) Go's builtins and sprig, as template.Funcs does. A function declared
with gofunc(..., ctx=True) receives the `ctx` given to execute() first: that is how per-render state
(Warewulf's file(), abort(), nobackup()) reaches functions of a template compiled only once.
"""
import itertools

from wwfast.builder.gotemplate import runtime as R
from wwfast.builder.gotemplate.builtins import BUILTINS
from wwfast.builder.gotemplate.codegen import CompileError, Compiler
from wwfast.builder.gotemplate.gotypes import INVALID, Int64
from wwfast.builder.gotemplate.parser import ParseError, parse
from wwfast.builder.gotemplate.sprig_data import FUNCS as _SPRIG_DATA
from wwfast.builder.gotemplate.sprig_dates import FUNCS as _SPRIG_DATES
from wwfast.builder.gotemplate.sprig_misc import FUNCS as _SPRIG_MISC
from wwfast.builder.gotemplate.sprig_strings import FUNCS as _SPRIG_STRINGS

SPRIG = {**_SPRIG_STRINGS, **_SPRIG_DATA, **_SPRIG_MISC, **_SPRIG_DATES}
MAX_DEPTH = 1000
_serial = itertools.count(1)


class TemplateError(Exception):
    """A template that does not parse or fails while executing: file, line, the action, the message."""

    def __init__(self, filename, line, message, action=""):
        self.filename, self.line, self.action, self.message = filename, line, action, message
        where = f"{filename}:{line}" if line else filename
        super().__init__(f"{where}: {'executing ' + action + ': ' if action else ''}{message}")


def _raise(message):
    raise R.ExecError(message)


def _conv_any(v):
    return None if v is INVALID else v


def _conv_str(v):
    return v if type(v) is str else R.convert(v, R.STRING)


_HELPERS = {
    "_F": R.field, "_FC": R.field_call, "_P": R.printable, "_T": R.truth, "_RI": R.range_items,
    "_R1": R.range_int_only, "_CA": _conv_any, "_CS": _conv_str, "_C": R.convert, "_I64": Int64,
    "_INVALID": INVALID, "_raise": _raise,
}


class _State:
    __slots__ = ("template", "out", "w", "ctx", "depth")

    def __init__(self, template, ctx):
        self.template = template
        self.out = []
        self.w = self.out.append
        self.ctx = ctx
        self.depth = 0

    def call_template(self, name, dot):
        fn = self.template.functions.get(name)
        if fn is None:
            raise R.ExecError(f'template "{name}" not defined')
        if self.depth >= MAX_DEPTH:
            raise R.ExecError(f"exceeded maximum template depth ({MAX_DEPTH})")
        self.depth += 1
        try:
            fn(self, dot)
        finally:
            self.depth -= 1


class Template:
    def __init__(self, text, name="template", funcs=None, filename=None):
        self.name = name
        self.filename = filename or name
        self.funcs = {**BUILTINS, **SPRIG, **(funcs or {})}
        try:
            trees = parse(text, name, self.funcs.__contains__)
        except ParseError as e:
            raise TemplateError(self.filename, e.line, e.message if hasattr(e, "message") else str(e)) from None
        compiler = Compiler(self.funcs)
        pynames = {}
        try:
            for i, (tname, root) in enumerate(trees.items()):
                pynames[tname] = f"_tmpl{i}"
                compiler.template(pynames[tname], root)
        except CompileError as e:
            raise TemplateError(self.filename, e.line, str(e)) from None
        self.source = "\n".join(compiler.out) + "\n"
        self._code_name = f"<gotemplate {next(_serial)}: {self.filename}>"
        namespace = dict(_HELPERS)
        namespace.update(compiler.consts)
        exec(compile(self.source, self._code_name, "exec"), namespace)
        self.functions = {tname: namespace[py] for tname, py in pynames.items()}
        self.where = compiler.where
        self.uses = trees  # the parse trees, for callers that inspect what a template reads

    def execute(self, data, ctx=None, name=None):
        """The text the template writes for `data` (a TemplateError names the line on failure)."""
        state = _State(self, ctx)
        self.run(state, data, name)
        return "".join(state.out)

    def run(self, state, data, name=None):
        fn = self.functions.get(name or self.name)
        if fn is None:
            raise TemplateError(self.filename, None, f'no template "{name or self.name}"')
        try:
            fn(state, data)
        except R.ExecError as e:
            raise self._error(e, str(e)) from None
        except R.FuncError as e:
            raise self._error(e, f"error calling function: {e}") from None
        except RecursionError as e:
            raise self._error(e, "exceeded maximum template depth") from None
        except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError, AttributeError) as e:
            raise self._error(e, f"error calling function: {e}") from None

    def new_state(self, ctx=None):
        return _State(self, ctx)

    def _error(self, exc, message):
        line, action = self.locate(exc)
        return TemplateError(self.filename, line, message, action)

    def locate(self, exc):
        """(template line, action text) where `exc` was raised in the generated code."""
        found = (None, "")
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == self._code_name:
                found = self.where.get(tb.tb_lineno, found)
            tb = tb.tb_next
        return found
