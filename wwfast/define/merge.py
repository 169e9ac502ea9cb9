"""Profile expansion and merging, with Warewulf's rules (reference A1).

- A node's `profiles` expand depth-first, a profile's own parents before it;
  a profile seen twice counts once; a profile that reaches itself is an error.
  `~name` anywhere in the expanded list drops `name`.
- Merge order: profiles in that order, then the node. Scalars: the last one
  set wins (the node beats every profile). Lists are appended, then `~item`
  removes every `item`. Maps (tags, network devices, ipmi, disks, ...) merge by
  key, recursively. `resources` merge deeply: maps by key, lists appended.
- `comment` is not inherited from profiles.

Merging works on partials (only the fields an entry sets) and never mutates
its inputs: a subtree that only one side sets is shared, not copied, so 10,000
nodes over the same profiles cost one profile merge plus a small per-node one.
"""
from wwfast.define.schema import ANY, LIST, MAP, Named


class ProfileError(Exception):
    """A missing or cyclic profile; `chain` is the path of profile names that led there."""

    def __init__(self, message, chain):
        super().__init__(message)
        self.chain = chain


def expand_profiles(names, profile_lists):
    """The ordered, deduplicated profile list for a node's `profiles` entries.

    `profile_lists` maps each profile to its own `profiles` list (raw, may hold `~name`).
    """
    order, done, negated = [], set(), set()

    def visit(name, stack):
        if name.startswith("~"):
            negated.add(name[1:])
            return
        if name in stack:
            cycle = " -> ".join(stack[stack.index(name):] + [name])
            raise ProfileError(f"profile cycle: {cycle}", stack + [name])
        if name in done:
            return
        if name not in profile_lists:
            raise ProfileError(f'profile "{name}" does not exist', stack + [name])
        for parent in profile_lists[name]:
            visit(parent, stack + [name])
        done.add(name)
        order.append(name)

    for name in names:
        visit(name, [])
    return [p for p in order if p not in negated]


def merge(base, over, schema):
    """Merge partial `over` onto partial `base` (both dicts of fields) by `schema`."""
    if not base:
        return over
    if not over:
        return base
    result = dict(base)
    for key, value in over.items():
        if key in base:
            result[key] = merge_value(base[key], value, schema.get(key))
        else:
            result[key] = value
    return result


def merge_value(base, over, kind):
    if isinstance(kind, dict):
        return merge(base, over, kind)
    if isinstance(kind, Named):
        result = dict(base)
        for name, sub in over.items():
            result[name] = merge(base[name], sub, kind.schema) if name in base else sub
        return result
    if kind == LIST:
        return base + over
    if kind == MAP:
        return {**base, **over}
    if kind == ANY:
        return deep_merge(base, over)
    return over


def deep_merge(base, over):
    """`resources`: maps merge by key, lists append (profile first), scalars: `over` wins."""
    if isinstance(base, dict) and isinstance(over, dict):
        result = dict(base)
        for key, value in over.items():
            result[key] = deep_merge(base[key], value) if key in base else value
        return result
    if isinstance(base, list) and isinstance(over, list):
        return base + over
    return over


def clean_list(items):
    """Warewulf cleanList: drop `~x` entries and every `x` they name."""
    if not any(i.startswith("~") for i in items):
        return items
    negated = {i[1:] for i in items if i.startswith("~")}
    return [i for i in items if not i.startswith("~") and i not in negated]


def get_path(partial, path):
    """The value at `path` in a partial, or None."""
    value = partial
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value
