"""Literals of Go's template language: quoted strings (strconv.Unquote) and number constants, which
like Go's may be valid as several types at once (1 is an int, a uint and a float)."""
import re

from wwfast.builder.gotemplate import lexer as L
from wwfast.builder.gotemplate import nodes as N


class ParseError(Exception):
    def __init__(self, message, line):
        super().__init__(message)
        self.line = line


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}


def unquote(text, line):
    """strconv.Unquote of a "..." / `...` / '...' literal."""
    if text.startswith("`"):
        return text[1:-1].replace("\r", "")
    quote_ch, body = text[0], text[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            if ch == quote_ch:
                raise ParseError("invalid syntax", line)
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        e = body[i + 1:i + 2]
        if e in _ESCAPES:
            out += _ESCAPES[e].encode()
            i += 2
        elif e == quote_ch:
            out += e.encode()
            i += 2
        elif e == "x" and re.fullmatch(r"[0-9a-fA-F]{2}", body[i + 2:i + 4]):
            out.append(int(body[i + 2:i + 4], 16))
            i += 4
        elif e in "01234567" and e and re.fullmatch(r"[0-7]{3}", body[i + 1:i + 4]) and int(body[i + 1:i + 4], 8) < 256:
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        elif e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", body[i + 2:i + 6]):
            out += chr(int(body[i + 2:i + 6], 16)).encode("utf-8", "surrogatepass")
            i += 6
        elif e == "U" and re.fullmatch(r"[0-9a-fA-F]{8}", body[i + 2:i + 10]) and int(body[i + 2:i + 10], 16) <= 0x10FFFF:
            out += chr(int(body[i + 2:i + 10], 16)).encode("utf-8", "surrogatepass")
            i += 10
        else:
            raise ParseError("invalid syntax", line)
    result = out.decode("utf-8", "surrogateescape")
    if quote_ch == "'" and len(result) != 1:
        raise ParseError(f"malformed character constant: {text}", line)
    return result


_OCTAL_LEGACY = re.compile(r"[+-]?0[0-7_]+$")


def parse_go_int(text):
    t = text.replace("_", "")
    if _OCTAL_LEGACY.match(text):
        sign = -1 if t.startswith("-") else 1
        return sign * int(t.lstrip("+-"), 8)
    return int(t, 0)


def number_node(tok, parser):
    n = N.NumberNode(tok.line, tok.val)
    text = tok.val
    if tok.kind == L.CHAR:
        value = ord(unquote(text, tok.line))
        n.is_int = n.is_uint = n.is_float = True
        n.int, n.float = value, float(value)
        return n
    if tok.kind == L.COMPLEX or (text.endswith("i") and not text.startswith(("0x", "0X"))):
        try:
            n.complex = complex(text.replace("i", "j").replace("_", ""))
        except ValueError:
            parser.error(f"illegal number syntax: \"{text}\"", tok.line)
        n.is_complex = True
        if n.complex.imag == 0:
            n.is_float, n.float = True, n.complex.real
            if n.float.is_integer():
                n.is_int = n.is_uint = True
                n.int = int(n.float)
        return n
    try:
        value = parse_go_int(text)
        n.is_int = -(1 << 63) <= value < (1 << 63)
        n.is_uint = 0 <= value < (1 << 64) and not text.startswith("-")
        if n.is_int or n.is_uint:
            n.int = value
            n.is_float, n.float = True, float(value)
        else:
            parser.error(f"illegal number syntax: \"{text}\"", tok.line)
        return n
    except ValueError:
        pass
    try:
        if re.search(r"^[+-]?0[xX]", text):
            f = float.fromhex(text.replace("_", ""))
        elif re.fullmatch(r"[+-]?(\d[\d_]*)?\.?[\d_]*([eE][+-]?[\d_]+)?", text) and re.search(r"\d", text):
            f = float(text.replace("_", ""))
        else:
            raise ValueError
    except ValueError:
        parser.error(f"illegal number syntax: \"{text}\"", tok.line)
    n.is_float, n.float = True, f
    if f.is_integer() and abs(f) < 2 ** 63:
        n.is_int, n.int = True, int(f)
        n.is_uint = f >= 0
    return n
