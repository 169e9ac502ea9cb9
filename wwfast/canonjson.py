"""Canonical JSON, byte-identical to json.dumps(obj, sort_keys=True, indent=1), but fast.

Why: with `indent` set, the standard library falls back to its pure-Python
encoder (~1 s for 10,000 nodes). nodes.json shares subtrees between nodes
(everything a node inherits from its profiles is one object), so this encoder
memoises the text of each container by (id, depth) and encodes a shared
subtree once; dicts with the same keys (every node has the same fields) reuse
one sorted key order with the key text already encoded. The memo is only
valid while `obj` is alive and unchanged, i.e. within one call.
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


def _scalar(value):
    if value is None or value is True or value is False:
        return _CONST[value]
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        return _float(value)
    return None


def dumps(obj):
    memo = {}    # (id, depth) -> text of a container
    orders = {}  # (keys tuple, depth) -> [(key, '\n<indent>"key": ')] in sorted key order

    def enc(value, depth):
        kind = type(value)
        if kind is str:
            return _str(value)
        if kind is not dict and kind is not list and kind is not tuple:
            text = _scalar(value)
            if text is None:
                raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
            return text
        key = (id(value), depth)
        text = memo.get(key)
        if text is not None:
            return text
        if not value:
            text = "{}" if kind is dict else "[]"
        elif kind is dict:
            keys = tuple(value)
            order = orders.get((keys, depth))
            if order is None:
                for k in keys:
                    if type(k) is not str:
                        raise TypeError(f"keys must be str, not {type(k).__name__}")
                pad = "\n" + " " * (depth + 1)
                order = orders[(keys, depth)] = [(k, pad + _str(k) + ": ") for k in sorted(keys)]
            parts = []
            for k, prefix in order:
                item = value[k]
                parts.append(prefix + (_str(item) if type(item) is str else enc(item, depth + 1)))
            text = "{" + ",".join(parts) + "\n" + " " * depth + "}"
        else:
            pad = "\n" + " " * (depth + 1)
            text = "[" + ",".join(pad + (_str(v) if type(v) is str else enc(v, depth + 1)) for v in value) \
                + "\n" + " " * depth + "]"
        memo[key] = text
        return text

    return enc(obj, 0)
