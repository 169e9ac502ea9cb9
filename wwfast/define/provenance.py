"""Where each field of a node or profile came from: the profile that set it, or the node itself
(`wwfast node list --all`, `wwfast profile list --all`).
"""
from wwfast.define.merge import expand_profiles, merge
from wwfast.define.nodes import finalize, profile_lists
from wwfast.define.schema import ANY, MAP, NODE, PROFILE, Named
from wwfast.define.yamlfile import dotted


def _leaves(partial, schema, prefix=()):
    for key, value in partial.items():
        kind = schema.get(key) if isinstance(schema, dict) else None
        path = prefix + (key,)
        if isinstance(kind, dict):
            yield from _leaves(value, kind, path)
        elif kind in (MAP, ANY) and isinstance(value, dict):  # merged key by key
            for name, sub in value.items():
                yield path + (name,), sub
        elif isinstance(kind, Named):
            for name, sub in value.items():
                yield from _leaves(sub, kind.schema, path + (name,)) if sub else iter([(path + (name,), sub)])
        else:
            yield path, value


def field_sources(config, node_id):
    """{dotted field: source} for every field the node or its profiles set.

    The source is the profile name, or "node"; a list built from several entries
    names them all ("default+node").
    """
    expanded = expand_profiles(config.nodes[node_id].get("profiles", ()), profile_lists(config))
    return _sources(config, expanded, config.nodes[node_id], "node")


def _sources(config, expanded, own, own_label):
    sources = {}
    entries = [(name, config.profiles[name]) for name in expanded] + [(own_label, own)]
    for label, partial in entries:
        for path, value in _leaves(partial, NODE):
            if path in (("comment",), ("profiles",)) and label != own_label:
                continue
            field = dotted(path)
            if isinstance(value, list) and field in sources:
                sources[field] = sources[field] + "+" + label
            else:
                sources[field] = label
    return sources


def resolve_profile(config, name):
    """(a profile merged with its own parents as a node would see it, {field: source})."""
    own = config.profiles[name]
    parents = expand_profiles(own.get("profiles", ()), profile_lists(config))
    merged = {}
    for parent in parents:
        merged = merge(merged, config.profiles[parent], PROFILE)
    merged = {k: v for k, v in merged.items() if k not in ("comment", "profiles")}
    view = finalize(name, merge(merged, own, PROFILE), parents, own.get("comment", ""))
    del view["id"]
    return view, _sources(config, parents, own, name)
