"""Whole node/profile entries as YAML text: export, import, edit in $EDITOR, and the review of a change.

    text = export_text(conf, "nodes", ["n[1-4]"])            # a node-file fragment: nodes: {n1: ...}
    edit_entries(conf, "nodes", ["n1"], ask, known)          # $EDITOR on that fragment until it validates
    import_entries(conf, text, path, confirm, known)         # add or replace entries from a fragment
    describe_change(old_text, new_text) -> ["n1: image name: demo -> other", ...]

Every write goes through nodeedit.edit (lock, comment-keeping round trip, define's validation, atomic
replace); `known` is {"images": names, "overlays": names} as wwfast.commands.fields.known_names gives it. A fragment is itself node-file shaped, so its problems are reported at its own lines.
"""
import io
import os
import tempfile

from ruamel.yaml.comments import CommentedMap

from wwfast.define import nodeedit, nodefile
from wwfast.define.select import select
from wwfast.define.yamlfile import parse, read_text
from wwfast.editor import run_editor
from wwfast.errors import ConfigError, ConfigErrors, UsageError

WHAT = {"nodes": "node", "nodeprofiles": "profile"}
HEADER = """\
# {what} entries from {path}: edit, add or remove entries, save and quit.
# The whole node file is checked as the define stage checks it before anything is written;
# an entry removed here is deleted. Quit without saving to change nothing.
"""


MASK = "********"


def _leaves(value, prefix=""):
    """(dotted field, value) of an entry's scalars and lists, for showing a change."""
    if isinstance(value, dict) and value:
        for key in sorted(value):
            yield from _leaves(value[key], f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        yield prefix, ",".join(str(v) for v in value)
    else:
        yield prefix, "" if value is None or value == {} else str(value)


def _current(conf_dir):
    path = nodefile.nodes_file(conf_dir)
    text = read_text(path) if os.path.exists(path) else ""
    return path, text


def _selected(doc, section, patterns):
    """Entry keys of `section` picked by `patterns` (node ids by hostlist/glob, profiles by name or glob)."""
    ids = list(doc.names(section))
    return select(patterns, ids) if patterns else ids


def fragment(doc, section, names):
    """{section: {name: entry}} as round-trip YAML text (comments inside the entries kept)."""
    entries = CommentedMap()
    for name in names:
        entries[name] = doc.entry(section, name)
    out = io.StringIO()
    nodeedit._yaml().dump(CommentedMap([(section, entries)]), out)
    return out.getvalue()


def export_text(conf_dir, section, patterns):
    path, text = _current(conf_dir)
    doc = nodeedit.NodeDoc(nodeedit._yaml().load(text) if text else None)
    return fragment(doc, section, _selected(doc, section, patterns))


def _parse_fragment(text, path):
    """The fragment's entries {section: CommentedMap}; ConfigError at the fragment's own lines."""
    nodefile.parse_config(text, path)  # schema of every entry, names, hostlists: file:line of the fragment
    data = nodeedit._yaml().load(text) if text.strip() else None
    if data is None:
        return {}
    return {section: data.get(section) or CommentedMap() for section in nodeedit.SECTIONS if section in data}


def _replace(doc, section, old_names, entries):
    """Put `entries` in place of `old_names`: kept names stay where they were, new ones follow."""
    sec = doc.section(section)
    for name in old_names:
        doc.entry(section, name)  # splits a hostlist key first
    for name in old_names:
        if name not in entries:
            del sec[name]
    for name, value in entries.items():
        if name in sec or name not in doc.names(section):
            sec[name] = value if value is not None else CommentedMap()
        else:
            raise UsageError(f'{WHAT[section]} "{name}" already exists outside what was edited')


def _locate(errors, frag_path, frag_text, section, names):
    """Errors of the merged file that concern edited entries, re-pointed at the fragment's lines."""
    frag = parse(frag_text, frag_path)
    out = []
    for e in getattr(errors, "errors", [errors]):
        keys = None
        if e.field.startswith(section + "."):
            rest = e.field[len(section) + 1:]
            for name in sorted(names, key=len, reverse=True):
                if rest == name or rest.startswith(name + "."):
                    keys = [section, name] + [k for k in rest[len(name) + 1:].split(".") if k]
                    break
        line = frag.line_of(keys) if keys else None
        out.append(ConfigError(frag_path, line, e.field, e.message) if line else e)
    return ConfigErrors(out) if len(out) > 1 else out[0]


def describe_change(old_text, new_text, path="nodes"):
    """Human lines for what differs between two node files: entries added/removed, fields changed."""
    old, new = nodefile.parse_config(old_text, path), nodefile.parse_config(new_text, path)
    lines = []
    for section, before, after in (("nodeprofiles", old.profiles, new.profiles), ("nodes", old.nodes, new.nodes)):
        what = WHAT[section]
        for name in sorted(set(before) | set(after)):
            if name not in after:
                lines.append(f"{what} {name}: removed")
            elif name not in before:
                lines.append(f"{what} {name}: added")
            elif before[name] != after[name]:
                a, b = dict(_leaves(before[name])), dict(_leaves(after[name]))
                for field in sorted(set(a) | set(b)):
                    if a.get(field) != b.get(field):
                        show = [MASK if field.endswith("password") and v else (v or "(unset)")
                                for v in (a.get(field), b.get(field))]
                        lines.append(f"{what} {name}: {field}: {show[0]} -> {show[1]}")
    return lines


def reviewer(confirm):
    """A nodeedit review hook: print the change, then ask `confirm(question)`."""
    def review(old_text, new_text):
        lines = describe_change(old_text, new_text)
        for line in lines:
            print(f"  {line}")
        if not lines:
            print("  (no change)")
            return True
        return confirm(f"Write {len(lines)} change{'s' if len(lines) != 1 else ''}?")
    return review


def import_entries(conf_dir, text, path, confirm, known):
    """Add or replace the entries of a fragment file; returns {section: [names]}."""
    entries = _parse_fragment(text, path)
    if not entries:
        raise UsageError(f"{path}: no nodes: or nodeprofiles: entries to import")

    def change(doc):
        for section, values in entries.items():
            for name, value in values.items():
                if name in doc.names(section):
                    doc.entry(section, name)  # split a hostlist key that holds it
                doc.section(section)[name] = value if value is not None else CommentedMap()
        return {section: list(values) for section, values in entries.items()}

    return nodeedit.edit(conf_dir, change, **known, review=reviewer(confirm))


def edit_entries(conf_dir, section, patterns, ask, known, editor=None, log=print):
    """$EDITOR on the selected entries until they validate (or `ask` says stop); returns the change lines."""
    path, original = _current(conf_dir)
    doc = nodeedit.NodeDoc(nodeedit._yaml().load(original) if original else None)
    names = _selected(doc, section, patterns)
    text = HEADER.format(what=WHAT[section], path=path) + fragment(doc, section, names)
    changed = []

    def review(old_text, new_text):
        changed.extend(describe_change(old_text, new_text, path))
        return True

    with tempfile.TemporaryDirectory(prefix="wwfast-edit.") as tmp:  # mode 0700: entries hold passwords
        frag_path = os.path.join(tmp, f"{WHAT[section]}s.yaml")
        with open(frag_path, "w") as f:
            f.write(text)
        while True:
            run_editor(frag_path, editor)
            edited = read_text(frag_path)
            if edited == text:
                log(f"{WHAT[section]} edit: no change")
                return []
            try:
                parsed = _parse_fragment(edited, frag_path)
                if set(parsed) - {section}:
                    raise UsageError(f"{frag_path}: only {section}: entries can be edited here")
                entries = parsed.get(section, CommentedMap())

                def change(doc):
                    if _current(conf_dir)[1] != original:  # we hold the lock: nobody writes meanwhile
                        raise UsageError(f"{path} was changed by someone else during the edit: nothing written")
                    _replace(doc, section, names, entries)

                try:
                    nodeedit.edit(conf_dir, change, **known, review=review)
                except nodeedit.RejectedEdit as e:
                    raise _locate(e.error, frag_path, edited, section, list(entries) + names) from None
                return changed
            except (ConfigError, UsageError) as e:
                log(str(e))
                if "someone else" in str(e) or not ask("Edit again?"):
                    raise UsageError(f"nothing written to {path}") from None
                text = edited
