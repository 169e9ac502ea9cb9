"""Output helpers for `list` commands: aligned tables, YAML/JSON, field/source rows."""
import json

import yaml


def print_table(headers, rows, out=print):
    rows = [[("--" if v in ("", None) else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    out("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for row in rows:
        out("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip())


def print_json(data, out=print):
    out(json.dumps(data, sort_keys=True, indent=2))


class _PlainDumper(yaml.SafeDumper):
    """No &anchors: merged nodes share inherited subtrees, but readers want them spelled out."""

    def ignore_aliases(self, data):
        return True


def print_yaml(data, out=print):
    out(yaml.dump(data, Dumper=_PlainDumper, sort_keys=True, default_flow_style=False, width=4096).rstrip())


def flatten(value, prefix=""):
    """(dotted field, text) leaves of a resolved entry; resources stay whole per key."""
    if isinstance(value, dict) and value and prefix.count(".") < 4 and not prefix.startswith("resources."):
        for key in sorted(value):
            yield from flatten(value[key], f"{prefix}.{key}" if prefix else key)
    elif isinstance(value, list):
        yield prefix, ",".join(v if isinstance(v, str) else json.dumps(v, sort_keys=True) for v in value)
    elif isinstance(value, dict):
        yield prefix, json.dumps(value, sort_keys=True) if value else ""
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, "" if value is None else str(value)


def source_rows(resolved, sources, skip=("id",)):
    """[field, source, value] rows: the source is the profile (or "node") that set it, "--" if none."""
    rows = []
    for field, text in flatten(resolved):
        if field in skip:
            continue
        source = sources.get(field)
        if source is None:  # a map merged key by key records its keys' sources
            source = next((s for f, s in sources.items() if field.startswith(f + ".")), "--")
        rows.append([field, source, text])
    return rows


MASK = "********"


def mask_secrets(data):
    """A copy of node/profile data with BMC passwords masked (lists show them only when asked)."""
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key == "ipmi" and isinstance(value, dict) and value.get("password"):
                value = dict(value, password=MASK)
            out[key] = mask_secrets(value)
        return out
    if isinstance(data, list):
        return [mask_secrets(v) for v in data]
    return data
