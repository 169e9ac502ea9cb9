"""Go's fmt for template output: Sprint, Sprintln, Sprintf and the %v form of every value.

Templates print values through fmt.Fprint and format them with printf, so numbers, maps, lists and
errors must come out byte for byte as Go writes them (floats in shortest form with Go's exponent
rule, maps sorted by key, "%!d(string=x)" for a verb that does not fit).
"""
import decimal
import math

from wwfast.builder.gotemplate.gotypes import INVALID, GoStruct, Stringer, is_int


def _shortest_digits(x):
    """(digits, dp) of the shortest repr of a finite positive float: x = 0.DIGITS * 10**dp."""
    _, digits, exp = decimal.Decimal(repr(x)).as_tuple()
    text = "".join(map(str, digits))
    return text.rstrip("0") or "0", len(text) + exp


def _exp_form(digits, dp, upper=False):
    exp = dp - 1
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{mant}{'E' if upper else 'e'}{'-' if exp < 0 else '+'}{abs(exp):02d}"


def format_float_g(x, upper=False):
    """strconv.FormatFloat(x, 'g', -1, 64), fmt's %v: shortest digits, %e form when the exponent is
    below -4 or at least 6 (Go's threshold for the shortest form)."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    neg = x < 0 or (x == 0 and math.copysign(1, x) < 0)
    if x == 0:
        return "-0" if neg else "0"
    digits, dp = _shortest_digits(abs(x))
    exp = dp - 1
    if exp < -4 or exp >= 6:
        body = _exp_form(digits, dp, upper)
    elif dp <= 0:
        body = "0." + "0" * (-dp) + digits
    elif dp >= len(digits):
        body = digits + "0" * (dp - len(digits))
    else:
        body = digits[:dp] + "." + digits[dp:]
    return ("-" if neg else "") + body


def format_float(x, verb, prec):
    """%e %E %f %F %g %G with an explicit or default precision (prec None: the verb's default)."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if verb in "gG":
        if prec is None:
            return format_float_g(x, verb == "G")
        text = f"%.{max(prec, 1) if prec != 0 else 1}{verb}" % x
        return text
    if verb in "fF":
        return f"%.{6 if prec is None else prec}f" % x
    text = f"%.{6 if prec is None else prec}{verb}" % x
    return text


def quote(s, ascii_only=False):
    """strconv.Quote: Go escapes (\\a \\b \\f \\n \\r \\t \\v \\\\ \\"), \\x for bad bytes, \\u for non-printables."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif 0x20 <= o < 0x7F:
            out.append(ch)
        elif ch in _ESC:
            out.append(_ESC[ch])
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        elif 0xDC80 <= o <= 0xDCFF:  # undecodable byte kept by surrogateescape
            out.append(f"\\x{o - 0xDC00:02x}")
        elif ascii_only or not ch.isprintable():
            out.append(f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_ESC = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


# --------------------------------------------------------------------------------------- %v of values

def sprint_value(v, depth=0, plus=False):
    """fmt's %v (%+v with plus) of one value."""
    if v is None or v is INVALID:
        return "<nil>"
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "true" if v else "false"
    if is_int(v):
        return str(int(v))
    if t is float:
        return format_float_g(v)
    if isinstance(v, Stringer):
        return v.go_string()
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(sprint_value(x, depth + 1, plus) for x in v) + "]"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{sprint_value(k, depth + 1, plus)}:{sprint_value(x, depth + 1, plus)}"
                                 for k, x in sorted_items(v)) + "]"
    if isinstance(v, GoStruct):
        if hasattr(v, "String") and "String" in v._go_methods:
            return v.String()
        body = struct_text(v, depth, plus)
        if v._go_pointer and depth > 0:
            return "&" + body
        return body
    if isinstance(v, (bytes, bytearray)):
        return "[" + " ".join(str(b) for b in v) + "]"
    if isinstance(v, complex):
        return f"({format_float_g(v.real)}{'+' if v.imag >= 0 else ''}{format_float_g(v.imag)}i)"
    if callable(v):
        return "0x0"
    return str(v)


def struct_text(v, depth, plus):
    parts = []
    for name in v._go_fields:
        value = getattr(v, name, None)
        text = sprint_value(value, depth + 1, plus)
        parts.append(f"{name}:{text}" if plus else text)
    return "{" + " ".join(parts) + "}"


def sort_key(k):
    """fmtsort order: numbers numerically, strings by bytes, false before true."""
    if type(k) is bool:
        return (0, int(k), "")
    if isinstance(k, (int, float)):
        return (1, k, "")
    return (2, 0, str(k))


def sorted_items(d):
    try:
        return sorted(d.items(), key=lambda kv: sort_key(kv[0]))
    except TypeError:
        return list(d.items())


def sprint(args):
    """fmt.Sprint: operands joined, with a space between two operands when neither is a string."""
    if all(type(a) is str for a in args):  # the common case: print "prefix-" $name ".conf"
        return "".join(args)
    out = []
    prev_string = True
    for i, a in enumerate(args):
        is_string = type(a) is str or (isinstance(a, str) and not isinstance(a, Stringer))
        if i > 0 and not is_string and not prev_string:
            out.append(" ")
        out.append(sprint_value(a))
        prev_string = is_string
    return "".join(out)


def sprintln(args):
    return " ".join(sprint_value(a) for a in args) + "\n"
