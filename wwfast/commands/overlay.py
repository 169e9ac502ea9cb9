"""`wwfast overlay list|show|build|create|delete|edit|import|mkdir|chmod|chown|info`.

    wwfast overlay list [--all]                   overlays, where they come from, their files
    wwfast overlay show OVERLAY FILE [--render NODE] [-q]  a file as stored, or only its rendered text for NODE
    wwfast overlay build [PATTERN...] [--force]   render and pack nodes' overlays (the build stage does this too)
    wwfast overlay create|delete|edit|import|mkdir|chmod|chown|info ...   change site overlays (overlay_admin)
"""
import argparse
import os
import sys

from wwfast import layout, records, runner
from wwfast.builder import overlay_shared, overlays, sshkeys
from wwfast.define import settings
from wwfast.errors import UsageError
from wwfast.builder.overlay_build import build_overlays
from wwfast.builder.render import Renderer
from wwfast.commands import overlay_admin
from wwfast.define.select import select


def register(subparsers):
    p = subparsers.add_parser("overlay", help="list, show and build overlays")
    sub = p.add_subparsers(dest="overlay_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="the overlays (site ones shadow built-in ones)")
    ls.add_argument("-a", "--all", action="store_true", help="also list each overlay's files")
    ls.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="print an overlay file, or render it for a node")
    show.add_argument("overlay")
    show.add_argument("file", help="path inside the overlay, as Warewulf names it (etc/hosts.ww; the template "
                                   "suffix .ww or .j2 may be left out)")
    show.add_argument("-r", "--render", metavar="NODE", help="render the template for this node")
    show.add_argument("-q", "--quiet", action="store_true", help="no file names or notes on standard error")
    show.set_defaults(func=cmd_show)
    build = sub.add_parser("build", help="render and pack the system and runtime overlays of nodes",
                           epilog="examples:\n  wwfast overlay build            # every node that changed\n"
                                  "  wwfast overlay build 'n[01-04]' --force\n",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("patterns", nargs="*", metavar="PATTERN", help="nodes (hostlists, globs); default: all")
    build.add_argument("--force", action="store_true", help="rebuild even the nodes that are current")
    build.set_defaults(func=cmd_build)
    overlay_admin.register(sub)


def cmd_list(args):
    found = overlays.list_overlays(args.conf)
    width = max([len(n) for n in found] + [7])
    print(f"{'OVERLAY':<{width}}  {'SOURCE':<8}  FILES  PATH")
    for name, tree in found.items():
        entries = overlays.walk(tree, keep_owners=False)
        files = [e for e in entries if e.kind != "dir"]
        source = "built-in" if overlays.is_builtin(tree) else "site"
        print(f"{name:<{width}}  {source:<8}  {len(files):>5}  {tree}")
        if args.all:
            for e in files:
                suffix = " (template)" if e.kind == "template" else (f" -> {e.target}" if e.target else "")
                print(f"{'':<{width}}    /{e.rel}{suffix}")
    return 0


def _find_entry(tree, wanted):
    """The entry FILE names: its stored name (etc/hosts.ww) or its name on the node (etc/hosts)."""
    wanted = wanted.lstrip("/")
    entries = [e for e in overlays.walk(tree, keep_owners=False) if e.kind != "dir"]
    for e in entries:  # the exact stored name first: a template and a plain file may share a node name
        stored = e.rel + (os.path.splitext(e.source)[1] if e.kind == "template" else "")
        if stored == wanted:
            return e
    plain = wanted
    for suffix in overlays.TEMPLATE_SUFFIXES:
        if wanted.endswith(suffix):
            plain = wanted[: -len(suffix)]
    for e in entries:
        if e.rel == plain:
            return e
    return None


def cmd_show(args):
    tree = overlays.overlay_tree(args.conf, args.overlay)
    entry = _find_entry(tree, args.file)
    if entry is None:
        raise UsageError(f"overlay {args.overlay!r} has no file {args.file!r} (see `wwfast overlay list --all`)")
    if entry.kind == "symlink":
        print(f"/{entry.rel} -> {entry.target}")
        return 0
    if not args.render or entry.kind != "template":
        with open(entry.source, "rb") as f:
            sys.stdout.buffer.write(f.read())
        return 0
    all_nodes = records.read_nodes(layout.nodes_json(args.state))
    if args.render not in all_nodes:
        raise UsageError(f"no node {args.render!r} in {layout.nodes_json(args.state)} (run the define stage?)")
    if args.overlay.startswith("ssh."):
        sshkeys.ensure_keys(args.state)  # what the build would do first; made once, kept in STATE/ssh
    renderer = Renderer(settings.load(args.conf), all_nodes, args.conf, args.state)
    outs, _ = renderer.render(entry.source, entry.rel, renderer.nodes[args.render], args.overlay,
                              entry.mode, entry.uid, entry.gid)
    note = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    if not outs:
        note(f"/{entry.rel}: the template called abort() for {args.render}: no file")
    for out in outs:
        # standard output gets the rendered text only (as wwctl overlay show); names go to standard error
        if len(outs) > 1 or out.target is not None:
            kind = "directory" if out.data is None and out.target is None else f"mode {out.mode:04o}"
            note(f"/{out.rel} ({kind}, owner {out.uid}:{out.gid})" +
                 (f" -> symlink to {out.target}" if out.target is not None else ""))
        if out.target is None and out.data is not None:
            sys.stdout.buffer.write(out.data)
            sys.stdout.flush()
    for warning in sorted(renderer.warnings):
        note(f"warning: {warning}")
    return 0


def cmd_build(args):
    all_nodes = records.read_nodes(layout.nodes_json(args.state))
    only = set(select(args.patterns, sorted(all_nodes))) if args.patterns else None
    # The build stage's lock and its overlay records (the stamp's memory): never beside a running build.
    def work(ctx):
        built = build_overlays(ctx.conf_dir, ctx.state_dir, ctx.settings, all_nodes, force=args.force, log=print,
                               only=only, memory=ctx.memory.setdefault("overlays", {}))
        overlay_shared.rename_in_build_json(ctx.state_dir, built.shared)   # secure mode's shared parts
        return built
    result = runner.partial(runner.Stage("build", run=None), args.conf, args.state, settings.load(args.conf), work)
    for node_id in result.rebuilt[:20]:
        print(f"  {node_id}: {result.reasons[node_id]}")
    if len(result.rebuilt) > 20:
        print(f"  ... and {len(result.rebuilt) - 20} more")
    print(result.summary())
    return 0
