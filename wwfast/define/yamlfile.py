"""Fast YAML loading with line numbers, YAML 1.2 scalars, and clear errors.

Why not yaml.safe_load: it resolves scalars by YAML 1.1 rules, so an unquoted
MAC such as 52:54:00:00:00:01 becomes a base-60 integer and `yes` a boolean.
Warewulf reads its files with a YAML 1.2-style parser (go-yaml v3), so we use
the YAML 1.2 core schema (true/false, null, decimal/0o/0x ints, floats; all
else is a string). libyaml composes the node tree in C; we keep that tree to
find the line of any key when an error must be reported, and construct plain
Python data from it ourselves (faster than PyYAML's constructor).
"""
import re

import yaml
from yaml.nodes import MappingNode, ScalarNode, SequenceNode

from wwfast.errors import ConfigError

try:
    from yaml._yaml import CParser as _Parser
except ImportError:  # PyYAML without libyaml: same API, slower
    from yaml.composer import Composer
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Parser(Reader, Scanner, Parser, Composer):
        def __init__(self, stream):
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            Composer.__init__(self)

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)$")
_INT_BASE = re.compile(r"0o[0-7]+$|0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$"
                    r"|[-+]?\.(?:inf|Inf|INF)$|\.(?:nan|NaN|NAN)$")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_NULLS = {"", "~", "null", "Null", "NULL"}
_NUMBER_START = frozenset("0123456789+-.")


class _Composer(_Parser):
    """Compose only: tags are settled by _scalar below, not by PyYAML's resolver."""

    def resolve(self, kind, value, implicit):
        return "tag:yaml.org,2002:str" if kind is ScalarNode else ""

    def descend_resolver(self, *args):
        pass

    def ascend_resolver(self, *args):
        pass


def _scalar(node):
    value = node.value
    if node.style:  # quoted or block scalars are always strings
        return value
    if value in _NULLS:
        return None
    if value[0] in _NUMBER_START:
        if _INT.match(value):
            return int(value)
        if _INT_BASE.match(value):
            return int(value, 0)
        if _FLOAT.match(value):
            if value.lower().lstrip("+-") in (".inf", ".nan"):
                return float(value.replace(".", "", 1))
            return float(value)
    flag = _BOOLS.get(value)
    return value if flag is None else flag


class Document:
    """Parsed YAML data plus its node tree, for locating keys by path."""

    def __init__(self, path, data, root):
        self.path = path
        self.data = data
        self.root = root

    def line_of(self, keys):
        """1-based line of the deepest key of `keys` that exists (None if none)."""
        node, line = self.root, None
        for key in keys:
            if isinstance(node, MappingNode):
                for k, v in node.value:
                    if isinstance(k, ScalarNode) and k.value == key:
                        line, node = k.start_mark.line + 1, v
                        break
                else:
                    return line
            elif isinstance(node, SequenceNode) and isinstance(key, int) and 0 <= key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                return line
        return line

    def error(self, keys, message):
        """A ConfigError for the field at `keys` (a path of keys and list indexes)."""
        return ConfigError(self.path, self.line_of(keys), dotted(keys), message)


def dotted(keys):
    return ".".join(str(k) for k in keys)


def _construct(node, path):
    if isinstance(node, ScalarNode):
        return _scalar(node)
    if isinstance(node, SequenceNode):
        return [_construct(item, path) for item in node.value]
    result = {}
    merges = []
    for key_node, value_node in node.value:
        if not isinstance(key_node, ScalarNode):
            raise ConfigError(path, key_node.start_mark.line + 1, "", "a mapping key must be a plain value")
        key = key_node.value
        if key == "<<" and not key_node.style:  # YAML merge key, as go-yaml supports it
            sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
            merges.extend(_construct(s, path) for s in sources)
            continue
        if key in result:
            raise ConfigError(path, key_node.start_mark.line + 1, key, f'key "{key}" is defined twice')
        result[key] = _construct(value_node, path)
    for extra in merges:
        if not isinstance(extra, dict):
            raise ConfigError(path, node.start_mark.line + 1, "<<", "a merge key needs a mapping")
        for key, value in extra.items():
            result.setdefault(key, value)
    return result


def parse(text, path):
    """Parse YAML text; raise ConfigError(path, line, ...) on a syntax error."""
    try:
        parser = _Composer(text)
        root = parser.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else None
        problem = " ".join(p for p in (e.context, e.problem) if p)
        raise ConfigError(path, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise ConfigError(path, None, "", f"YAML error: {e}") from None
    data = None if root is None else _construct(root, path)
    return Document(path, data, root)


def decode(raw, path):
    """UTF-8 text of a file's bytes; ConfigError with the line of a bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ConfigError(path, line, "", "file is not valid UTF-8") from None


def read_text(path):
    with open(path, "rb") as f:
        return decode(f.read(), path)
