"""Tokens of Go's text/template syntax: text, {{ }} delimiters with "- " trim markers, comments,
and inside actions identifiers, keywords, .fields, $variables, numbers, strings, chars and punctuation.

Trimming happens here, as in Go: "{{- " drops the white space before the action and " -}}" the
white space after it (space, tab, CR, LF).
"""
import unicodedata

SPACE = " \t\r\n"
KEYWORDS = {"block", "break", "continue", "define", "else", "end", "if", "range", "nil", "template", "with"}
# token kinds
TEXT, LEFT, RIGHT, SPACE_T, EOF = "text", "{{", "}}", "space", "EOF"
IDENT, FIELD, VAR, DOT, BOOL, NUMBER, STRING, RAW, CHAR, COMPLEX = (
    "identifier", "field", "variable", "dot", "bool", "number", "string", "raw string", "char constant", "complex")
PIPE, LPAREN, RPAREN, ASSIGN, DECLARE, CHARTOK, KEYWORD, COMMENT = (
    "|", "(", ")", "=", ":=", "character", "keyword", "comment")


class LexError(Exception):
    def __init__(self, message, line):
        super().__init__(message)
        self.line = line


class Token:
    __slots__ = ("kind", "val", "pos", "line")

    def __init__(self, kind, val, pos, line):
        self.kind, self.val, self.pos, self.line = kind, val, pos, line

    def __repr__(self):
        return f"Token({self.kind}, {self.val!r}, line {self.line})"

    def describe(self):
        if self.kind == EOF:
            return "EOF"
        if self.kind == KEYWORD:
            return f"<{self.val}>"
        if self.kind in (TEXT, STRING, RAW, NUMBER, IDENT, FIELD, VAR):
            return f'"{self.val}"' if self.kind != STRING else self.val
        return f'"{self.val}"'


def is_alnum(ch):
    return ch == "_" or ch.isalpha() or unicodedata.category(ch) == "Nd" if ch else False


def _left_trim_marker(s, i):
    return s[i:i + 1] == "-" and s[i + 1:i + 2] != "" and s[i + 1] in SPACE


def _right_trim_at(s, i):
    """True when s[i:] is " -}}" (a space, the trim marker, the right delimiter)."""
    return s[i:i + 1] != "" and s[i] in SPACE and s[i + 1:i + 2] == "-" and s.startswith("}}", i + 2)


def tokenize(src, breakable=True):
    """All tokens of `src` (a list ending with EOF). Raises LexError with the line."""
    out = []
    n = len(src)
    pos = 0
    line = 1
    while True:
        # ---- text up to the next "{{"
        j = src.find("{{", pos)
        if j < 0:
            if pos < n:
                out.append(Token(TEXT, src[pos:], pos, line))
                line += src.count("\n", pos)
            out.append(Token(EOF, "", n, line))
            return out
        end_text = j
        if _left_trim_marker(src, j + 2):
            while end_text > pos and src[end_text - 1] in SPACE:
                end_text -= 1
        if end_text > pos:
            out.append(Token(TEXT, src[pos:end_text], pos, line))
        line += src.count("\n", pos, j)
        i = j + 2
        trim = _left_trim_marker(src, i)
        after = i + (2 if trim else 0)
        if src.startswith("/*", after):
            close = src.find("*/", after + 2)
            if close < 0:
                raise LexError("unclosed comment", line)
            k = close + 2
            comment_line = line
            line += src.count("\n", after, k)
            if _right_trim_at(src, k):
                k += 4
                while k < n and src[k] in SPACE:
                    line += src[k] == "\n"
                    k += 1
            elif src.startswith("}}", k):
                k += 2
            else:
                raise LexError("comment ends before closing delimiter", line)
            out.append(Token(COMMENT, src[after:close + 2], after, comment_line))
            pos = k
            continue
        out.append(Token(LEFT, "{{", j, line))
        i = after
        depth = 0
        # ---- inside the action
        while True:
            if i >= n:
                raise LexError("unclosed action", line)
            if _right_trim_at(src, i) or src.startswith("}}", i):
                if depth:
                    raise LexError("unclosed left paren", line)
                trim_right = not src.startswith("}}", i)
                if trim_right:
                    i += 2
                out.append(Token(RIGHT, "}}", i, line))
                i += 2
                if trim_right:
                    while i < n and src[i] in SPACE:
                        line += src[i] == "\n"
                        i += 1
                pos = i
                break
            ch = src[i]
            start = i
            if ch in SPACE:
                while i < n and src[i] in SPACE and not _right_trim_at(src, i):
                    line += src[i] == "\n"
                    i += 1
                if _right_trim_at(src, i) and i == start:
                    continue
                if i > start:
                    out.append(Token(SPACE_T, src[start:i], start, line))
                continue
            if ch == "=":
                out.append(Token(ASSIGN, "=", i, line))
                i += 1
            elif ch == ":":
                if src[i + 1:i + 2] != "=":
                    raise LexError("expected :=", line)
                out.append(Token(DECLARE, ":=", i, line))
                i += 2
            elif ch == "|":
                out.append(Token(PIPE, "|", i, line))
                i += 1
            elif ch == '"':
                i = _scan_quoted(src, i, '"', line)
                out.append(Token(STRING, src[start:i], start, line))
            elif ch == "`":
                close = src.find("`", i + 1)
                if close < 0:
                    raise LexError("unterminated raw quoted string", line)
                i = close + 1
                out.append(Token(RAW, src[start:i], start, line))
                line += src.count("\n", start, i)
            elif ch == "'":
                i = _scan_quoted(src, i, "'", line, what="character constant")
                out.append(Token(CHAR, src[start:i], start, line))
            elif ch == "$":
                i = _scan_name(src, i + 1, line)
                out.append(Token(VAR, src[start:i], start, line))
            elif ch == "." and not (src[i + 1:i + 2].isdigit()):
                i = _scan_name(src, i + 1, line)
                out.append(Token(DOT if i == start + 1 else FIELD, src[start:i], start, line))
            elif ch in "+-." or ch.isdigit():
                i, kind = _scan_number(src, i, line)
                out.append(Token(kind, src[start:i], start, line))
            elif is_alnum(ch):
                while i < n and is_alnum(src[i]):
                    i += 1
                if not _at_terminator(src, i):
                    raise LexError(f"bad character {_char_name(src[i])}", line)
                word = src[start:i]
                if word in KEYWORDS and (breakable or word not in ("break", "continue")):
                    out.append(Token(KEYWORD, word, start, line))
                elif word in ("true", "false"):
                    out.append(Token(BOOL, word, start, line))
                else:
                    out.append(Token(IDENT, word, start, line))
            elif ch == "(":
                out.append(Token(LPAREN, "(", i, line))
                depth += 1
                i += 1
            elif ch == ")":
                depth -= 1
                if depth < 0:
                    raise LexError(f"unexpected right paren {_char_name(ch)}", line)
                out.append(Token(RPAREN, ")", i, line))
                i += 1
            elif ord(ch) < 128 and ch.isprintable():
                out.append(Token(CHARTOK, ch, i, line))
                i += 1
            else:
                raise LexError(f"unrecognized character in action: {_char_name(ch)}", line)


def _char_name(ch):
    return f"U+{ord(ch):04X} '{ch}'" if ch.isprintable() else f"U+{ord(ch):04X}"


def _at_terminator(src, i):
    if i >= len(src):
        return True
    ch = src[i]
    return ch in SPACE or ch in ".,|:()" or src.startswith("}}", i)


def _scan_name(src, i, line):
    n = len(src)
    while i < n and is_alnum(src[i]):
        i += 1
    if not _at_terminator(src, i):
        raise LexError(f"bad character {_char_name(src[i])}", line)
    return i


def _scan_quoted(src, i, quote, line, what="quoted string"):
    n = len(src)
    i += 1
    while True:
        if i >= n or src[i] == "\n":
            raise LexError(f"unterminated {what}", line)
        ch = src[i]
        if ch == "\\":
            if i + 1 >= n or src[i + 1] == "\n":
                raise LexError(f"unterminated {what}", line)
            i += 2
            continue
        i += 1
        if ch == quote:
            return i


def _accept(src, i, chars):
    return i + 1 if i < len(src) and src[i] in chars else i


def _accept_run(src, i, chars):
    while i < len(src) and src[i] in chars:
        i += 1
    return i


def _scan_one_number(src, i):
    i = _accept(src, i, "+-")
    digits = "0123456789_"
    if i < len(src) and src[i] == "0":
        i += 1
        if i < len(src) and src[i] in "xX":
            digits, i = "0123456789abcdefABCDEF_", i + 1
        elif i < len(src) and src[i] in "oO":
            digits, i = "01234567_", i + 1
        elif i < len(src) and src[i] in "bB":
            digits, i = "01_", i + 1
    i = _accept_run(src, i, digits)
    if i < len(src) and src[i] == ".":
        i = _accept_run(src, i + 1, digits)
    if len(digits) == 11 and i < len(src) and src[i] in "eE":
        i = _accept_run(src, _accept(src, i + 1, "+-"), "0123456789_")
    if len(digits) == 23 and i < len(src) and src[i] in "pP":
        i = _accept_run(src, _accept(src, i + 1, "+-"), "0123456789_")
    i = _accept(src, i, "i")
    ok = not (i < len(src) and is_alnum(src[i]))
    return i + (0 if ok else 1), ok


def _scan_number(src, i, line):
    start = i
    i, ok = _scan_one_number(src, i)
    if not ok:
        raise LexError(f"bad number syntax: {src[start:i]!r}".replace("'", '"'), line)
    if i < len(src) and src[i] in "+-":
        i, ok = _scan_one_number(src, i)
        if not ok or src[i - 1] != "i":
            raise LexError(f"bad number syntax: \"{src[start:i]}\"", line)
        return i, COMPLEX
    return i, NUMBER
