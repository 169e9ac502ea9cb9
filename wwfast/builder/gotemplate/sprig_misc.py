"""Sprig's arithmetic, regular expression, path, hash, encoding, date, semver, uuid, OS, network and
URL functions, and `fail`."""
import decimal
import hashlib
import math
import os
import posixpath
import re
import socket
import uuid
import zlib
from urllib.parse import urlsplit, urlunsplit

from wwfast.builder.gotemplate.gotypes import Int64, StrList
from wwfast.builder.gotemplate.runtime import ANY, INT, STRING, FuncError, gofunc
from wwfast.builder.gotemplate.sprig_data import to_float64, to_int, to_int64


def _i64(v):
    v = int(v)
    v = (v + (1 << 63)) % (1 << 64) - (1 << 63)  # int64 wrap-around, as Go
    return Int64(v)


def _div(a, b):
    a, b = to_int64(a), to_int64(b)
    if b == 0:
        raise FuncError("runtime error: integer divide by zero")
    q = abs(a) // abs(b)
    return _i64(q if (a >= 0) == (b >= 0) else -q)


def _mod(a, b):
    a, b = to_int64(a), to_int64(b)
    if b == 0:
        raise FuncError("runtime error: integer divide by zero")
    return _i64(math.fmod(a, b)) if abs(a) < 2 ** 52 else _i64(a - b * int(a / b))


def _dec_op(a, rest, op):
    d = decimal.Decimal(repr(to_float64(a)))
    for b in rest:
        e = decimal.Decimal(repr(to_float64(b)))
        if op == "/" and e == 0:
            raise FuncError("decimal division by 0")
        d = d + e if op == "+" else d - e if op == "-" else d * e if op == "*" else d / e
    return float(d)


def _round(a, p, *r_opt):
    round_on = r_opt[0] if r_opt else 0.5
    val = to_float64(a)
    pow_ = 10 ** p
    digit = pow_ * val
    _, div = math.modf(digit)[1], math.modf(digit)[0]
    if div >= round_on:
        rounded = math.ceil(digit)
    else:
        rounded = math.floor(digit)
    return rounded / pow_


def _seq(*params):
    if len(params) == 0:
        return ""
    if len(params) == 1:
        start, step, end = 1, 1, params[0]
        if end < start:
            step = -1
    elif len(params) == 2:
        start, end = params
        step = 1 if end >= start else -1
    elif len(params) == 3:
        start, step, end = params
        if (end < start and step >= 0) or (end > start and step <= 0) or step == 0:
            return ""
    else:
        return ""
    out = list(range(start, end + (1 if step > 0 else -1), step))
    return " ".join(str(i) for i in out)


def _until_step(start, stop, step):
    if step == 0 or (step > 0 and start >= stop) or (step < 0 and start <= stop):
        return []
    return list(range(start, stop, step))


# ---------------------------------------------------------------------------------- regex

def go_regex(pattern):
    """Go RE2 syntax in Python's re: named groups (?P<n>...) are the same; \\z is \\Z."""
    try:
        return re.compile(pattern.replace("\\z", "\\Z"))
    except re.error as e:
        raise FuncError(f"error parsing regexp: {e}") from None


def _expand_template(repl):
    """Go's $1 / ${name} replacement syntax in Python's \\g<> form."""
    out = []
    i = 0
    while i < len(repl):
        ch = repl[i]
        if ch == "\\":
            out.append("\\\\")
            i += 1
            continue
        if ch != "$":
            out.append(ch)
            i += 1
            continue
        if repl[i + 1:i + 2] == "$":
            out.append("$")
            i += 2
            continue
        m = re.match(r"\{(\w+)\}|(\w+)", repl[i + 1:])
        if not m:
            out.append("$")
            i += 1
            continue
        name = m.group(1) or m.group(2)
        out.append(f"\\g<{name}>")
        i += 1 + m.end()
    return "".join(out)


def _replace_all(pattern, s, repl):
    rx = go_regex(pattern)
    template = _expand_template(repl)
    try:
        return rx.sub(template, s)
    except (re.error, IndexError):
        return rx.sub(lambda m: "", s)


def _find_all(pattern, s, n):
    found = go_regex(pattern).finditer(s)
    out = StrList()
    for m in found:
        if n >= 0 and len(out) >= n:
            break
        out.append(m.group(0))
    return out


def _find(pattern, s):
    m = go_regex(pattern).search(s)
    return m.group(0) if m else ""


def _split(pattern, s, n):
    if n == 0:
        return StrList()
    rx = go_regex(pattern)
    if pattern and s == "":
        return StrList([""])
    parts = rx.split(s, maxsplit=0 if n < 0 else n - 1)
    if rx.groups:
        parts = parts[:: rx.groups + 1]
    return StrList(parts)


def _quote_meta(s):
    return "".join("\\" + c if c in "\\.+*?()|[]{}^$" else c for c in s)


# ---------------------------------------------------------------------------------- semver

_SEMVER = re.compile(r"v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z\-.]+))?(?:\+([0-9A-Za-z\-.]+))?$")


def _semver_tuple(text):
    m = _SEMVER.match(text.strip())
    if not m:
        raise FuncError("Invalid Semantic Version")
    major, minor, patch, pre, _ = m.groups()
    return int(major), int(minor or 0), int(patch or 0), pre or ""


def _semver_compare(constraint, version):
    v = _semver_tuple(version)
    for alternative in constraint.split("||"):
        if all(_check(c, v) for c in re.split(r"[\s,]+", alternative.strip()) if c):
            return True
    return False


def _check(c, v):
    m = re.match(r"(>=|<=|!=|=>|=<|>|<|=|~|\^)?\s*(.*)", c)
    op, ver = m.group(1) or "=", m.group(2)
    wanted = _semver_tuple(ver.replace("x", "0").replace("*", "0"))
    key = v[:3]
    want = wanted[:3]
    if op in ("=", "") and ("x" in ver or "*" in ver):
        parts = ver.lstrip("v").split(".")
        return all(p in ("x", "*") or int(p) == key[i] for i, p in enumerate(parts))
    if op == "~":
        return key >= want and key[:2] == want[:2]
    if op == "^":
        return key >= want and key[0] == want[0]
    return {"=": key == want, "!=": key != want, ">": key > want, "<": key < want, ">=": key >= want,
            "=>": key >= want, "<=": key <= want, "=<": key <= want}[op]


def _fail(msg):
    raise FuncError(msg)


def _get_host_by_name(name):
    try:
        return socket.gethostbyname(name)
    except OSError:
        return ""


def _url_parse(v):
    u = urlsplit(v)
    return {"scheme": u.scheme, "host": u.netloc.rsplit("@", 1)[-1], "hostname": u.hostname or "",
            "path": u.path, "query": u.query, "opaque": "", "fragment": u.fragment,
            "userinfo": u.netloc.rsplit("@", 1)[0] if "@" in u.netloc else ""}


def _url_join(d):
    netloc = d.get("host", "")
    if d.get("userinfo"):
        netloc = f"{d['userinfo']}@{netloc}"
    return urlunsplit((d.get("scheme", ""), netloc, d.get("path", ""), d.get("query", ""), d.get("fragment", "")))


def _expandenv(s):
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: os.environ.get(m.group(1) or m.group(2), ""), s)


A, S, I = ANY, STRING, INT
FUNCS = {
    "hello": gofunc()(lambda: "Hello!"),
    "atoi": gofunc(S)(lambda s: int(s) if re.fullmatch(r"[+-]?\d+", s) else 0),
    "int64": gofunc(A)(lambda v: Int64(to_int64(v))),
    "int": gofunc(A)(to_int),
    "float64": gofunc(A)(to_float64),
    "seq": gofunc(variadic=I)(_seq),
    "toDecimal": gofunc(A)(lambda v: Int64(int(str(v), 8)) if str(v).isdigit() and "8" not in str(v)
                           and "9" not in str(v) else Int64(0)),
    "until": gofunc(I)(lambda n: _until_step(0, n, 1 if n >= 0 else -1)),
    "untilStep": gofunc(I, I, I)(_until_step),
    "add1": gofunc(A)(lambda v: _i64(to_int64(v) + 1)),
    "add": gofunc(variadic=A)(lambda *v: _i64(sum(to_int64(x) for x in v))),
    "sub": gofunc(A, A)(lambda a, b: _i64(to_int64(a) - to_int64(b))),
    "div": gofunc(A, A)(_div),
    "mod": gofunc(A, A)(_mod),
    "mul": gofunc(A, variadic=A)(lambda a, *v: _i64(math.prod([to_int64(a)] + [to_int64(x) for x in v]))),
    "randInt": gofunc(I, I)(lambda lo, hi: __import__("random").randrange(lo, hi)),
    "add1f": gofunc(A)(lambda v: _dec_op(v, [1], "+")),
    "addf": gofunc(variadic=A)(lambda *v: _dec_op(0.0, v, "+")),
    "subf": gofunc(A, variadic=A)(lambda a, *v: _dec_op(a, v, "-")),
    "divf": gofunc(A, variadic=A)(lambda a, *v: _dec_op(a, v, "/")),
    "mulf": gofunc(A, variadic=A)(lambda a, *v: _dec_op(a, v, "*")),
    "biggest": gofunc(A, variadic=A)(lambda a, *v: Int64(max([to_int64(a)] + [to_int64(x) for x in v]))),
    "max": gofunc(A, variadic=A)(lambda a, *v: Int64(max([to_int64(a)] + [to_int64(x) for x in v]))),
    "min": gofunc(A, variadic=A)(lambda a, *v: Int64(min([to_int64(a)] + [to_int64(x) for x in v]))),
    "maxf": gofunc(A, variadic=A)(lambda a, *v: max([to_float64(a)] + [to_float64(x) for x in v])),
    "minf": gofunc(A, variadic=A)(lambda a, *v: min([to_float64(a)] + [to_float64(x) for x in v])),
    "ceil": gofunc(A)(lambda v: float(math.ceil(to_float64(v)))),
    "floor": gofunc(A)(lambda v: float(math.floor(to_float64(v)))),
    "round": gofunc(A, I, variadic="float64")(_round),
    "regexMatch": gofunc(S, S)(lambda rx, s: go_regex(rx).search(s) is not None),
    "mustRegexMatch": gofunc(S, S)(lambda rx, s: go_regex(rx).search(s) is not None),
    "regexFindAll": gofunc(S, S, I)(_find_all), "mustRegexFindAll": gofunc(S, S, I)(_find_all),
    "regexFind": gofunc(S, S)(_find), "mustRegexFind": gofunc(S, S)(_find),
    "regexReplaceAll": gofunc(S, S, S)(_replace_all), "mustRegexReplaceAll": gofunc(S, S, S)(_replace_all),
    "regexReplaceAllLiteral": gofunc(S, S, S)(lambda rx, s, r: go_regex(rx).sub(lambda m: r, s)),
    "mustRegexReplaceAllLiteral": gofunc(S, S, S)(lambda rx, s, r: go_regex(rx).sub(lambda m: r, s)),
    "regexSplit": gofunc(S, S, I)(_split), "mustRegexSplit": gofunc(S, S, I)(_split),
    "regexQuoteMeta": gofunc(S)(_quote_meta),
    "base": gofunc(S)(lambda p: posixpath.basename(p.rstrip("/")) or ("/" if p.startswith("/") else ".")),
    "dir": gofunc(S)(lambda p: posixpath.normpath(posixpath.dirname(p) or ".") if "/" in p else "."),
    "clean": gofunc(S)(lambda p: posixpath.normpath(p) if p else "."),
    "ext": gofunc(S)(lambda p: posixpath.splitext(posixpath.basename(p))[1]
                     if not posixpath.basename(p).startswith(".") else posixpath.splitext("x" + posixpath.basename(p))[1]),
    "isAbs": gofunc(S)(lambda p: p.startswith("/")),
    "sha1sum": gofunc(S)(lambda s: hashlib.sha1(s.encode("utf-8", "surrogateescape")).hexdigest()),
    "sha256sum": gofunc(S)(lambda s: hashlib.sha256(s.encode("utf-8", "surrogateescape")).hexdigest()),
    "adler32sum": gofunc(S)(lambda s: str(zlib.adler32(s.encode("utf-8", "surrogateescape")))),
    "uuidv4": gofunc()(lambda: str(uuid.uuid4())),
    "semver": gofunc(S)(lambda v: dict(zip(("Major", "Minor", "Patch", "Prerelease"), _semver_tuple(v)))),
    "semverCompare": gofunc(S, S)(_semver_compare),
    "fail": gofunc(S)(_fail),
    "env": gofunc(S)(lambda k: os.environ.get(k, "")),
    "expandenv": gofunc(S)(_expandenv),
    "getHostByName": gofunc(S)(_get_host_by_name),
    "urlParse": gofunc(S)(_url_parse),
    "urlJoin": gofunc("map[string]interface {}")(_url_join),
}
for _name in ("base", "clean", "dir", "ext", "isAbs"):  # filepath.* on Linux are the path.* ones
    FUNCS["os" + _name[0].upper() + _name[1:]] = FUNCS[_name]


# Left out on purpose: certificate and key generation (genCA, genPrivateKey, ...), bcrypt/htpasswd,
# derivePassword, encryptAES/decryptAES: a provisioning template has no business minting secrets per
# render. A template that calls one fails to compile with "function ... not defined", naming it.
