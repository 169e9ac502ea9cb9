"""Edit the node file in place: locked, comment-keeping, validated, atomic.

`edit(conf_dir, change, images, overlays)` holds CONF/.nodes.lock, loads the node file
with ruamel.yaml's round-trip mode (comments, key order and quoting survive),
lets `change(doc)` modify it, re-validates the result exactly as the define
stage would, and only then replaces the file atomically. Two concurrent edits
serialise on the lock, so neither is lost.
"""
import copy
import io
import os

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from wwfast.define import hostlist, nodefile, nodes
from wwfast.errors import ConfigError, UsageError
from wwfast.fsutil import atomic_write, locked
from wwfast.define.yamlfile import read_text

SECTIONS = ("nodeprofiles", "nodes")


class RejectedEdit(ConfigError):
    """The edited file would not validate; it was left as it was."""

    def __init__(self, error, path):
        self.error = error
        self.path = path
        super().__init__(error.file, error.line, error.field, error.message)

    def __str__(self):
        return f"{self.error}\n(the change was refused; {self.path} is unchanged)"


def _yaml():
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # never re-wrap long flow lists
    y.indent(mapping=2, sequence=4, offset=2)  # go-yaml's layout, as in Warewulf's nodes.conf
    return y


def lock_path(conf_dir):
    return os.path.join(conf_dir, ".nodes.lock")


class NodeDoc:
    """The round-trip document with helpers to find and change entries."""

    def __init__(self, data):
        self.data = data if isinstance(data, CommentedMap) else CommentedMap()
        for section in SECTIONS:
            if not isinstance(self.data.get(section), CommentedMap):
                if section in self.data and self.data[section] not in (None, {}):
                    raise UsageError(f"{section}: is not a mapping; fix the file by hand first")
                self.data[section] = CommentedMap()

    def section(self, name):
        return self.data[name]

    def names(self, section):
        """{id: key as written} (node keys may be hostlists)."""
        out = {}
        for key in self.data[section]:
            ids = hostlist.expand(key) if section == "nodes" and hostlist.is_pattern(key) else [key]
            for name in ids:
                out.setdefault(name, key)
        return out

    def entry(self, section, name):
        """The entry of one node/profile, split out of a hostlist key if need be."""
        sec = self.data[section]
        key = self.names(section).get(name)
        if key is None:
            raise UsageError(f'{"profile" if section == "nodeprofiles" else "node"} "{name}" does not exist')
        if key != name:
            self._explode(sec, key)
        if sec[name] is None:
            sec[name] = CommentedMap()
        return sec[name]

    @staticmethod
    def _explode(sec, key):
        """Replace a hostlist key by one entry per node, in place, so one node can change alone."""
        position = list(sec.keys()).index(key)
        value = sec[key]
        del sec[key]
        for offset, name in enumerate(hostlist.expand(key)):
            sec.insert(position + offset, name, copy.deepcopy(value) if value is not None else CommentedMap())

    def add(self, section, name):
        if name in self.names(section):
            raise UsageError(f'{"profile" if section == "nodeprofiles" else "node"} "{name}" already exists')
        self.data[section][name] = CommentedMap()
        return self.data[section][name]

    def delete(self, section, name):
        self.entry(section, name)  # splits a hostlist key first
        del self.data[section][name]


def set_path(entry, path, value):
    """Set entry[path...] = value, creating maps on the way; lists are written in flow style."""
    for key in path[:-1]:
        if not isinstance(entry.get(key), dict):
            entry[key] = CommentedMap()
        entry = entry[key]
    if isinstance(value, list):
        seq = CommentedSeq(value)
        seq.fa.set_flow_style()
        value = seq
    elif isinstance(value, str) and path[-1] == "hwaddr":
        value = DoubleQuotedScalarString(value)  # also safe for YAML 1.1 readers
    entry[path[-1]] = value


def get_path(entry, path):
    for key in path:
        if not isinstance(entry, dict) or key not in entry:
            return None
        entry = entry[key]
    return entry


def unset_path(entry, path):
    """Remove entry[path...]; empty parent maps go too. Returns True if something was removed."""
    parents = []
    for key in path[:-1]:
        if not isinstance(entry, dict) or not isinstance(entry.get(key), dict):
            return False
        parents.append((entry, key))
        entry = entry[key]
    if not isinstance(entry, dict) or path[-1] not in entry:
        return False
    del entry[path[-1]]
    for parent, key in reversed(parents):
        if parent[key]:
            break
        del parent[key]
    return True


def validate_text(text, path, images=None, overlays=None):
    """The checks of the define stage, on text not yet written (names checked against `images`/`overlays`)."""
    config = nodefile.parse_config(text, path)
    return nodes.resolve(config, images, overlays)


def edit(conf_dir, change, images=None, overlays=None, review=None):
    """Apply change(NodeDoc) to the node file under the lock; returns change's result.

    `images` / `overlays`: the names that exist (wwfast.builder.inventory), checked as define checks them.
    `review(old_text, new_text) -> bool`, when given, sees the validated result before it is written
    (to show it and ask); False writes nothing (UsageError)."""
    os.makedirs(conf_dir, exist_ok=True)
    with locked(lock_path(conf_dir), what="another node file edit"):
        path = nodefile.nodes_file(conf_dir)
        y = _yaml()
        if os.path.exists(path):
            text = read_text(path)
            nodefile.parse_config(text, path)  # refuse to edit a file that is already broken
            data = y.load(text)
        else:
            text, data = "", None
        doc = NodeDoc(data)
        result = change(doc)
        out = io.StringIO()
        y.dump(doc.data, out)
        new_text = out.getvalue()
        try:
            validate_text(new_text, path, images, overlays)
        except ConfigError as e:
            raise RejectedEdit(e, path) from None
        if review is not None and not review(text, new_text):
            raise UsageError(f"nothing written: {path} is unchanged")
        atomic_write(path, new_text)
        return result
