"""Sprig's string functions (the ones Warewulf's templates can call), with sprig's argument order
(the piped value last: `"a,b" | splitList ","`)."""
import base64
import random
import re
import string

from wwfast.builder.gotemplate.gofmt import sprint_value
from wwfast.builder.gotemplate.gotypes import INVALID, GoStruct, StrList, Stringer
from wwfast.builder.gotemplate.printf import quote as go_quote_text
from wwfast.builder.gotemplate.runtime import ANY, INT, STRING, gofunc


def strval(v):
    """sprig's strval: strings as they are, Stringers through String(), the rest as %v."""
    if type(v) is str:
        return v
    if isinstance(v, Stringer):
        return v.go_string()
    if isinstance(v, (bytes, bytearray)):
        return v.decode("utf-8", "surrogateescape")
    return sprint_value(v)


def strslice(v):
    if isinstance(v, StrList):
        return v
    if isinstance(v, (list, tuple)):
        return StrList(strval(x) for x in v if x is not None and x is not INVALID)
    if v is None or v is INVALID:
        return StrList()
    return StrList([strval(v)])


def _title(s):
    """strings.Title: upper-case the first letter of each word (words split at non-letters)."""
    out = []
    prev = " "
    for ch in s:
        out.append(ch.upper() if not (prev.isalnum() or prev == "_" or prev == "'") else ch)
        prev = ch
    return "".join(out)


def _wrap(s, width, sep="\n", long_words=True):
    """goutils.WrapCustom: break lines at spaces so that they are at most `width` long."""
    if width < 1:
        width = 1
    out_lines = []
    for line in s.split("\n"):
        words = line.split(" ")
        cur = ""
        for word in words:
            if not cur:
                cur = word
            elif len(cur) + 1 + len(word) <= width:
                cur += " " + word
            else:
                out_lines.append(cur)
                cur = word
            while long_words and len(cur) > width:
                out_lines.append(cur[:width])
                cur = cur[width:]
        out_lines.append(cur)
    return sep.join(out_lines)


def _snake(s):
    s = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", s)
    s = re.sub(r"([a-z\d])([A-Z])", r"\1_\2", s)
    return re.sub(r"[\s\-]+", "_", s).lower()


def _camel(s):
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[_\s\-]+", s) if p)


def _abbreviate(s, width):
    if len(s) <= width:
        return s
    return s[:width - 3] + "..."


def _abbreviate_full(s, offset, width):
    if len(s) <= width:
        return s
    if offset > len(s):
        offset = len(s)
    if len(s) - offset < width - 3:
        offset = len(s) - (width - 3)
    if offset <= 4:
        return s[:width - 3] + "..."
    if offset + width - 3 < len(s):
        return "..." + _abbreviate(s[offset:], width - 3)
    return "..." + s[len(s) - (width - 3):]


def _rand(chars, count):
    return "".join(random.SystemRandom().choice(chars) for _ in range(max(count, 0)))


def _substr(start, end, s):
    if start < 0:
        return s[:end]
    if end < 0 or end > len(s):
        return s[start:]
    return s[start:end]


def _trunc(c, s):
    if c < 0 and len(s) + c > 0:
        return s[len(s) + c:]
    if c >= 0 and len(s) > c:
        return s[:c]
    return s


def _b64dec(v):
    try:
        return base64.b64decode(v.encode(), validate=True).decode("utf-8", "surrogateescape")
    except (ValueError, base64.binascii.Error):
        return "illegal base64 data at input byte 0"


def _b32dec(v):
    try:
        return base64.b32decode(v.encode()).decode("utf-8", "surrogateescape")
    except (ValueError, base64.binascii.Error):
        return "illegal base32 data at input byte 0"


def _initials(s):
    return "".join(w[0] for w in s.split() if w)


def _swapcase(s):
    out = []
    prev_space = True
    for ch in s:
        if ch.isupper():
            out.append(ch.lower())
        elif ch.islower():
            out.append(ch.upper() if prev_space else ch.upper())
        else:
            out.append(ch)
        prev_space = ch.isspace()
    return "".join(out)


def _split_map(parts):
    return {f"_{i}": p for i, p in enumerate(parts)}


S, I, A = STRING, INT, ANY
FUNCS = {
    "abbrev": gofunc(I, S)(lambda w, s: s if w < 4 else _abbreviate(s, w)),
    "abbrevboth": gofunc(I, I, S)(lambda l, r, s: s if r < 4 or (l > 0 and r < 7) else _abbreviate_full(s, l, r)),
    "trunc": gofunc(I, S)(_trunc),
    "trim": gofunc(S)(lambda s: s.strip(" \t\n\r\v\f\x85\xa0")),
    "upper": gofunc(S)(str.upper),
    "lower": gofunc(S)(str.lower),
    "title": gofunc(S)(_title),
    "untitle": gofunc(S)(lambda s: s[:1].lower() + s[1:]),
    "substr": gofunc(I, I, S)(_substr),
    "repeat": gofunc(I, S)(lambda n, s: s * n),
    "trimall": gofunc(S, S)(lambda a, b: b.strip(a)),
    "trimAll": gofunc(S, S)(lambda a, b: b.strip(a)),
    "trimSuffix": gofunc(S, S)(lambda a, b: b[:-len(a)] if a and b.endswith(a) else b),
    "trimPrefix": gofunc(S, S)(lambda a, b: b[len(a):] if b.startswith(a) else b),
    "nospace": gofunc(S)(lambda s: "".join(s.split())),
    "initials": gofunc(S)(_initials),
    "randAlphaNum": gofunc(I)(lambda n: _rand(string.ascii_letters + string.digits, n)),
    "randAlpha": gofunc(I)(lambda n: _rand(string.ascii_letters, n)),
    "randAscii": gofunc(I)(lambda n: _rand("".join(chr(c) for c in range(32, 127)), n)),
    "randNumeric": gofunc(I)(lambda n: _rand(string.digits, n)),
    "swapcase": gofunc(S)(_swapcase),
    "shuffle": gofunc(S)(lambda s: "".join(random.sample(s, len(s)))),
    "snakecase": gofunc(S)(_snake),
    "camelcase": gofunc(S)(_camel),
    "kebabcase": gofunc(S)(lambda s: _snake(s).replace("_", "-")),
    "wrap": gofunc(I, S)(lambda n, s: _wrap(s, n)),
    "wrapWith": gofunc(I, S, S)(lambda n, sep, s: _wrap(s, n, sep)),
    "contains": gofunc(S, S)(lambda sub, s: sub in s),
    "hasPrefix": gofunc(S, S)(lambda p, s: s.startswith(p)),
    "hasSuffix": gofunc(S, S)(lambda p, s: s.endswith(p)),
    "quote": gofunc(variadic=A)(lambda *a: " ".join(go_quote_text(strval(x)) for x in a if x is not None)),
    "squote": gofunc(variadic=A)(lambda *a: " ".join(f"'{sprint_value(x)}'" for x in a if x is not None)),
    "cat": gofunc(variadic=A)(lambda *a: " ".join(sprint_value(x) for x in a if x is not None)),
    "indent": gofunc(I, S)(lambda n, s: " " * n + s.replace("\n", "\n" + " " * n)),
    "nindent": gofunc(I, S)(lambda n, s: "\n" + " " * n + s.replace("\n", "\n" + " " * n)),
    "replace": gofunc(S, S, S)(lambda old, new, s: s.replace(old, new)),
    "plural": gofunc(S, S, I)(lambda one, many, n: one if n == 1 else many),
    "toString": gofunc(A)(strval),
    "toStrings": gofunc(A)(strslice),
    "join": gofunc(S, A)(lambda sep, v: sep.join(strslice(v))),
    "split": gofunc(S, S)(lambda sep, s: _split_map(_go_split(s, sep))),
    "splitList": gofunc(S, S)(lambda sep, s: StrList(_go_split(s, sep))),
    "splitn": gofunc(S, I, S)(lambda sep, n, s: _split_map(_go_split(s, sep, n))),
    "b64enc": gofunc(S)(lambda s: base64.b64encode(s.encode("utf-8", "surrogateescape")).decode()),
    "b64dec": gofunc(S)(_b64dec),
    "b32enc": gofunc(S)(lambda s: base64.b32encode(s.encode("utf-8", "surrogateescape")).decode()),
    "b32dec": gofunc(S)(_b32dec),
}


def _go_split(s, sep, n=-1):
    """strings.Split / SplitN: an empty separator splits into characters; n < 0 means all."""
    if n == 0:
        return []
    if sep == "":
        chars = list(s)
        if 0 < n < len(chars):
            return chars[:n - 1] + ["".join(chars[n - 1:])]
        return chars
    return s.split(sep) if n < 0 else s.split(sep, n - 1)


def is_struct(v):
    return isinstance(v, GoStruct)
