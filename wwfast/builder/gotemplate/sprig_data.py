"""Sprig's list, dict, default/empty, JSON and reflection functions."""
import copy
import json
import math

from wwfast.builder.gotemplate.gofmt import format_float_g
from wwfast.builder.gotemplate.literals import parse_go_int
from wwfast.builder.gotemplate.gotypes import INVALID, GoStruct, Int64, StrList, Stringer, kind, type_name
from wwfast.builder.gotemplate.runtime import ANY, BOOL, INT, MAP, STRING, FuncError, gofunc
from wwfast.builder.gotemplate.sprig_strings import strval


def empty(v):
    """sprig's empty: the zero value of its type (structs are never empty)."""
    if v is None or v is INVALID:
        return True
    t = type(v)
    if t is str or t is list or t is dict or t is tuple or isinstance(v, (str, list, tuple, dict)):
        return len(v) == 0
    if t is bool:
        return not v
    if t in (int, float, Int64, complex):
        return v == 0
    if isinstance(v, Stringer):
        return not v
    return False


def _as_list(v, what):
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, Stringer) and kind(v) == "slice":
        return []
    raise FuncError(f"{what} {kind(v) if v is not None and v is not INVALID else 'invalid'}")


def _push(lst, v):
    return _as_list(lst, "Cannot push on type") + [v]


def _prepend(lst, v):
    return [v] + _as_list(lst, "Cannot prepend on type")


def _first(lst):
    items = _as_list(lst, "Cannot find first on type")
    return items[0] if items else None


def _last(lst):
    items = _as_list(lst, "Cannot find last on type")
    return items[-1] if items else None


def _rest(lst):
    items = _as_list(lst, "Cannot find rest on type")
    return items[1:] if items else None


def _initial(lst):
    items = _as_list(lst, "Cannot find initial on type")
    return items[:-1] if items else None


def deep_equal(a, b):
    if type(a) is not type(b):
        return False
    return a == b


def _uniq(lst):
    out = []
    for x in _as_list(lst, "Cannot find uniq on type"):
        if not any(deep_equal(x, y) for y in out):
            out.append(x)
    return out


def _without(lst, *omit):
    return [x for x in _as_list(lst, "Cannot find without on type") if not any(deep_equal(x, o) for o in omit)]


def _has(needle, haystack):
    if haystack is None:
        return False
    return any(deep_equal(needle, x) for x in _as_list(haystack, "Cannot find has on type"))


def _slice(lst, *indices):
    items = lst if isinstance(lst, (list, tuple)) else None
    if items is None:
        raise FuncError(f"list should be type of slice or array but {kind(lst)}")
    if not items:
        return None
    start = to_int(indices[0]) if indices else 0
    end = to_int(indices[1]) if len(indices) > 1 else len(items)
    if not 0 <= start <= end <= len(items):
        raise FuncError(f"runtime error: slice bounds out of range [{start}:{end}]")
    return type(items)(items[start:end]) if isinstance(items, StrList) else list(items[start:end])


def _concat(*lists):
    out = []
    for lst in lists:
        if not isinstance(lst, (list, tuple)):
            raise FuncError(f"Cannot concat type {kind(lst)} as list")
        out.extend(lst)
    return out


def _chunk(size, lst):
    items = _as_list(lst, "Cannot chunk type")
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def _sort_alpha(lst):
    if isinstance(lst, (list, tuple)):
        from wwfast.builder.gotemplate.sprig_strings import strslice
        return StrList(sorted(strslice(lst)))
    return StrList([strval(lst)])


def _dict(*pairs):
    out = {}
    for i in range(0, len(pairs), 2):
        out[strval(pairs[i])] = pairs[i + 1] if i + 1 < len(pairs) else ""
    return out


def _merge(dst, *srcs, overwrite=False):
    for src in srcs:
        _merge_into(dst, src, overwrite)
    return dst


def _merge_into(dst, src, overwrite):
    for k, v in src.items():
        if k in dst and isinstance(dst[k], dict) and isinstance(v, dict):
            _merge_into(dst[k], v, overwrite)
        elif k not in dst or empty(dst[k]) or (overwrite and not empty(v)):
            dst[k] = v
    return dst


def _dig(*args):
    if len(args) < 3:
        raise FuncError("dig needs at least three arguments")
    *keys, default, d = args
    for k in keys:
        if not isinstance(d, dict) or strval(k) not in d:
            return default
        d = d[strval(k)]
    return d


def _pluck(key, *dicts):
    return [d[key] for d in dicts if key in d]


def _keys(*dicts):
    return StrList(k for d in dicts for k in d)


# ---------------------------------------------------------------------------------- JSON

def _json_number(f):
    """encoding/json's float form: %f unless the exponent is < -6 or >= 21, then a trimmed %e."""
    if math.isinf(f) or math.isnan(f):
        raise FuncError(f"json: unsupported value: {format_float_g(f)}")
    if f == int(f) and abs(f) < 1e21:
        return str(int(f)) if f != 0 or math.copysign(1, f) > 0 else "-0"
    a = abs(f)
    if a < 1e-6 or a >= 1e21:
        text = repr(f)
        if "e" in text:
            mant, exp = text.split("e")
            sign = "-" if exp.startswith("-") else "+"
            return f"{mant}e{sign}{exp.lstrip('+-').lstrip('0') or '0'}"
        return text
    return repr(f)


def to_jsonable(v):
    if v is None or v is INVALID:
        return None
    t = type(v)
    if t in (str, bool, int, Int64):
        return v if t is not Int64 else int(v)
    if t is float:
        return _Raw(_json_number(v))
    if isinstance(v, Stringer):
        return v.go_string() if v else None
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (list, tuple)):
        return [to_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {strval(k): to_jsonable(x) for k, x in v.items()}
    if isinstance(v, GoStruct):
        names = getattr(v, "_json_fields", None) or {f: f for f in v._go_fields}
        out = {}
        for field, key in names.items():
            value = getattr(v, field, None)
            if key.endswith(",omitempty"):
                if empty(value):
                    continue
                key = key[: -len(",omitempty")]
            out[key] = to_jsonable(value)
        return out
    raise FuncError(f"json: unsupported type: {type_name(v)}")


class _Raw(str):
    """A number already in encoding/json's form."""


def go_json(v, indent=None, escape_html=True):
    data = to_jsonable(v)
    text = _dump(data, indent, 0)
    if escape_html:
        text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _dump(data, indent, level):
    if isinstance(data, _Raw):
        return str(data)
    if isinstance(data, dict):
        if not data:
            return "{}"
        items = [f"{json.dumps(k, ensure_ascii=False)}:{' ' if indent else ''}{_dump(data[k], indent, level + 1)}"
                 for k in sorted(data)]
        return _join("{", "}", items, indent, level)
    if isinstance(data, list):
        if not data:
            return "[]"
        return _join("[", "]", [_dump(x, indent, level + 1) for x in data], indent, level)
    return json.dumps(data, ensure_ascii=False)


def _join(open_, close, items, indent, level):
    if not indent:
        return open_ + ",".join(items) + close
    pad = indent * (level + 1)
    return open_ + "\n" + ",\n".join(pad + i for i in items) + "\n" + indent * level + close


def from_json(text):
    return json.loads(text, parse_int=float, parse_constant=float)


def _from_json(text):
    try:
        return from_json(text)
    except ValueError:
        return None


def _must_from_json(text):
    try:
        return from_json(text)
    except ValueError as e:
        raise FuncError(str(e)) from None


# ---------------------------------------------------------------------------------- numbers

def to_int64(v):
    """cast.ToInt64: numbers truncated, numeric strings parsed (base prefixes allowed), else 0."""
    if v is None or v is INVALID:
        return 0
    t = type(v)
    if t is bool:
        return int(v)
    if isinstance(v, int):
        return int(v)
    if t is float:
        return int(v) if math.isfinite(v) else 0
    if isinstance(v, str):
        text = str.__str__(v).strip()
        head, dot, tail = text.partition(".")
        if dot and tail.strip("0") == "":
            text = head
        try:
            return parse_go_int(text)
        except ValueError:
            return 0
    return 0


def to_int(v):
    return int(to_int64(v))


def to_float64(v):
    if v is None or v is INVALID:
        return 0.0
    if type(v) is bool:
        return float(v)
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            return float(str.__str__(v))
        except ValueError:
            return 0.0
    return 0.0


A = ANY
FUNCS = {
    "default": gofunc(A, variadic=A)(lambda d, *given: d if not given or empty(given[0]) else given[0]),
    "empty": gofunc(A)(empty),
    "coalesce": gofunc(variadic=A)(lambda *v: next((x for x in v if not empty(x)), None)),
    "all": gofunc(variadic=A)(lambda *v: all(not empty(x) for x in v)),
    "any": gofunc(variadic=A)(lambda *v: any(not empty(x) for x in v)),
    "compact": gofunc(A)(lambda lst: [x for x in _as_list(lst, "Cannot compact on type") if not empty(x)]),
    "mustCompact": gofunc(A)(lambda lst: [x for x in _as_list(lst, "Cannot compact on type") if not empty(x)]),
    "fromJson": gofunc(STRING)(_from_json),
    "mustFromJson": gofunc(STRING)(_must_from_json),
    "toJson": gofunc(A)(lambda v: _safe_json(v)),
    "mustToJson": gofunc(A)(lambda v: go_json(v)),
    "toPrettyJson": gofunc(A)(lambda v: _safe_json(v, "  ")),
    "mustToPrettyJson": gofunc(A)(lambda v: go_json(v, "  ")),
    "toRawJson": gofunc(A)(lambda v: go_json(v, escape_html=False)),
    "mustToRawJson": gofunc(A)(lambda v: go_json(v, escape_html=False)),
    "ternary": gofunc(A, A, BOOL)(lambda vt, vf, c: vt if c else vf),
    "deepCopy": gofunc(A)(copy.deepcopy),
    "mustDeepCopy": gofunc(A)(copy.deepcopy),
    "typeOf": gofunc(A)(type_name),
    "typeIs": gofunc(STRING, A)(lambda t, v: type_name(v) == t),
    "typeIsLike": gofunc(STRING, A)(lambda t, v: type_name(v) in (t, "*" + t)),
    "kindOf": gofunc(A)(lambda v: kind(v)),
    "kindIs": gofunc(STRING, A)(lambda k, v: kind(v) == k),
    "deepEqual": gofunc(A, A)(deep_equal),
    "tuple": gofunc(variadic=A)(lambda *v: list(v)),
    "list": gofunc(variadic=A)(lambda *v: list(v)),
    "dict": gofunc(variadic=A)(_dict),
    "get": gofunc(MAP, STRING)(lambda d, k: d.get(k, "")),
    "set": gofunc(MAP, STRING, A)(lambda d, k, v: (d.__setitem__(k, v), d)[1]),
    "unset": gofunc(MAP, STRING)(lambda d, k: (d.pop(k, None), d)[1]),
    "hasKey": gofunc(MAP, STRING)(lambda d, k: k in d),
    "pluck": gofunc(STRING, variadic=MAP)(_pluck),
    "keys": gofunc(variadic=MAP)(_keys),
    "pick": gofunc(MAP, variadic=STRING)(lambda d, *ks: {k: d[k] for k in ks if k in d}),
    "omit": gofunc(MAP, variadic=STRING)(lambda d, *ks: {k: v for k, v in d.items() if k not in ks}),
    "merge": gofunc(MAP, variadic=MAP)(lambda d, *s: _merge(d, *s)),
    "mustMerge": gofunc(MAP, variadic=MAP)(lambda d, *s: _merge(d, *s)),
    "mergeOverwrite": gofunc(MAP, variadic=MAP)(lambda d, *s: _merge(d, *s, overwrite=True)),
    "mustMergeOverwrite": gofunc(MAP, variadic=MAP)(lambda d, *s: _merge(d, *s, overwrite=True)),
    "values": gofunc(MAP)(lambda d: list(d.values())),
    "dig": gofunc(variadic=A)(_dig),
    "append": gofunc(A, A)(_push), "push": gofunc(A, A)(_push),
    "mustAppend": gofunc(A, A)(_push), "mustPush": gofunc(A, A)(_push),
    "prepend": gofunc(A, A)(_prepend), "mustPrepend": gofunc(A, A)(_prepend),
    "first": gofunc(A)(_first), "mustFirst": gofunc(A)(_first),
    "rest": gofunc(A)(_rest), "mustRest": gofunc(A)(_rest),
    "last": gofunc(A)(_last), "mustLast": gofunc(A)(_last),
    "initial": gofunc(A)(_initial), "mustInitial": gofunc(A)(_initial),
    "reverse": gofunc(A)(lambda v: list(reversed(_as_list(v, "Cannot find reverse on type")))),
    "mustReverse": gofunc(A)(lambda v: list(reversed(_as_list(v, "Cannot find reverse on type")))),
    "uniq": gofunc(A)(_uniq), "mustUniq": gofunc(A)(_uniq),
    "without": gofunc(A, variadic=A)(_without), "mustWithout": gofunc(A, variadic=A)(_without),
    "has": gofunc(A, A)(_has), "mustHas": gofunc(A, A)(_has),
    "slice": gofunc(A, variadic=A)(_slice), "mustSlice": gofunc(A, variadic=A)(_slice),
    "concat": gofunc(variadic=A)(_concat),
    "chunk": gofunc(INT, A)(_chunk), "mustChunk": gofunc(INT, A)(_chunk),
    "sortAlpha": gofunc(A)(_sort_alpha),
}


def _safe_json(v, indent=None):
    try:
        return go_json(v, indent)
    except FuncError:
        return ""
