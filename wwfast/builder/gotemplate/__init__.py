"""Go's text/template language in Python, with sprig's functions: for Warewulf's `.ww` overlay
templates and iPXE templates.

Lexer (lexer.py) → parser (parser.py, nodes.py) → compiled to Python once (codegen.py, template.py) →
executed per render with Go's value rules (runtime.py, gotypes.py), fmt (gofmt.py, printf.py),
builtins (builtins.py) and sprig (sprig_*.py).
"""
from wwfast.builder.gotemplate.gotypes import INVALID, IP, GoStruct, Int64, StrList, Stringer  # noqa: F401
from wwfast.builder.gotemplate.runtime import (ANY, BOOL, INT, LIST, MAP, STRING, Abort, ExecError,  # noqa: F401
                                             FuncError, gofunc)
from wwfast.builder.gotemplate.template import SPRIG, Template, TemplateError  # noqa: F401
