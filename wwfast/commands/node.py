"""`wwfast node add|set|unset|delete|list|edit|export|import|sensors|console`, in the spirit of `wwctl node`."""
import argparse

from wwfast.define import entryedit, hostlist, nodeedit, nodefile, nodes, provenance
from wwfast.errors import UsageError
from wwfast.commands import entries, fields, power
from wwfast.commands.fields import known_names
from wwfast.commands.listing import mask_secrets, print_json, print_table, print_yaml, source_rows


def register(subparsers):
    node = subparsers.add_parser("node", help="add, change, remove and list nodes")
    sub = node.add_subparsers(dest="node_command", metavar="ACTION", required=True)

    p = sub.add_parser("add", help="add nodes (hostlists like n[01-10] allowed)")
    p.add_argument("names", nargs="+", metavar="NODENAME")
    fields.add_value_flags(p, node=True)
    p.set_defaults(func=cmd_add)

    p = sub.add_parser("set", aliases=["modify"], help="change fields of existing nodes",
                       epilog="The change is shown and, on a terminal, asked for (--yes: not asked).\n\nexample:\n"
                              "  wwfast node set 'n[05-08]' --image rocky9 --tagadd rack=r2   # shows the change, asks\n",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="PATTERN")
    p.add_argument("-a", "--all", dest="all_nodes", action="store_true", help="every node")
    p.add_argument("-y", "--yes", action="store_true", help="write without showing the change and asking")
    fields.add_value_flags(p, node=True)
    p.set_defaults(func=cmd_set)

    p = sub.add_parser("unset", help="clear fields of existing nodes")
    p.add_argument("names", nargs="+", metavar="PATTERN")
    fields.add_unset_flags(p, node=True)
    p.set_defaults(func=cmd_unset)

    p = sub.add_parser("delete", aliases=["rm"], help="remove nodes")
    p.add_argument("names", nargs="+", metavar="PATTERN")
    p.add_argument("-y", "--yes", action="store_true", help="accepted for wwctl compatibility (no prompt)")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("list", aliases=["ls"], help="show nodes (merged with their profiles)")
    p.add_argument("names", nargs="*", metavar="PATTERN")
    group = p.add_mutually_exclusive_group()
    group.add_argument("-n", "--net", action="store_true", help="network devices")
    group.add_argument("-i", "--ipmi", action="store_true", help="IPMI settings")
    group.add_argument("-l", "--long", action="store_true", help="image, kernel and overlays")
    group.add_argument("-a", "--all", dest="show_all", action="store_true",
                       help="every field with the profile it came from")
    group.add_argument("-y", "--yaml", action="store_true", help="YAML of the merged nodes")
    group.add_argument("-j", "--json", action="store_true", help="JSON of the merged nodes")
    p.add_argument("--show-passwords", action="store_true", help="show BMC passwords (masked otherwise)")
    p.set_defaults(func=cmd_list)

    power.register_node_actions(sub)
    entries.register_node(sub)


def _targets(doc, patterns, all_nodes=False):
    existing = doc.names("nodes")
    if all_nodes:
        return sorted(existing)
    if not patterns:
        raise UsageError("name the nodes (a hostlist such as n[1-4]) or use --all")
    names = hostlist.expand_all(patterns)
    missing = [n for n in names if n not in existing]
    if missing:
        raise UsageError(f"no such node: {hostlist.compress(missing)}")
    return names


def _done(verb, names):
    print(f"{verb} {len(names)} node{'s' if len(names) != 1 else ''}: {hostlist.compress(names)}")
    return 0


def cmd_add(args):
    names = hostlist.expand_all(args.names)

    def change(doc):
        default = "default" in doc.names("nodeprofiles")
        for index, name in enumerate(names):
            entry = doc.add("nodes", name)
            if args.profile is None and default:  # as wwctl: the default profile when it exists
                nodeedit.set_path(entry, ("profiles",), ["default"])
            fields.apply_values(entry, args, node=True, index=index)

    nodeedit.edit(args.conf, change, **known_names(args))
    return _done("added", names)


def cmd_set(args):
    def change(doc):
        names = _targets(doc, args.names, args.all_nodes)
        changed = []
        for index, name in enumerate(names):
            changed = fields.apply_values(doc.entry("nodes", name), args, node=True, index=index)
        if not changed:
            raise UsageError("nothing to set: give at least one field flag (see --help)")
        return names

    names = nodeedit.edit(args.conf, change, **known_names(args),
                          review=entryedit.reviewer(entries.confirmer(args.yes)))
    return _done("updated", names)


def cmd_unset(args):
    def change(doc):
        names = _targets(doc, args.names)
        changed = []
        for name in names:
            changed = fields.apply_unset(doc.entry("nodes", name), args, node=True)
        if not changed:
            raise UsageError("nothing to unset: give at least one field switch (see --help)")
        return names

    names = nodeedit.edit(args.conf, change, **known_names(args))
    return _done("updated", names)


def cmd_delete(args):
    def change(doc):
        names = _targets(doc, args.names)
        for name in names:
            doc.delete("nodes", name)
        return names

    names = nodeedit.edit(args.conf, change, **known_names(args))
    return _done("deleted", names)


def cmd_list(args):
    config = nodefile.read_config(args.conf)
    resolved = nodes.resolve(config)
    if args.names:
        wanted = set(hostlist.expand_all(args.names))
        resolved = {k: v for k, v in resolved.items() if k in wanted}
    if not args.show_passwords:
        resolved = mask_secrets(resolved)
    if args.json:
        print_json(resolved)
    elif args.yaml:
        print_yaml(resolved)
    elif args.show_all:
        for i, (name, node) in enumerate(resolved.items()):
            if i:
                print()
            print(f"NODE: {name}")
            print_table(["FIELD", "PROFILE", "VALUE"], source_rows(node, provenance.field_sources(config, name)))
    elif args.net:
        rows = [[name, net, dev["hwaddr"], dev["ipaddr"], dev["gateway"], dev["device"]]
                for name, node in resolved.items() for net, dev in sorted(node["network devices"].items())]
        print_table(["NODE NAME", "NAME", "HWADDR", "IPADDR", "GATEWAY", "DEVICE"], rows)
    elif args.ipmi:
        rows = [[name, n["ipmi"]["ipaddr"], n["ipmi"]["port"], n["ipmi"]["username"], n["ipmi"]["password"],
                 n["ipmi"]["interface"]] for name, n in resolved.items()]
        print_table(["NODE NAME", "IPMI IPADDR", "IPMI PORT", "IPMI USERNAME", "IPMI PASSWORD", "IPMI INTERFACE"],
                    rows)
    elif args.long:
        rows = [[name, n["kernel"]["version"], n["image name"], ",".join(n["system overlay"]),
                 ",".join(n["runtime overlay"])] for name, n in resolved.items()]
        print_table(["NODE NAME", "KERNEL VERSION", "IMAGE", "SYSTEM OVERLAYS", "RUNTIME OVERLAYS"], rows)
    else:
        rows = []
        for name, n in resolved.items():
            primary = n["network devices"].get(n["primary network"], {})
            rows.append([name, ",".join(n["profiles"]), n["image name"], primary.get("hwaddr", ""),
                         primary.get("ipaddr", "")])
        print_table(["NODE NAME", "PROFILES", "IMAGE", "HWADDR", "IPADDR"], rows)
    return 0
