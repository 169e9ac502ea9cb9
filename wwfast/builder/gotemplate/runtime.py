"""What compiled templates call at run time: field and method access, typed function calls, truth,
printing, range iteration, and the errors Go's executor raises, with Go's wording.
"""
import types

from wwfast.builder.gotemplate.gofmt import sort_key, sprint_value
from wwfast.builder.gotemplate.gotypes import FIELD, INVALID, METHOD, METHOD0, GoStruct, Int64, StrMap, Stringer, \
    type_name

# parameter types a function may declare (see gofunc)
ANY, VALUE, STRING, INT, INT64, FLOAT, BOOL, LIST, MAP, STRINGS = (
    "interface {}", "reflect.Value", "string", "int", "int64", "float64", "bool", "[]interface {}",
    "map[string]interface {}", "[]string")
NILABLE = {ANY, VALUE, LIST, MAP, STRINGS}


class ExecError(Exception):
    """A template failed while executing (Go: "executing ... at <...>: message")."""


class FuncError(Exception):
    """A template function returned an error: becomes "error calling NAME: message"."""


class Abort(BaseException):
    """Warewulf's abort(): stop here, write no file (a BaseException: nothing on the way catches it)."""


def gofunc(*params, variadic=None, ctx=False, name=None):
    """Declare a Python function's Go signature: parameter types, the variadic element type, and
    whether it takes the execution context first (for Warewulf's file(), abort() and the like)."""
    def wrap(fn):
        if not isinstance(fn, types.FunctionType):  # a builtin (str.upper): wrap to carry attributes
            inner = fn
            fn = lambda *args: inner(*args)  # noqa: E731
        fn.go_params = params
        fn.go_variadic = variadic
        fn.go_ctx = ctx
        return fn
    return wrap


def signature(fn):
    return getattr(fn, "go_params", None), getattr(fn, "go_variadic", None), getattr(fn, "go_ctx", False)


# ---------------------------------------------------------------------------------- conversions

def convert(value, typ):
    """Go's validateType: a computed value passed to a parameter of type `typ`."""
    if typ == ANY:
        return None if value is INVALID else value
    if typ == VALUE:
        return value
    if value is INVALID or value is None:
        if typ in NILABLE:
            return {} if typ == MAP else ([] if typ in (LIST, STRINGS) else None)
        raise ExecError(f"invalid value; expected {typ}")
    t = type(value)
    if typ == STRING:
        if t is str:
            return value
    elif typ == INT:
        if t is int:
            return value
    elif typ == INT64:
        if t is Int64:
            return value
    elif typ == FLOAT:
        if t is float:
            return value
    elif typ == BOOL:
        if t is bool:
            return value
    elif typ == LIST or typ == STRINGS:
        if isinstance(value, (list, tuple)):
            return value
    elif typ == MAP:
        if isinstance(value, dict):
            return value
    else:
        return value
    raise ExecError(f"wrong type for value; expected {typ}; got {type_name(value)}")


def bad_literal(typ, text):
    """A literal of the wrong kind for a typed parameter: Go's message, raised when executed."""
    expected = {STRING: "string", INT: "integer", INT64: "integer", FLOAT: "float", BOOL: "bool"}.get(typ, typ)
    if typ in (INT, INT64) and text.lstrip("-").replace(".", "", 1).isdigit() and "." in text:
        expected = "integer"
    raise ExecError(f"expected {expected}; found {text}")


def nil_to(typ):
    if typ in NILABLE:
        return {} if typ == MAP else ([] if typ in (LIST, STRINGS) else None)
    raise ExecError(f"cannot assign nil to {typ}")


def ret(value):
    """A function's result as the pipeline sees it: a nil interface becomes the invalid value."""
    return INVALID if value is None else value


def call(fn, name, args):
    try:
        return ret(fn(*args))
    except (ExecError, Abort):
        raise
    except FuncError as e:
        raise ExecError(f"error calling {name}: {e}") from None
    except RecursionError:
        raise ExecError(f"error calling {name}: too deep") from None
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, OverflowError, AttributeError) as e:
        raise ExecError(f"error calling {name}: {_py_error(e)}") from None


def _py_error(e):
    if isinstance(e, ZeroDivisionError):
        return "runtime error: integer divide by zero"
    return str(e)


def arity_error(name, want, got, variadic):
    if variadic:
        raise ExecError(f"wrong number of args for {name}: want at least {want} got {got}")
    raise ExecError(f"wrong number of args for {name}: want {want} got {got}")


# ---------------------------------------------------------------------------------- fields & methods

def field(recv, name):
    """recv.Name with no arguments (maps: the key; structs: method first, then field)."""
    t = type(recv)
    if t is dict or t is StrMap:
        return recv.get(name, INVALID)
    kinds = getattr(t, "_go_kinds", None)
    if kinds is not None:
        kind_ = kinds.get(name)
        if kind_ == FIELD:
            return getattr(recv, name)
        if kind_ == METHOD0:
            return getattr(recv, name)()
        if kind_ == METHOD:
            return method_call(recv, name, ())
        raise ExecError(f"can't evaluate field {name} in type {type_name(recv)}")
    return _field_slow(recv, name, False)


def field_call(recv, name, args, has_final):
    """recv.Name arg... (the last field of a command that has arguments)."""
    if isinstance(recv, GoStruct) and name in type(recv)._go_methods:
        return method_call(recv, name, args)
    if isinstance(recv, dict):
        raise ExecError(f"{name} is not a method but has arguments")
    if isinstance(recv, GoStruct) and name in type(recv)._go_fields:
        raise ExecError(f"{name} has arguments but cannot be invoked as function")
    return _field_slow(recv, name, True)


def _field_slow(recv, name, has_args):
    if recv is INVALID:
        return INVALID
    if recv is None:
        raise ExecError(f"nil pointer evaluating interface {{}}.{name}")
    if isinstance(recv, dict):
        if has_args:
            raise ExecError(f"{name} is not a method but has arguments")
        return recv.get(name, INVALID)
    if isinstance(recv, Stringer) or isinstance(recv, str):
        meth = getattr(recv, "_go_methods", ())
        if name in meth:
            return getattr(recv, name)()
    raise ExecError(f"can't evaluate field {name} in type {type_name(recv)}")


def method_call(recv, name, args):
    fn = getattr(recv, name)
    params, variadic, _ = signature(fn)
    params = params or ()
    if variadic is None and len(args) != len(params):
        arity_error(name, len(params), len(args), False)
    conv = [convert(a, params[i] if i < len(params) else variadic) for i, a in enumerate(args)]
    return call(fn, name, conv)


# ---------------------------------------------------------------------------------- truth, print, range

def truth(v):
    """Go's isTrue: the zero value of any type is false; structs are always true."""
    t = type(v)
    if t is str or t is bool or t is int or t is list or t is dict:
        return bool(v)
    if v is INVALID or v is None:
        return False
    if isinstance(v, GoStruct):
        return True
    return bool(v)


def not_(v):
    return not truth(v)


def printable(v):
    """What an action writes for its value (fmt.Fprint; "<no value>" for the invalid value)."""
    if type(v) is str:
        return v
    if v is INVALID or v is None:
        return "<no value>"
    if callable(v) and not isinstance(v, (GoStruct, Stringer)):
        raise ExecError(f"can't print value of type {type_name(v)}")
    return sprint_value(v)


def range_items(v):
    """(index or key, element) pairs of what range iterates: slices, maps (sorted keys), ints."""
    t = type(v)
    if t is list or t is tuple or isinstance(v, (list, tuple)):
        return enumerate(v)
    if isinstance(v, dict):
        return sorted(v.items(), key=lambda kv: sort_key(kv[0])) if len(v) > 1 else list(v.items())
    if v is INVALID or v is None:
        return ()
    if t is int or t is Int64:
        return ((i, i) for i in range(v))
    raise ExecError(f"range can't iterate over {sprint_value(v)}")


def range_int_only(v, ndecl):
    if ndecl > 1 and (type(v) is int or type(v) is Int64):
        raise ExecError(f"can't use {v} to iterate over more than one variable")
