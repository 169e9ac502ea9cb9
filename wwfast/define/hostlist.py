"""Hostlist expressions, as Warewulf reads them: `n[001-100,105]`, `r[1-2]n[1-3]`, `a,b[1-2]`.

Rules (Warewulf internal/pkg/hostlist): a bracket holds comma-separated numbers
or ranges `lo-hi`; a range keeps the width of its lower bound when that has a
leading zero (`[01-10]` → 01..10); several brackets in one name multiply out
(left to right); commas outside brackets separate whole expressions. Globs and
regular expressions are not hostlists.
"""
import re


class HostlistError(ValueError):
    """A malformed hostlist expression."""


MAX_NAMES = 1_000_000  # a typo like n[1-999999999] must not eat all memory


def _split_top_level(text):
    """Split on commas that are outside brackets."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
            if depth > 1:
                raise HostlistError(f'"{text}": brackets cannot nest')
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise HostlistError(f'"{text}": "]" without "["')
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise HostlistError(f'"{text}": "[" without "]"')
    parts.append(text[start:])
    return parts


_RANGE = re.compile(r"(\d+)(?:-(\d+))?$")


def _bracket_values(body, whole):
    values = []
    for item in body.split(","):
        item = item.strip()
        m = _RANGE.match(item)
        if not m:
            raise HostlistError(f'"{whole}": "{item}" is not a number or a range lo-hi')
        lo_text, hi_text = m.group(1), m.group(2)
        lo = int(lo_text)
        hi = lo if hi_text is None else int(hi_text)
        if hi < lo:
            raise HostlistError(f'"{whole}": range {item} runs backwards')
        if hi - lo >= MAX_NAMES:
            raise HostlistError(f'"{whole}": range {item} is too large')
        width = len(lo_text) if lo_text.startswith("0") and len(lo_text) > 1 else 0
        values.extend(str(n).zfill(width) for n in range(lo, hi + 1))
    return values


def _expand_one(expr):
    names = [""]
    pos = 0
    while pos < len(expr):
        open_at = expr.find("[", pos)
        if open_at < 0:
            literal, pos = expr[pos:], len(expr)
            names = [n + literal for n in names]
            break
        close_at = expr.index("]", open_at)
        literal = expr[pos:open_at]
        values = _bracket_values(expr[open_at + 1:close_at], expr)
        if len(names) * len(values) > MAX_NAMES:
            raise HostlistError(f'"{expr}" expands to too many names')
        names = [n + literal + v for n in names for v in values]
        pos = close_at + 1
    return names


def expand(text):
    """Expand a hostlist expression into names, in the order written, without duplicates."""
    if not isinstance(text, str):
        raise HostlistError(f"a hostlist must be text, not {type(text).__name__}")
    seen, result = set(), []
    for part in _split_top_level(text.strip()):
        part = part.strip()
        if not part:
            raise HostlistError(f'"{text}": empty name')
        for name in _expand_one(part):
            if name not in seen:
                seen.add(name)
                result.append(name)
    return result


def expand_all(texts):
    """Expand several expressions (e.g. command-line arguments) into one ordered list."""
    seen, result = set(), []
    for text in texts:
        for name in expand(text):
            if name not in seen:
                seen.add(name)
                result.append(name)
    return result


def is_pattern(text):
    return "[" in text or "," in text


_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")


def _ranges(numbers):
    numbers = sorted(set(numbers))
    runs, start, prev = [], numbers[0], numbers[0]
    for n in numbers[1:]:
        if n != prev + 1:
            runs.append((start, prev))
            start = n
        prev = n
    runs.append((start, prev))
    return runs


def compress(names):
    """The shortest sorted hostlist for `names`, e.g. [n001..n100, n105] → "n[001-100,105]".

    Names are grouped by their text around the last number; zero-padded numbers
    stay in a group of their own width, so expand(compress(x)) == sorted set of x.
    """
    groups, plain = {}, set()
    for name in set(names):
        m = _LAST_NUMBER.match(name)
        if not m or "[" in name or "," in name:
            plain.add(name)
            continue
        prefix, digits, suffix = m.groups()
        padded = len(digits) > 1 and digits.startswith("0")
        groups.setdefault((prefix, suffix, len(digits) if padded else 0), []).append(digits)
    # An unpadded number as wide as a padded group (n100 beside n099) joins it.
    for (prefix, suffix, width), digits in list(groups.items()):
        if width == 0:
            keep = []
            for d in digits:
                key = (prefix, suffix, len(d))
                (groups[key] if key in groups else keep).append(d)
            groups[(prefix, suffix, 0)] = keep
    parts = [(name, name) for name in plain]
    for (prefix, suffix, width), digits in groups.items():
        if not digits:
            continue
        if len(digits) == 1:
            parts.append((prefix + digits[0] + suffix, prefix + digits[0] + suffix))
            continue
        items = []
        for lo, hi in _ranges(int(d) for d in digits):
            lo_s, hi_s = str(lo).zfill(width), str(hi).zfill(width)
            items.append(lo_s if lo == hi else f"{lo_s}-{hi_s}")
        first = prefix + str(min(int(d) for d in digits)).zfill(width) + suffix
        parts.append((first, f"{prefix}[{','.join(items)}]{suffix}"))
    return ",".join(text for _, text in sorted(parts, key=lambda p: _natural_key(p[0])))


def _natural_key(name):
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", name)]
