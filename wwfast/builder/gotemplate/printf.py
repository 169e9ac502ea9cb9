"""Go's fmt.Sprintf for templates: verbs, flags, width, precision, argument indexes, and Go's in-band
error forms (%!d(string=x), %!s(MISSING), %!(EXTRA ...), %!(NOVERB), %!(BADWIDTH), ...)."""
from wwfast.builder.gotemplate.gofmt import format_float, format_float_g, quote, sorted_items, sprint_value, \
    struct_text
from wwfast.builder.gotemplate.gotypes import INVALID, GoStruct, Stringer, is_int, type_name

_FLAGS = "+-# 0"


class _Spec:
    __slots__ = ("plus", "minus", "sharp", "space", "zero", "width", "prec")

    def __init__(self):
        self.plus = self.minus = self.sharp = self.space = self.zero = False
        self.width = self.prec = None


def _pad(text, spec, numeric=False):
    if spec.width is None or len(text) >= spec.width:
        return text
    fill = spec.width - len(text)
    if spec.minus:
        return text + " " * fill
    if spec.zero and numeric:
        sign = text[0] if text[:1] in "+- " and text[:1] != "" else ""
        return sign + "0" * fill + text[len(sign):]
    if spec.zero:
        return "0" * fill + text
    return " " * fill + text


def _bad(verb, v):
    if v is None or v is INVALID:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(v)}={sprint_value(v)})"


def _fmt_int(n, verb, spec):
    n = int(n)
    neg = n < 0
    a = -n if neg else n
    if verb in "dv":
        digits = str(a)
    elif verb == "b":
        digits = format(a, "b")
    elif verb in "oO":
        digits = format(a, "o")
    elif verb == "x":
        digits = format(a, "x")
    elif verb == "X":
        digits = format(a, "X")
    elif verb == "c":
        return _pad(chr(n) if 0 <= n <= 0x10FFFF else "\ufffd", spec)
    elif verb == "q":
        ch = chr(n) if 0 <= n <= 0x10FFFF else "\ufffd"
        return _pad("'" + quote(ch)[1:-1].replace("\\\"", '"').replace("'", "\\'") + "'", spec)
    elif verb == "U":
        text = f"U+{a:04X}"
        if spec.sharp and 0 <= n <= 0x10FFFF and chr(n).isprintable():
            text += f" '{chr(n)}'"
        return _pad(text, spec)
    else:
        return None
    if spec.prec is not None:
        digits = "" if spec.prec == 0 and a == 0 else digits.rjust(spec.prec, "0")
    prefix = ""
    if spec.sharp:
        prefix = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}.get(verb, "")
    if verb == "O":
        prefix = "0o"
    sign = "-" if neg else ("+" if spec.plus else (" " if spec.space else ""))
    text = sign + prefix + digits
    if spec.zero and spec.width is not None and not spec.minus and spec.prec is None:
        fill = spec.width - len(text)
        if fill > 0:
            return sign + prefix + "0" * fill + digits
        return text
    return _pad(text, spec)


def _fmt_float(x, verb, spec):
    if verb not in "eEfFgGv":
        return None
    if verb == "v":
        text = format_float_g(x) if spec.prec is None else format_float(x, "g", spec.prec)
    else:
        text = format_float(x, verb, spec.prec)
    if spec.plus and not text.startswith(("-", "+")):
        text = "+" + text
    elif spec.space and not text.startswith(("-", "+")):
        text = " " + text
    if text in ("+Inf", "-Inf", "NaN"):
        if text == "+Inf" and not spec.plus:
            text = "+Inf" if spec.plus else ("+Inf" if False else "+Inf")
        return _pad(text, _no_zero(spec))
    return _pad(text, spec, numeric=True)


def _no_zero(spec):
    s = _Spec()
    s.width, s.minus = spec.width, spec.minus
    return s


def _fmt_str(s, verb, spec):
    if spec.prec is not None and verb in "sqvxX":
        s = s[:spec.prec]
    if verb in "sv":
        return _pad(s, spec)
    if verb == "q":
        if spec.sharp and "`" not in s and all(c == "\t" or c.isprintable() for c in s):
            return _pad("`" + s + "`", spec)
        return _pad(quote(s, ascii_only=spec.plus), spec)
    if verb in "xX":
        data = s.encode("utf-8", "surrogateescape")
        h = "%02x" if verb == "x" else "%02X"
        parts = [h % b for b in data]
        if spec.space:
            pre = ("0x" if verb == "x" else "0X") if spec.sharp else ""
            return _pad(" ".join(pre + p for p in parts), spec)
        return _pad((("0x" if verb == "x" else "0X") if spec.sharp and parts else "") + "".join(parts), spec)
    return None


def format_one(v, verb, spec, depth=0):
    """One operand under one verb, or None when the verb does not apply to it (a bad verb)."""
    if verb == "T":
        return _pad(type_name(v), spec)
    if v is None or v is INVALID:
        return _pad("<nil>", spec) if verb == "v" else None
    if verb in "vsxXq" and (isinstance(v, Stringer) or (isinstance(v, GoStruct) and "String" in v._go_methods)):
        text = v.go_string() if isinstance(v, Stringer) else v.String()
        return _fmt_str(text, verb, spec)
    t = type(v)
    if t is bool:
        return _pad("true" if v else "false", spec) if verb in "tv" else None
    if is_int(v):
        return _fmt_int(v, verb, spec)
    if t is float:
        return _fmt_float(v, verb, spec)
    if isinstance(v, str):
        return _fmt_str(str.__str__(v), verb, spec)
    if isinstance(v, (list, tuple)):
        if verb == "s" and not v:
            return _pad("[]", spec)
        items = []
        for x in v:
            r = format_one(x, verb, _inner(spec), depth + 1)
            items.append(r if r is not None else _bad(verb, x))
        return _pad("[" + " ".join(items) + "]", spec)
    if isinstance(v, dict):
        items = []
        for k, x in sorted_items(v):
            rk = format_one(k, verb, _inner(spec), depth + 1)
            rx = format_one(x, verb, _inner(spec), depth + 1)
            items.append(f"{rk if rk is not None else _bad(verb, k)}:{rx if rx is not None else _bad(verb, x)}")
        return _pad("map[" + " ".join(items) + "]", spec)
    if isinstance(v, GoStruct):
        if verb == "v":
            body = struct_text(v, depth, spec.plus)
            return _pad(("&" if v._go_pointer and depth == 0 else "") + body, spec)
        return None
    if verb == "v":
        return _pad(sprint_value(v), spec)
    return None


def _inner(spec):
    s = _Spec()
    s.plus, s.sharp, s.space, s.zero, s.prec = spec.plus, spec.sharp, spec.space, spec.zero, spec.prec
    s.width, s.minus = spec.width, spec.minus
    return s


def sprintf(fmt, args):
    out = []
    n = len(fmt)
    argnum = 0
    used_reorder = False
    i = 0
    while i < n:
        j = fmt.find("%", i)
        if j < 0:
            out.append(fmt[i:])
            break
        out.append(fmt[i:j])
        i = j + 1
        spec = _Spec()
        while i < n and fmt[i] in _FLAGS:
            c = fmt[i]
            if c == "+":
                spec.plus = True
            elif c == "-":
                spec.minus, spec.zero = True, False
            elif c == "#":
                spec.sharp = True
            elif c == " ":
                spec.space = True
            elif c == "0":
                spec.zero = not spec.minus
            i += 1
        # argument index, width
        i, argnum, bad_index, reordered = _arg_index(fmt, i, argnum, len(args))
        used_reorder |= reordered
        if i < n and fmt[i] == "*":
            i += 1
            if argnum < len(args) and is_int(args[argnum]):
                spec.width = int(args[argnum])
                if spec.width < 0:
                    spec.minus, spec.zero, spec.width = True, False, -spec.width
            else:
                out.append("%!(BADWIDTH)")
            argnum += 1
        else:
            start = i
            while i < n and fmt[i].isdigit():
                i += 1
            if i > start:
                spec.width = int(fmt[start:i])
        if i < n and fmt[i] == ".":
            i += 1
            i, argnum, bad2, reordered = _arg_index(fmt, i, argnum, len(args))
            bad_index |= bad2
            used_reorder |= reordered
            if i < n and fmt[i] == "*":
                i += 1
                if argnum < len(args) and is_int(args[argnum]) and int(args[argnum]) >= 0:
                    spec.prec = int(args[argnum])
                else:
                    out.append("%!(BADPREC)")
                argnum += 1
            else:
                start = i
                while i < n and fmt[i].isdigit():
                    i += 1
                spec.prec = int(fmt[start:i]) if i > start else 0
        i, argnum, bad3, reordered = _arg_index(fmt, i, argnum, len(args))
        bad_index |= bad3
        used_reorder |= reordered
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = fmt[i]
        i += 1
        if verb == "%":
            out.append("%")
            continue
        if bad_index:
            out.append(f"%!{verb}(BADINDEX)")
            continue
        if argnum >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        v = args[argnum]
        argnum += 1
        text = format_one(v, verb, spec)
        out.append(text if text is not None else _bad(verb, v))
    if not used_reorder and argnum < len(args):
        extra = ", ".join("<nil>" if a is None or a is INVALID else f"{type_name(a)}={sprint_value(a)}"
                          for a in args[argnum:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _arg_index(fmt, i, argnum, nargs):
    """An explicit [n] argument index at fmt[i]: (new i, argnum, bad, reordered)."""
    if i >= len(fmt) or fmt[i] != "[":
        return i, argnum, False, False
    close = fmt.find("]", i)
    if close < 0:
        return len(fmt), argnum, True, True
    text = fmt[i + 1:close]
    if not text.isdigit() or not 1 <= int(text) <= nargs:
        return close + 1, argnum, True, True
    return close + 1, int(text) - 1, False, True
