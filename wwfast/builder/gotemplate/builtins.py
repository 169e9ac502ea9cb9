"""Go's predefined template functions: not len index slice print printf println eq ne lt le gt ge
html js urlquery call (and and or, which the compiler short-circuits)."""
from wwfast.builder.gotemplate.gofmt import sprint, sprintln
from wwfast.builder.gotemplate.gotypes import INVALID, GoStruct, Int64, StrMap, Stringer, is_int, kind, type_name
from wwfast.builder.gotemplate.printf import sprintf
from wwfast.builder.gotemplate.runtime import ANY, STRING, VALUE, FuncError, gofunc, truth


@gofunc(VALUE, variadic=VALUE)
def and_(*args):  # compiled inline; kept for `call` and completeness
    v = INVALID
    for v in args:
        if not truth(v):
            return v
    return v


@gofunc(VALUE, variadic=VALUE)
def or_(*args):
    v = INVALID
    for v in args:
        if truth(v):
            return v
    return v


@gofunc(VALUE)
def not_(v):
    return not truth(v)


@gofunc(VALUE)
def length(v):
    if v is INVALID or v is None:
        raise FuncError("len of nil pointer")
    if isinstance(v, (str, list, tuple, dict, bytes)):
        return len(v.encode("utf-8", "surrogateescape")) if isinstance(v, str) else len(v)
    if isinstance(v, Stringer) and kind(v) == "slice":
        return len(v)
    raise FuncError(f"len of type {type_name(v)}")


def _index_arg(i, cap):
    if i is INVALID or i is None:
        raise FuncError("cannot index slice/array with nil")
    if not is_int(i):
        raise FuncError(f"cannot index slice/array with type {type_name(i)}")
    if i < 0 or i > cap:
        raise FuncError(f"index out of range: {i}")
    return int(i)


@gofunc(VALUE, variadic=VALUE)
def index(item, *indexes):
    if item is INVALID or item is None:
        raise FuncError("index of untyped nil")
    for i in indexes:
        if isinstance(item, str):
            data = item.encode("utf-8", "surrogateescape")
            x = _index_arg(i, len(data))
            if x == len(data):
                raise FuncError(f"index out of range: {x}")
            item = data[x]  # a byte (uint8) in Go
        elif isinstance(item, (list, tuple)):
            x = _index_arg(i, len(item))
            if x == len(item):
                raise FuncError(f"index out of range: {x}")
            item = item[x]
        elif isinstance(item, dict):
            if i is INVALID or i is None:
                raise FuncError("value is nil; should be of type string")
            if item and not isinstance(i, type(next(iter(item)))):
                raise FuncError(f"value has type {type_name(i)}; should be string")
            item = item.get(i, _zero_of(item))
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def _zero_of(mapping):
    """The zero value of a map's element type (index of a missing key returns it)."""
    return "" if isinstance(mapping, StrMap) else None


@gofunc(VALUE, variadic=VALUE)
def slice_(item, *indexes):
    if item is INVALID or item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) > 3:
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    if isinstance(item, str):
        if len(indexes) == 3:
            raise FuncError("cannot 3-index slice a string")
        data = item.encode("utf-8", "surrogateescape")
    elif isinstance(item, (list, tuple)):
        data = item
    else:
        raise FuncError(f"can't slice item of type {type_name(item)}")
    idx = [0, len(data), len(data)]
    for k, i in enumerate(indexes):
        idx[k] = _index_arg(i, len(data))
    if idx[0] > idx[1]:
        raise FuncError(f"invalid slice index: {idx[0]} > {idx[1]}")
    if len(indexes) == 3 and idx[1] > idx[2]:
        raise FuncError(f"invalid slice index: {idx[1]} > {idx[2]}")
    part = data[idx[0]:idx[1]]
    return part.decode("utf-8", "surrogateescape") if isinstance(item, str) else type(item)(part) \
        if isinstance(item, list) else list(part)


@gofunc(variadic=ANY)
def print_(*args):
    return sprint(args)


@gofunc(STRING, variadic=ANY)
def printf(fmt, *args):
    return sprintf(fmt, args)


@gofunc(variadic=ANY)
def println(*args):
    return sprintln(args)


# ---------------------------------------------------------------------------------- comparison

def _basic(v):
    """Go's basicKind: bool, int, uint, float, complex, string, or None (not comparable as basic)."""
    t = type(v)
    if t is bool:
        return "bool"
    if t is int or t is Int64:
        return "int"
    if t is float:
        return "float"
    if isinstance(v, str) and not isinstance(v, Stringer):
        return "string"
    if isinstance(v, complex):
        return "complex"
    return None


def _is_nil(v):
    return v is INVALID or v is None


@gofunc(VALUE, variadic=VALUE)
def eq(a, *others):
    if not others:
        raise FuncError("missing argument for comparison")
    ka = _basic(a)
    for b in others:
        kb = _basic(b)
        if ka != kb:
            if not _is_nil(a) and not _is_nil(b):
                raise FuncError("incompatible types for comparison")
            continue
        if ka is not None:
            if (str.__str__(a) if ka == "string" else a) == (str.__str__(b) if kb == "string" else b):
                return True
            continue
        if _is_nil(a) or _is_nil(b):
            if _is_nil(a) and _is_nil(b):
                return True
            continue
        if isinstance(a, (list, dict)) or isinstance(b, (list, dict)) or isinstance(a, Stringer):
            raise FuncError(f"non-comparable type {sprint_value_safe(b)}: {type_name(b)}")
        if a is b or a == b:
            return True
    return False


def sprint_value_safe(v):
    from wwfast.builder.gotemplate.gofmt import sprint_value
    return sprint_value(v)


@gofunc(VALUE, VALUE)
def ne(a, b):
    return not eq(a, b)


def _order(a, b):
    ka, kb = _basic(a), _basic(b)
    if ka is None or kb is None:
        raise FuncError("invalid type for comparison")
    if ka != kb:
        raise FuncError("incompatible types for comparison")
    if ka in ("bool", "complex"):
        raise FuncError("invalid type for comparison")
    if ka == "string":
        return (str.__str__(a) > str.__str__(b)) - (str.__str__(a) < str.__str__(b))
    return (a > b) - (a < b)


@gofunc(VALUE, VALUE)
def lt(a, b):
    return _order(a, b) < 0


@gofunc(VALUE, VALUE)
def le(a, b):
    return _order(a, b) <= 0


@gofunc(VALUE, VALUE)
def gt(a, b):
    return _order(a, b) > 0


@gofunc(VALUE, VALUE)
def ge(a, b):
    return _order(a, b) >= 0


# ---------------------------------------------------------------------------------- escaping

def _eval_args(args):
    if len(args) == 1 and type(args[0]) is str:
        return args[0]
    return sprint(args)


@gofunc(variadic=ANY)
def html(*args):
    s = _eval_args(args)
    return (s.replace("\0", "\uFFFD").replace("&", "&amp;").replace("'", "&#39;").replace("<", "&lt;")
            .replace(">", "&gt;").replace('"', "&#34;"))


@gofunc(variadic=ANY)
def js(*args):
    out = []
    for ch in _eval_args(args):
        if ch == "\\":
            out.append("\\\\")
        elif ch == "'":
            out.append("\\'")
        elif ch == '"':
            out.append("\\\"")
        elif ch == "<":
            out.append("\\u003C")
        elif ch == ">":
            out.append("\\u003E")
        elif ch == "&":
            out.append("\\u0026")
        elif ch == "=":
            out.append("\\u003D")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or not ch.isprintable():
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return "".join(out)


@gofunc(variadic=ANY)
def urlquery(*args):
    from urllib.parse import quote_plus
    return quote_plus(_eval_args(args), safe="-_.~")


@gofunc(VALUE, variadic=VALUE)
def call_(fn, *args):
    if fn is INVALID or fn is None:
        raise FuncError("call of nil")
    if not callable(fn) or isinstance(fn, (GoStruct, Stringer)):
        raise FuncError(f"non-function of type {type_name(fn)}")
    return fn(*args)


BUILTINS = {
    "and": and_, "or": or_, "not": not_, "len": length, "index": index, "slice": slice_, "print": print_,
    "printf": printf, "println": println, "eq": eq, "ne": ne, "lt": lt, "le": le, "gt": gt, "ge": ge,
    "html": html, "js": js, "urlquery": urlquery, "call": call_,
}
