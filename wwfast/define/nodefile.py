"""The node file: conf/nodes.yaml (or Warewulf's unmodified nodes.conf), parsed and checked entry by entry.

    read_config(conf_dir, require=False) -> NodeConfig   parse + check each entry (ConfigError on problems)
    parse_config(text, path) -> NodeConfig               the same from text (node edits check a fragment)

A NodeConfig holds the profile and node partials as written (a hostlist key expanded to its ids) and can
say which file keys set a field, so errors found later, after merging (wwfast.define.nodes), still name
the line that caused them.
"""
import contextlib
import gc
import os

from wwfast.define import hostlist
from wwfast.define.merge import get_path
from wwfast.define.schema import NAME_RE, NODE, PROFILE, Normalizer
from wwfast.define.yamlfile import parse, read_text
from wwfast.errors import ConfigError, raise_all

NODE_FILES = ("nodes.yaml", "nodes.conf")  # ours first, else an unmodified Warewulf file
TOP_KEYS = ("nodeprofiles", "nodes")
IGNORED_TOP_KEYS = ("WW_INTERNAL",)  # Warewulf's file-format marker


def nodes_file(conf_dir):
    """The node file in `conf_dir`: nodes.yaml, else nodes.conf, else (new) nodes.yaml."""
    for name in NODE_FILES:
        path = os.path.join(conf_dir, name)
        if os.path.exists(path):
            return path
    return os.path.join(conf_dir, NODE_FILES[0])


class NodeConfig:
    """A parsed node file: profile and node partials plus where each came from."""

    def __init__(self, path, doc, raw):
        self.path = path
        self.doc = doc
        self.raw = raw
        self.profiles = {}   # name -> partial
        self.nodes = {}      # id -> partial (shared by the ids of one hostlist key)
        self.node_keys = {}  # id -> the key as written in the file (maybe a hostlist)
        self.warnings = []   # keys ignored in an unmodified Warewulf nodes.conf (file, line, field)

    def error(self, keys, message):
        return self.doc.error(keys, message)

    def where(self, node_id, expanded, path, item=None):
        """File keys of the entry that sets `path` for a node (the node, else the last profile)."""
        for kind, name, partial in self._entries(node_id, expanded):
            value = get_path(partial, path)
            if value is not None and (item is None or item in value):
                keys = (kind, name) + tuple(path)
                if item is not None and isinstance(value, list):
                    keys += (value.index(item),)
                return keys
        return ("nodes", self.node_keys[node_id]) + tuple(path)

    def _entries(self, node_id, expanded):
        yield "nodes", self.node_keys[node_id], self.nodes[node_id]
        for name in reversed(expanded):
            yield "nodeprofiles", name, self.profiles[name]


@contextlib.contextmanager
def gc_paused():
    """Building ~10^6 small acyclic objects triggers the cycle collector hundreds of
    times, each a walk over everything alive (2-3x the parse time). Pause it, then
    freeze what exists so the next collection does not walk it all once more.
    Frozen objects are still freed by reference counting when dropped."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.freeze()
            gc.enable()


def parse_config(text, path):
    """Parse node-file text; every problem in the entries is reported at once."""
    with gc_paused():
        return _parse_config(text, path)


def _parse_config(text, path):
    doc = parse(text, path)
    config = NodeConfig(path, doc, text)
    data = doc.data
    if data is None:
        return config
    if not isinstance(data, dict):
        raise ConfigError(path, 1, "", "a node file is a mapping with nodeprofiles: and nodes:")
    problems = Normalizer(lenient=os.path.basename(str(path)) == "nodes.conf")
    errors = []
    for key in data:
        if key not in TOP_KEYS and key not in IGNORED_TOP_KEYS:
            problems.unknown((key,), key, TOP_KEYS, ())
    for kind, schema in (("nodeprofiles", PROFILE), ("nodes", NODE)):
        section = data.get(kind)
        if section is None:
            continue
        if not isinstance(section, dict):
            errors.append(doc.error((kind,), "must be a mapping of names"))
            continue
        for key, raw in section.items():
            partial = problems.entity(raw, schema, (kind, key))
            if kind == "nodeprofiles":
                if _check_name(doc, kind, key, key, errors):
                    config.profiles[key] = partial
                continue
            try:
                ids = hostlist.expand(key) if hostlist.is_pattern(key) else [key]
            except hostlist.HostlistError as e:
                errors.append(doc.error((kind, key), f"bad hostlist: {e}"))
                continue
            for node_id in ids:
                if not _check_name(doc, kind, key, node_id, errors):
                    continue
                if node_id in config.nodes:
                    first = config.node_keys[node_id]
                    errors.append(doc.error((kind, key), f'node "{node_id}" is defined twice (also by "{first}")'))
                    continue
                config.nodes[node_id] = partial
                config.node_keys[node_id] = key
    errors.extend(doc.error(keys, message) for keys, message in problems.problems)
    raise_all(errors)
    config.warnings = [str(doc.error(keys, message)) for keys, message in problems.ignored]
    return config


def _check_name(doc, kind, key, name, errors):
    what = "profile" if kind == "nodeprofiles" else "node"
    if not str(name).strip():
        errors.append(doc.error((kind, key), f"empty {what} name"))
        return False
    if not NAME_RE.match(name):
        errors.append(doc.error((kind, key), f'bad {what} name "{name}": use letters, digits, "_", ".", "-", ":"'))
        return False
    return True


def read_config(conf_dir, require=False):
    """Read the node file of `conf_dir`. A missing one is an empty config (a node edit starts one),
    unless `require`: then a missing directory or node file is a ConfigError naming the path."""
    path = nodes_file(conf_dir)
    if not os.path.exists(path):
        if require:
            if not os.path.isdir(conf_dir):
                raise ConfigError(conf_dir, None, "", "the configuration directory does not exist")
            raise ConfigError(path, None, "", f"no node file (looked for {' or '.join(NODE_FILES)} in {conf_dir})")
        return parse_config("", path)
    return parse_config(read_text(path), path)
