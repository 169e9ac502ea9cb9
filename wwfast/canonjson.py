"""Canonical JSON, byte-identical to json.dumps(obj, sort_keys=True, indent=1), but fast.

Why: with `indent` set, the standard library falls back to its pure-Python
encoder (~1.7 s for 10,000 nodes). nodes.json shares subtrees between nodes
(everything a node inherits from its profiles is one object), so this encoder
memoises the text of each container by (id, depth) and encodes a shared
subtree once. Only valid while `obj` is alive and unchanged (ids are unique).
"""
from json.encoder import encode_basestring_ascii as _str

_CONST = {True: "true", False: "false", None: "null"}


def _float(value):
    if value != value:
        return "NaN"
    if value == float("inf"):
        return "Infinity"
    if value == -float("inf"):
        return "-Infinity"
    return float.__repr__(value)


def dumps(obj):
    memo = {}

    def enc(value, depth):
        if isinstance(value, str):
            return _str(value)
        if value is None or value is True or value is False:
            return _CONST[value]
        if isinstance(value, int):
            return int.__repr__(value)
        if isinstance(value, float):
            return _float(value)
        key = (id(value), depth)
        text = memo.get(key)
        if text is not None:
            return text
        inner = "\n" + " " * (depth + 1)
        if isinstance(value, dict):
            if not value:
                text = "{}"
            else:
                items = sorted(value.items())
                text = "{" + inner + ("," + inner).join(
                    _key(k) + ": " + enc(v, depth + 1) for k, v in items) + "\n" + " " * depth + "}"
        elif isinstance(value, (list, tuple)):
            if not value:
                text = "[]"
            else:
                text = "[" + inner + ("," + inner).join(enc(v, depth + 1) for v in value) + "\n" + " " * depth + "]"
        else:
            raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
        memo[key] = text
        return text

    return enc(obj, 0)


def _key(k):
    if isinstance(k, str):
        return _str(k)
    raise TypeError(f"keys must be str, not {type(k).__name__}")
